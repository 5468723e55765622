// The anywidget front-end module (AFM) of the livewidget widgets, dispatching on the `_kind` trait.
//
// `initialize` (once per model) owns the connection: it opens the model's pusher-js connection and
// the kind's model-level state; its cleanup disconnects. `render` (once per view) only paints that
// state; its cleanup removes the view's listeners (style.md principle 9, anywidget afm.md).
//
// `createWidget(deps, kinds)` takes the front ends it serves (`kinds`: `{[_kind]: {initialize, render}}`)
// and what touches the outside world (`deps.Pusher`, and optionally `fetch`, `now`, timers,
// `requestAnimationFrame`) so the tests can run it under Node with fakes. Each widget class has its own
// module (src/entries/<kind>.js → livewidget/static/<kind>.js: anywidget loads one `_esm` per class),
// which passes the real pusher-js and only its own kind, so a Feed does not load uPlot or Markdown.
// kinds.js has them all (`KINDS`), for the tests.

import { Connection } from "./connection.js";
import { h } from "./util.js";

const ROUTE_TITLES = {
  direct: "connected straight to the Pusher server",
  jupyter: "connected through the Jupyter server that served this page (same origin)",
  relay: "connected through the kernel",
};

/**
 * A small label in the view's header saying which route the connection took (`conn.route`), or which
 * it is trying. Added here rather than in each kind's view, so every kind shows it the same way.
 */
function paintRoute(el, conn) {
  const header = el.querySelector?.(".lw-header, .lw-chat-header");
  if (!header || !conn) return () => {};
  const doc = el.ownerDocument || globalThis.document;
  const label = h(doc, "span", "lw-route");
  const note = h(doc, "span", "lw-route-note"); // e.g. relay: actions waiting for the kernel
  note.setAttribute("role", "status");
  note.hidden = true;
  header.append(label, note);
  let shown = null;
  const paint = () => {
    if (note.textContent !== (conn.note || "")) note.textContent = conn.note || "";
    note.hidden = !conn.note;
    const text = conn.route || (conn.trying ? `${conn.trying}?` : "");
    const key = `${text}|${conn.via}`;
    if (key === shown) return;
    shown = key;
    label.textContent = text;
    label.hidden = !text;
    label.setAttribute("data-route", conn.route || "");
    label.title = conn.route
      ? `route: ${conn.route} (${conn.via}): ${ROUTE_TITLES[conn.route] || ""}`
      : `trying route ${conn.trying}`;
  };
  paint();
  const off = conn.on("change", paint);
  return () => {
    off();
    label.remove();
    note.remove();
  };
}

function paintProblem(el, text) {
  const doc = el.ownerDocument || globalThis.document;
  const box = h(doc, "div", "lw-feed lw-problem");
  const err = h(doc, "div", "lw-error", `livewidget: ${text}`);
  err.setAttribute("role", "alert");
  box.append(err);
  el.append(box);
  return () => box.remove();
}

/** `{initialize, render}` for anywidget serving `kinds`, with its outside world in `deps` (at least `Pusher`). */
export function createWidget(deps, kinds = deps.kinds) {
  const KINDS = kinds || {};
  // anywidget gives initialize() and each render() a different proxy of the same model (model-proxy.ts
  // builds a fresh {get, set, on, ...} per call), so the proxy alone cannot find the model's session.
  // A trait's value can: Backbone keeps the same `_connection` object until the kernel changes that
  // trait, which it never does. The model itself is a key too, for hosts that pass it as it is.
  const sessions = new WeakMap();
  const keysOf = (model) => {
    const keys = [model];
    const conn = model.get("_connection");
    if (conn && typeof conn === "object") keys.push(conn);
    return keys;
  };
  const find = (model) => {
    for (const key of keysOf(model)) {
      const session = sessions.get(key);
      if (session) return session;
    }
    return null;
  };

  function open(model, kind) {
    const conn = new Connection(model, deps);
    let session;
    try {
      session = kind.initialize(model, conn, deps);
    } catch (err) {
      conn.close();
      throw err;
    }
    conn.start();
    const close = () => {
      session.close();
      conn.close();
    };
    return { ...session, close };
  }

  return {
    initialize({ model }) {
      const kind = KINDS[model.get("_kind")];
      if (!kind) return undefined; // render says so
      let session;
      try {
        session = open(model, kind);
      } catch (err) {
        console.error("livewidget: initialize failed", err);
        return undefined;
      }
      const keys = keysOf(model);
      for (const key of keys) sessions.set(key, session);
      return () => {
        for (const key of keys) if (sessions.get(key) === session) sessions.delete(key);
        session.close();
      };
    },

    render({ model, el }) {
      const name = model.get("_kind");
      const kind = KINDS[name];
      if (!kind) {
        return paintProblem(
          el,
          `no front end for widget kind ${JSON.stringify(name)} in this module (it has ` +
            `${Object.keys(KINDS).join(", ") || "none"}; livewidget/static/ may be older than the Python ` +
            "package: rebuild it with `npm run build` in js/)",
        );
      }
      let session = find(model);
      let owned = null;
      try {
        if (!session) {
          // A host that did not call initialize (or lost its session): this view owns one.
          session = owned = open(model, kind);
        }
        const cleanup = kind.render(model, el, session, deps);
        const unroute = paintRoute(el, session.conn);
        return () => {
          unroute();
          cleanup();
          owned?.close();
        };
      } catch (err) {
        owned?.close();
        console.error("livewidget: render failed", err);
        return paintProblem(el, `this view failed: ${err?.message || err}`);
      }
    },
  };
}
