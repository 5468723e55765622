// The browser's own Pusher connection for one widget model, shared by every view of it.
//
// Created in `initialize` (once per model), closed by its cleanup. It builds the pusher-js client from
// the `_connection` trait (never a secret: private and presence channels are signed by the kernel,
// see `authorize`), subscribes to the `channels` trait and follows its changes, and reports the
// connection state, each channel's subscription state and every event. The pusher-js constructor is
// injected (`deps.Pusher`) so tests can substitute a fake one.
//
// Routes (issue 12; livewidget/_routes.py has the kernel's side). The browser picks how to reach the
// server, per model, best first (`planRoutes`):
//   direct   the server's own URL: hosted Pusher and non-loopback servers; a server on the kernel's
//            loopback only when this page is itself served from loopback (otherwise it is another
//            machine's loopback, and Chromium's Local Network Access would ask the user first);
//   jupyter  same-origin through the Jupyter server that served the page: `{baseUrl}livewidget/{id}`
//            (the livewidget server extension; its `info` must name the kernel's `serverId` first),
//            then jupyter-server-proxy's `{baseUrl}proxy/{port}`. `baseUrl` comes from the page's
//            `#jupyter-config-data` (JupyterLab, Notebook 7 and Voila), never from `location`'s path;
//   relay    through the kernel (livewidget/_relay.py): the kernel's receivers hear every event and
//            the kernel sends them on, one coalesced stream per kernel (at most 10 messages/s, the rows
//            in a binary buffer) on one widget's comm; `relayHub` hands each part to the connection of
//            the model it names (`relayId`), whichever bundle that model's front end came from.
//            Kernel-to-browser messages flow while a cell runs; browser-to-server actions (client
//            events, `trigger`) go to the kernel over the comm and wait for it to be idle (`note`).
//            Last in the plan whenever the kernel offers it (`relayId`), so any page falls back to it.
// A route counts only once the server confirms it: `pusher:connection_established` on `/app/{key}`
// (a server without this app key refuses with 4001). A candidate that does not connect within
// ROUTE_TRIAL_MS gives way to the next; the last one keeps retrying (pusher-js's own backoff).
// A confirmed direct or jupyter route that fails later (pusher-js `unavailable`) falls back to the
// relay while pusher-js keeps retrying it in the background; once pusher-js is connected and every
// channel subscribed again, the relay is dropped. No event is shown twice across either switch: each
// side remembers the last position (`serial` per `stream_id`, README "Channel history") it showed per
// channel, and the other side skips what is not newer. A forced route never falls back.
// A confirmed route counts as failed when pusher-js says `unavailable` (after its 10 s), or once it has
// been away from `connected` for FALLBACK_AFTER_MS: the relay stands in meanwhile.
// Standby (falling back while a cell runs): the browser's `{type: "relay", on: true}` waits in the
// kernel's shell queue until the cell ends, so the kernel also relays, while a cell runs, the widgets
// whose browser took another route, marked `standby` (livewidget/_relay.py). While its own route is
// healthy a connection keeps only the newest of those rows (`_onStandby`: STANDBY_KEEP rows,
// STANDBY_BYTES of text, STANDBY_MS old at most; rows pusher-js showed already are not kept) and shows
// none; when it falls back it shows those pusher-js did not show (by position; rows without one only
// if relayed after pusher-js lost its connection), then the live relay rows.
// The route taken is `conn.route`, reported to the kernel as the `route` trait.
//
// Channel history (issue 13; README "Channel history"). pusher-js stays unmodified: its
// `send_event("pusher:subscribe", ...)` is wrapped to add the optional `rewind` field (the `_rewind`
// trait on the first subscription, then `{serial, stream_id}` of the last event heard, with the first
// rewind as the fallback), and the position of each event (top-level `serial`/`stream_id`, which
// pusher-js drops when decoding) is read from the raw frame its transport emits right after the
// channel's listeners ran: an event's row is held until then. Rows replayed by the first rewind
// (before `pusher:rewind_complete`) are marked `history: true, rewound: true`; a row at or before the
// last position is a duplicate and is dropped. A server without history (hosted Pusher, Soketi) sends
// no positions and no `pusher:rewind_complete`: the channel's `history` is then "unavailable" and
// everything works as without it.

import { Emitter } from "./util.js";

/** The states shown for the browser connection (pusher-js's `initialized` is shown as connecting). */
export const CONNECTION_STATES = ["connecting", "connected", "unavailable", "failed", "disconnected"];

const AUTH_TIMEOUT_MS = 30_000; // waiting for the kernel's comm answer (it comes when the cell ends)
const FETCH_TIMEOUT_MS = 10_000; // waiting for the kernel's HTTP endpoint before trying the comm
const ROUTE_TRIAL_MS = 8_000; // a candidate route that is not confirmed by then gives way to the next
const REWIND_WAIT_MS = 3_000; // no pusher:rewind_complete by then after subscribing: no history there
const FALLBACK_AFTER_MS = 3_000; // a confirmed route away from "connected" that long: the relay stands in
const STANDBY_KEEP = 1_000; // standby rows kept per model while its own route is healthy (the newest)
const STANDBY_MS = 30_000; // ... received at most this long ago (longer than pusher-js's 10 s unavailable)
const STANDBY_BYTES = 1_000_000; // ... and at most this much payload text
const POSITION_TAIL = /,"serial":(\d{1,15}),"stream_id":"([^"\\]{1,64})"\}$/;
const HUB_KEY = Symbol.for("livewidget.relay.hub"); // page-wide: each widget class has its own bundle

// pusher-js options that may come through `_connection` (see LiveWidget._connection).
const PASSED_OPTIONS = [
  "wsHost",
  "wsPort",
  "wssPort",
  "wsPath",
  "httpHost",
  "httpPort",
  "httpsPort",
  "httpPath",
  "enabledTransports",
  "disabledTransports",
  "activityTimeout",
  "pongTimeout",
  "unavailableTimeout",
];

/** The `rewind` of the `_rewind` trait (`{count}` or `{seconds}`, from `history=`), or null. */
export function initialRewind(value) {
  const out = {};
  if (Number.isInteger(value?.count) && value.count >= 0) out.count = value.count;
  if (Number.isFinite(value?.seconds) && value.seconds >= 0) out.seconds = value.seconds;
  return Object.keys(out).length ? out : null;
}

/** The endpoint could not be reached at all (as opposed to answering with an error). */
class Unreachable extends Error {}

function isInternal(name) {
  return name.startsWith("pusher:") || name.startsWith("pusher_internal:");
}

function messageOf(err) {
  if (!err) return "";
  if (typeof err === "string") return err;
  return err.message || String(err);
}

const LOOPBACK_V4 = /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/;

/** Whether `host` names the loopback of the machine it is resolved on. */
export function isLoopback(host) {
  if (!host) return false;
  const name = String(host).toLowerCase().replace(/^\[|\]$/g, "");
  return name === "localhost" || name.endsWith(".localhost") || name === "::1" || LOOPBACK_V4.test(name);
}

/** The Jupyter server's base URL from the page's `#jupyter-config-data` ("/user/alice/"), or null. */
export function jupyterBaseUrl(doc) {
  const el = doc?.getElementById?.("jupyter-config-data");
  if (!el) return null;
  try {
    const base = JSON.parse(el.textContent || "{}").baseUrl;
    if (typeof base !== "string" || !base.startsWith("/")) return null;
    return base.endsWith("/") ? base : `${base}/`;
  } catch {
    return null;
  }
}

/** What the route choice needs to know about this page (`null` outside a browser: treated as local). */
export function pageInfo(loc, doc) {
  if (!loc || !loc.hostname) return null;
  const https = loc.protocol === "https:";
  return {
    hostname: loc.hostname,
    port: Number(loc.port) || (https ? 443 : 80),
    https,
    baseUrl: jupyterBaseUrl(doc),
  };
}

/**
 * The routes to try for `_connection` `conn` from `page`, best first: `{route, via, options,
 * infoUrl?}` where `options` override the pusher-js options. Empty when none can work (e.g. relay
 * forced); see the header of this file.
 */
export function planRoutes(conn, page) {
  const forced = conn.route && conn.route !== "auto" ? conn.route : null;
  const loopback = Boolean(conn.wsHost) && isLoopback(conn.wsHost);
  const localPage = !page || isLoopback(page.hostname);
  const out = [];
  if (!loopback || localPage || forced === "direct") out.push({ route: "direct", via: "direct", options: {} });
  if (loopback && page?.baseUrl) {
    const base = page.baseUrl;
    const same = {
      wsHost: page.hostname,
      wsPort: page.port,
      wssPort: page.port,
      forceTLS: page.https,
      enabledTransports: ["ws", "wss"],
    };
    if (conn.serverId) {
      out.push({
        route: "jupyter",
        via: "livewidget extension",
        options: { ...same, wsPath: `${base}livewidget/${conn.serverId}` },
        infoUrl: `${base}livewidget/${conn.serverId}/info`,
      });
    }
    const port = conn.forceTLS ? conn.wssPort : conn.wsPort;
    if (port) {
      const options = { ...same, wsPath: `${base}proxy/${port}` };
      out.push({ route: "jupyter", via: "jupyter-server-proxy", options });
    }
  }
  if (conn.relayId) out.push({ route: "relay", via: "kernel", options: {} });
  return forced ? out.filter((c) => c.route === forced) : out;
}

/** The page-wide relay hub: `listeners` relayId -> Set of callbacks (the connections showing that model). */
export function relayHub(scope = globalThis) {
  if (!scope[HUB_KEY]) scope[HUB_KEY] = { listeners: new Map() };
  return scope[HUB_KEY];
}

/** Hand `listener` the relay parts for model `id` (the page-wide hub of `scope`). */
function listenRelay(scope, id, listener) {
  const listeners = relayHub(scope).listeners;
  if (!listeners.has(id)) listeners.set(id, new Set());
  listeners.get(id).add(listener);
}

/** Undo listenRelay. */
function unlistenRelay(scope, id, listener) {
  const listeners = relayHub(scope).listeners;
  const set = listeners.get(id);
  set?.delete(listener);
  if (set && !set.size) listeners.delete(id);
}

/** A relay message's parts (`[{id, rows, state?, lost?, acks?}]`, livewidget/_relay.py), or []. */
function relayParts(buffers) {
  try {
    const parts = JSON.parse(new TextDecoder().decode(buffers[0]));
    return Array.isArray(parts) ? parts : [];
  } catch {
    return [];
  }
}

const RELAY_STATES = { closed: "disconnected", disabled: "failed", idle: "connecting" };

/** What a relayed channel offers the stores in place of a pusher-js channel: members and trigger. */
function relayChannel(conn, name) {
  const channel = { list: [], trigger: (event, data) => conn._relayTrigger(name, event, data) };
  if (name.startsWith("presence-")) {
    channel.members = {
      get count() {
        return channel.list.length;
      },
      each: (fn) => channel.list.forEach((m) => fn({ id: m.id, info: m.info })),
    };
  }
  return channel;
}

/** Why no route can be tried, for the error line. */
function noRouteReason(conn, page) {
  if (conn.route === "relay") return "route relay forced, but this kernel's livewidget does not offer it";
  if (conn.route === "jupyter" && !page?.baseUrl) return "route jupyter forced, but this page has no Jupyter config";
  return "no route to the server from this page";
}

/** pusher-js options from the `_connection` trait. */
export function pusherOptions(conn, customHandler) {
  const options = {
    cluster: conn.cluster || "mt1",
    forceTLS: Boolean(conn.forceTLS),
    disableStats: true,
    channelAuthorization: { customHandler },
  };
  for (const name of PASSED_OPTIONS) {
    if (conn[name] !== undefined && conn[name] !== null) options[name] = conn[name];
  }
  if (!options.enabledTransports) {
    // pusher-js falls back to SockJS only where XHR is missing, and SockJS is the one transport that
    // loads a script from js.pusher.com (Dependencies.load): never let it, whatever the browser.
    options.disabledTransports = [...new Set([...(options.disabledTransports || []), "sockjs"])];
  }
  return options;
}

/**
 * One pusher-js connection bound to a widget model. Emits `"event"` with each non-internal event
 * `{t, channel, event, data, user_id}` and `"change"` when the connection state, an error or a
 * channel's state changes.
 */
export class Connection extends Emitter {
  /**
   * @param {object} model  the anywidget model (get/on/off/send)
   * @param {object} deps   `{Pusher, now?, setTimeout?, clearTimeout?, fetch?, authTimeoutMs?,
   *                        fetchTimeoutMs?}`; `fetch` defaults to the global one at call time
   */
  constructor(model, deps) {
    super();
    this.model = model;
    this.deps = deps;
    this.now = deps.now || (() => Date.now());
    this.state = "connecting";
    this.error = ""; // a connection-level problem to show (empty when none)
    this.socketId = null;
    /** name -> {state: subscribing|authorizing|subscribed|error, error, members, handler, history:
     * undefined (not known yet) | "available" | "unavailable", position: {serial, stream_id}?} */
    this.channels = new Map();
    this.pusher = null;
    this._pending = new Map(); // comm authorization requests: id -> {resolve, reject, timer, channel}
    this._late = new Map(); // timed-out comm requests: id -> channel, resubscribed if answered later
    this._seq = 0;
    this._lastRow = null; // the row just emitted, for the user_id that bind_global does not pass
    this._held = null; // a row waiting for its raw frame (its position), see _onRaw
    this._rawTransport = null; // the pusher-js transport whose raw frames we read
    this._closed = false;
    this._bound = null; // our callbacks on pusher.connection, unbound on close
    this._onChannels = () => this.syncChannels();
    this._onCustom = (msg, buffers) => this._handleCustom(msg, buffers);
    this.route = ""; // the confirmed route ("direct", "jupyter"), empty until the server confirms one
    this.via = ""; // how ("direct", "livewidget extension", "jupyter-server-proxy")
    this.trying = ""; // the candidate being tried
    this._plan = [];
    this._candidate = -1;
    this._trialTimer = null;
    this._options = {}; // the pusher-js options in use (for messages)
    this._page = null;
    this.relay = null; // relay route: {id, candidate, pending: Map(action id -> label), seq}
    this.note = ""; // something to show that is not an error (relay: actions waiting for the kernel)
    this._fallback = null; // {from, channels}: the relay stands in for a confirmed route that failed
    this._pusherMax = new Map(); // channel -> {stream, serial}: the last position shown from pusher-js
    this._relayMax = new Map(); // the same from the relay
    // standby relay rows while pusher-js's route is healthy: {listener, id, rows: [{at, row}], bytes,
    // state: {at, value}?}; null when this model cannot fall back to the relay
    this._standby = null;
    this._downTimer = null; // FALLBACK_AFTER_MS after pusher-js left "connected" on a confirmed route
    this._pusherDownAt = null; // when pusher-js left "connected" (rows without positions after it are new)
  }

  /** Choose a route, create the pusher-js client and subscribe. Never throws: failures are the state. */
  start() {
    this.model.on("change:channels", this._onChannels);
    this.model.on("msg:custom", this._onCustom);
    const conn = this.model.get("_connection") || {};
    if (!conn.key) return this._fail("cannot start pusher-js: no app key in the widget's _connection");
    this._page = pageInfo(this.deps.location ?? globalThis.location, this.deps.document ?? globalThis.document);
    this._plan = planRoutes(conn, this._page);
    if (!this._plan.length) return this._fail(noRouteReason(conn, this._page));
    if (this._plan.some((c) => c.route === "relay") && this._plan.some((c) => c.route !== "relay")) {
      this._listenStandby(conn.relayId);
    }
    this._next();
    return this;
  }

  _fail(message) {
    this.state = "failed";
    this.error = message;
    this.emit("change");
    return this;
  }

  /** Try the next candidate route (probing it first when it has an `info` URL). */
  _next() {
    if (this._closed) return;
    this._candidate += 1;
    const candidate = this._plan[this._candidate];
    if (!candidate) return;
    this.trying = candidate.route;
    if (!candidate.infoUrl) {
      this._open(candidate);
      return;
    }
    this.emit("change");
    this._probe(candidate).then(
      (ok) => {
        if (this._closed) return;
        if (ok) this._open(candidate);
        else if (!this._isLast()) this._next();
        else {
          this._fail(
            "the Jupyter server does not know this kernel's Pusher server (is livewidget installed where " +
              "Jupyter runs, and Jupyter restarted since?)",
          );
        }
      },
      () => {
        if (!this._closed) this._next();
      },
    );
  }

  /** `GET {base}livewidget/{id}/info` answers this kernel's server id and app key (same-origin, cookie). */
  async _probe(candidate) {
    const fetchImpl = this.deps.fetch || globalThis.fetch;
    if (typeof fetchImpl !== "function") return false;
    const conn = this.model.get("_connection") || {};
    try {
      const response = await fetchImpl(candidate.infoUrl, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) return false;
      const info = await response.json();
      return info?.server_id === conn.serverId && info?.key === conn.key;
    } catch {
      return false;
    }
  }

  _isLast() {
    return this._candidate >= this._plan.length - 1;
  }

  /** Open pusher-js along `candidate`; confirmed on "connected", else the next candidate is tried. */
  _open(candidate) {
    if (candidate.route === "relay") {
      this._openRelay(candidate);
      return;
    }
    const conn = this.model.get("_connection") || {};
    this._options = { ...conn, ...candidate.options };
    try {
      const Pusher = this.deps.Pusher;
      this.pusher = new Pusher(conn.key, pusherOptions(this._options, (params, cb) => this.authorize(params, cb)));
    } catch (err) {
      this._fail(`cannot start pusher-js: ${messageOf(err)}`);
      return;
    }
    this._hookRewind(this.pusher);
    const connection = this.pusher.connection;
    this._bound = {
      state_change: ({ previous, current }) => {
        if (current !== "connected") this._flushHeld();
        if (current === "connected") {
          this._clearDown();
          this._pusherDownAt = null;
        } else if (previous === "connected") {
          this._pusherDownAt = this.now();
          if (this.route && !this._fallback && this._mayFallBack()) this._armFallback(candidate);
        }
        if (this._fallback) {
          // on the relay meanwhile: pusher-js keeps retrying its route; back once it is subscribed again
          if (current === "connected") {
            this._attachRaw();
            this._maybeEndFallback();
          }
          return;
        }
        if (current === "connected") {
          this._attachRaw();
          this._confirm(candidate);
        } else if ((current === "unavailable" || current === "failed") && !this.route && !this._isLast()) {
          this._giveUp();
          return;
        } else if ((current === "unavailable" || current === "failed") && this._mayFallBack()) {
          this._startFallback(candidate);
          return;
        }
        this._setState(current);
      },
      error: (err) => this._connectionError(err),
      // bind_global callbacks get (event, data) only (pusher-js Dispatcher.emit): the sender of a
      // client event, `user_id`, is on the raw message, which the connection emits right after.
      message: (msg) => {
        const row = this._lastRow;
        this._lastRow = null;
        if (row && msg && msg.user_id != null && msg.channel === row.channel && msg.event === row.event) {
          row.user_id = String(msg.user_id);
        }
      },
    };
    for (const [name, fn] of Object.entries(this._bound)) connection.bind(name, fn);
    if (!this._isLast()) {
      const setT = this.deps.setTimeout || setTimeout;
      this._trialTimer = setT(() => {
        this._trialTimer = null;
        if (!this.route) this._giveUp();
      }, this.deps.routeTrialMs ?? ROUTE_TRIAL_MS);
    }
    if (connection.state === "connected") {
      this._attachRaw();
      this._confirm(candidate);
    }
    this._setState(connection.state);
    this.syncChannels();
  }

  /** The server confirmed the candidate: it is the route now (reported to the kernel). */
  _confirm(candidate) {
    this._clearTrial();
    if (this.route === candidate.route && this.via === candidate.via) return;
    this.route = candidate.route;
    this.via = candidate.via;
    this.trying = "";
    try {
      // only where the kernel has the trait (an older kernel would get an unknown attribute)
      const known = this.model.get("route");
      if (known !== undefined && known !== candidate.route) {
        this.model.set("route", candidate.route);
        this.model.save_changes?.();
      }
    } catch (err) {
      console.warn("livewidget: could not report the route to the kernel", err);
    }
  }

  _clearTrial() {
    if (this._trialTimer !== null) (this.deps.clearTimeout || clearTimeout)(this._trialTimer);
    this._trialTimer = null;
  }

  /** Drop the unconfirmed candidate's client and try the next route. */
  _giveUp() {
    this._clearTrial();
    this._dropPusher();
    this.channels.clear();
    this._next();
  }

  _dropRelay() {
    const relay = this.relay;
    this.relay = null;
    if (!relay) return;
    unlistenRelay(this.deps.scope, relay.id, relay.listener);
  }

  _dropPusher() {
    const pusher = this.pusher;
    this.pusher = null;
    if (!pusher) return;
    for (const [name, info] of this.channels) {
      info.channel?.unbind_global(info.handler);
      pusher.unsubscribe(name);
    }
    for (const [name, fn] of Object.entries(this._bound || {})) pusher.connection.unbind(name, fn);
    this._bound = null;
    pusher.disconnect();
  }

  _setState(current) {
    const state = current === "initialized" ? "connecting" : current;
    if (state === this.state && state !== "connected") return;
    this.state = state;
    if (state === "connected") {
      this.socketId = this.pusher?.connection?.socket_id ?? null;
      this.error = "";
    } else {
      // pusher-js unsubscribes everything when the connection drops and subscribes again on reconnect
      for (const info of this.channels.values()) {
        if (info.state === "subscribed") info.state = "subscribing";
      }
      if (state === "unavailable" && !this.error && this.relay) {
        this.error = "the kernel cannot reach the server; retrying";
      } else if (state === "unavailable" && !this.error) {
        const o = this._options;
        const where = o.wsHost ? `${o.wsHost}:${o.forceTLS ? o.wssPort : o.wsPort}${o.wsPath || ""}` : "Pusher";
        this.error = `cannot reach ${where}; retrying`;
      } else if (state === "failed" && !this.error) {
        this.error = "this browser supports none of the enabled transports";
      }
    }
    this.emit("change");
  }

  _connectionError(err) {
    // {type: "PusherError", data: {code, message}} is the server refusing (e.g. 4001 unknown app key);
    // {type: "WebSocketError", ...} is a transport failure, retried by pusher-js: shown as "unavailable".
    const data = err?.data || err?.error?.data;
    if (data && !this.route && !this._isLast() && data.code >= 4000 && data.code < 4100) {
      // refused for good (e.g. 4001: no such app key here): not the expected server, try the next route
      this._giveUp();
      return;
    }
    if (data && data.message) {
      this.error = data.code ? `${data.message} (${data.code})` : String(data.message);
      this.emit("change");
    }
  }

  // ------------------------------------------------------------------ the relay route

  /** Listen to the kernel's relay stream for this model; confirmed by the first part naming it. */
  _openRelay(candidate) {
    const conn = this.model.get("_connection") || {};
    const listener = (part) => this._onRelayPart(part);
    this.relay = { id: conn.relayId, candidate, pending: new Map(), listener };
    listenRelay(this.deps.scope, conn.relayId, listener);
    // The kernel relays unasked unless it heard of another route; ask anyway (arrives when idle).
    this.model.send({ type: "relay", on: true });
    const status = this.model.get("status");
    this._setState(status === "connected" ? "connecting" : RELAY_STATES[status] || status || "connecting");
    this.syncChannels();
  }

  /** Any model's comm may carry the kernel's one stream: hand each part to its model's connection. */
  _deliverRelay(msg, buffers) {
    const listeners = relayHub(this.deps.scope).listeners;
    for (const part of relayParts(buffers)) {
      for (const listener of (part && listeners.get(part.id)) || []) {
        listener(part);
      }
    }
  }

  _onRelayPart(part) {
    const relay = this.relay;
    if (!relay || this._closed) return;
    if (this.route !== "relay") this._confirm(relay.candidate);
    const state = part.state;
    if (state && typeof state === "object") {
      const channels = state.channels && typeof state.channels === "object" ? state.channels : {};
      const members = state.members && typeof state.members === "object" ? state.members : {};
      for (const [name, info] of this.channels) {
        info.state = channels[name] ? "subscribed" : "subscribing";
        if (Array.isArray(members[name])) {
          info.channel.list = members[name];
          info.members = members[name].length;
        }
      }
      const status = String(state.status || "");
      this.error = status === "disabled" ? "record=False: nothing to relay" : "";
      if (state.detail && (status === "unavailable" || status === "failed")) this.error = `kernel: ${state.detail}`;
      this._setState(RELAY_STATES[status] || status || "connecting");
    }
    if (part.lost) {
      this.error = `the kernel dropped ${part.lost} relayed events (its record has them)`;
    }
    for (const [id, error] of Array.isArray(part.acks) ? part.acks : []) {
      relay.pending.delete(id);
      if (error) this.error = `kernel: ${error}`;
    }
    this._relayNote();
    for (const row of Array.isArray(part.rows) ? part.rows : []) {
      if (!Array.isArray(row)) continue;
      const [t, channel, event, text, userId, serial, stream] = row;
      if (!this.channels.has(channel) || typeof event !== "string" || isInternal(event)) continue;
      const position = Number.isInteger(serial) ? serial : null;
      if (position !== null && this._shown(this._relayMax, channel, position, stream)) continue; // relayed twice
      if (this._seen(this._relayMax, this._pusherMax, channel, position, stream)) continue; // pusher-js showed it
      let data = text;
      try {
        data = JSON.parse(text); // as pusher-js decodes: JSON when it parses, else the text
      } catch {}
      const out = { t: Number(t) || this.now(), channel, event, data, user_id: userId ?? null };
      if (position !== null && typeof stream === "string") {
        out.serial = position; // as pusher-js rows carry it (the stores dedupe rewound rows by it)
        out.stream_id = stream;
      }
      this.emit("event", out);
    }
    this.emit("change");
  }

  _relayTrigger(channel, event, data) {
    const relay = this.relay;
    if (!relay || this._closed) return false;
    const id = `${++this._seq}-${Math.random().toString(36).slice(2, 10)}`;
    relay.pending.set(id, event);
    this.model.send({ type: "relay_trigger", id, channel, event, data });
    this._relayNote();
    this.emit("change");
    return true;
  }

  _relayNote() {
    const n = this.relay?.pending.size || 0;
    this.note = n ? `${n} sent through the kernel: done when it is idle (a running cell delays it)` : "";
  }

  /** Subscribe to the `channels` trait and unsubscribe from channels no longer in it. */
  syncChannels() {
    if (this.relay) {
      this._syncRelayChannels();
      return;
    }
    if (!this.pusher) return;
    const wanted = new Set(this.model.get("channels") || []);
    for (const name of [...this.channels.keys()]) {
      if (!wanted.has(name)) this._unsubscribe(name);
    }
    for (const name of wanted) {
      if (!this.channels.has(name)) this._subscribe(name);
    }
    this.emit("change");
  }

  _syncRelayChannels() {
    const wanted = new Set(this.model.get("channels") || []);
    for (const name of [...this.channels.keys()]) if (!wanted.has(name)) this.channels.delete(name);
    for (const name of wanted) {
      if (!this.channels.has(name)) {
        const channel = relayChannel(this, name);
        this.channels.set(name, { state: "subscribing", error: "", members: null, handler: null, channel });
      }
    }
    this.emit("change");
  }

  _subscribe(name) {
    // history fields (issue 13), unset until known: history, position, replaying, resuming, rewound, asked
    const info = { name, state: "subscribing", error: "", members: null, handler: null, channel: null };
    this.channels.set(name, info);
    info.handler = (event, data) => this._onChannelEvent(name, info, event, data);
    info.channel = this.pusher.subscribe(name);
    info.channel.bind_global(info.handler);
  }

  _unsubscribe(name) {
    const info = this.channels.get(name);
    this.channels.delete(name);
    if (!info) return;
    info.channel?.unbind_global(info.handler);
    this.pusher.unsubscribe(name);
  }

  _onChannelEvent(name, info, event, data) {
    if (this._pusherChannels().get(name) !== info) return; // unsubscribed meanwhile
    if (isInternal(event)) {
      this._onInternal(info, event, data);
      if (this._fallback && event === "pusher:subscription_succeeded") this._maybeEndFallback();
      return;
    }
    this._flushHeld();
    const row = { t: this.now(), channel: name, event, data, user_id: null };
    this._lastRow = row;
    const transport = this.pusher?.connection?.connection?.transport;
    if (transport && transport === this._rawTransport) this._held = { row, info };
    else this._emitPusher(row);
  }

  // ------------------------------------------------------------------ channel history (issue 13)

  /** Add `rewind` to each pusher:subscribe pusher-js sends (its own resubscriptions included). */
  _hookRewind(pusher) {
    if (typeof pusher.send_event !== "function") return;
    const send = pusher.send_event.bind(pusher);
    pusher.send_event = (name, data, channel) => {
      if (name === "pusher:subscribe" && data && typeof data.channel === "string") {
        const rewind = this._rewindFor(data.channel);
        if (rewind) data = { ...data, rewind };
      }
      return send(name, data, channel);
    };
  }

  /** What to ask for when (re)subscribing to `name`: after the last position, else the first rewind. */
  _rewindFor(name) {
    const info = this._pusherChannels().get(name);
    if (!info || info.history === "unavailable") return null;
    const initial = initialRewind(this.model.get("_rewind"));
    info.replaying = false;
    info.resuming = false;
    info.asked = true;
    if (info.position) {
      info.resuming = true;
      return { ...(initial || {}), serial: info.position.serial, stream_id: info.position.stream_id };
    }
    if (!initial) return null;
    info.replaying = !info.rewound;
    return initial;
  }

  /** Read the raw frames of the current transport (pusher-js drops `serial`/`stream_id` decoding them). */
  _attachRaw() {
    const transport = this.pusher?.connection?.connection?.transport;
    if (!transport || transport === this._rawTransport || typeof transport.bind !== "function") return;
    this._rawTransport = transport;
    transport.bind("message", (ev) => {
      if (this._rawTransport === transport) this._onRaw(ev?.data);
    });
  }

  /** The raw frame of the event whose row is held (the transport emits it after pusher-js is done). */
  _onRaw(text) {
    const held = this._held;
    if (!held) return;
    this._held = null;
    const msg = this._frameFields(text);
    const { row, info } = held;
    // the raw frame is the held row's own (same task); a decoded one also names it
    const same = msg && (msg.tail || (msg.channel === row.channel && msg.event === row.event));
    if (same && !this._position(info, row, msg)) return;
    if (this._pusherChannels().get(row.channel) === info) this._emitPusher(row);
  }

  /** `{channel, event, serial, stream_id}` of a raw frame, or null. */
  _frameFields(text) {
    if (typeof text !== "string") return null;
    // The embedded server ends each frame with its position: read it without decoding the data again.
    const tail = POSITION_TAIL.exec(text.length > 200 ? text.slice(-200) : text);
    if (tail) return { tail: true, serial: Number(tail[1]), stream_id: tail[2] };
    if (!text.includes('"serial"')) return { tail: true }; // no position: a server without history
    try {
      return JSON.parse(text); // another server's field order
    } catch {
      return null; // nested too deep to decode again: the row goes on without its position
    }
  }

  _flushHeld() {
    const held = this._held;
    this._held = null;
    if (held && this._pusherChannels().get(held.row.channel) === held.info) this._emitPusher(held.row);
  }

  /** pusher-js's channels: kept aside while the relay stands in for its route (`_fallback`). */
  _pusherChannels() {
    return this._fallback ? this._fallback.channels : this.channels;
  }

  /** Show a row heard through pusher-js, unless the relay showed it already (across a route switch). */
  _emitPusher(row) {
    const serial = Number.isInteger(row.serial) ? row.serial : null;
    if (this._seen(this._pusherMax, this._relayMax, row.channel, serial, row.stream_id)) return;
    this.emit("event", row);
  }

  /** Take the event's position; false when it was heard already (a duplicate, dropped). */
  _position(info, row, msg) {
    const { serial, stream_id: streamId } = msg;
    if (!Number.isInteger(serial) || typeof streamId !== "string") {
      if (info.history !== "unavailable") {
        info.history = "unavailable"; // events without positions: this server keeps no history
        info.replaying = false;
        this.emit("change");
      }
      return true;
    }
    const known = info.position;
    if (known && known.stream_id === streamId && serial <= known.serial) return false;
    info.position = { serial, stream_id: streamId };
    row.serial = serial;
    row.stream_id = streamId;
    if (info.replaying) {
      row.history = true;
      row.rewound = true;
    }
    return true;
  }

  _rewindComplete(info, data) {
    const d = data && typeof data === "object" ? data : {};
    info.replaying = false;
    info.rewound = true;
    info.history = "available";
    const known = info.position;
    if (Number.isInteger(d.serial) && typeof d.stream_id === "string") {
      if (!known || known.stream_id !== d.stream_id || d.serial > known.serial) {
        info.position = { serial: d.serial, stream_id: d.stream_id }; // a new stream: go on from there
      }
    }
    if (info.resuming && d.complete === false) {
      // shown with the channel's problems, until it subscribes again
      info.error = `events sent while offline may be missing (${d.reason})`;
    }
    info.resuming = false;
  }

  /** "unavailable" when no subscribed channel's server keeps history, "available", or "" (not known yet). */
  historyState() {
    let seen = "";
    const now = this.now();
    for (const info of this.channels.values()) {
      if (info.history === "available") return "available";
      // a server with history answers the rewind right after subscription_succeeded; others never do
      const silent = info.asked && info.state === "subscribed" && now - info.subscribedAt >= REWIND_WAIT_MS;
      if (info.history === "unavailable" || (!info.history && silent)) seen = "unavailable";
    }
    return seen;
  }

  // ------------------------------------------------------------------ falling back to the relay

  /** A confirmed direct or jupyter route failed: the relay can stand in (when the kernel offers it). */
  _mayFallBack() {
    return Boolean(this.route) && this.route !== "relay" && this._plan.some((c) => c.route === "relay");
  }

  /** pusher-js left "connected" on a confirmed route: fall back if it is not back soon. */
  _armFallback(candidate) {
    this._clearDown();
    const setT = this.deps.setTimeout || setTimeout;
    this._downTimer = setT(() => {
      this._downTimer = null;
      const state = this.pusher?.connection?.state;
      if (this._closed || this._fallback || state === "connected" || !this._mayFallBack()) return;
      this._startFallback(candidate);
    }, this.deps.fallbackAfterMs ?? FALLBACK_AFTER_MS);
  }

  _clearDown() {
    if (this._downTimer !== null) (this.deps.clearTimeout || clearTimeout)(this._downTimer);
    this._downTimer = null;
  }

  /** Show the relay meanwhile; pusher-js keeps retrying the better route in the background. */
  _startFallback(candidate) {
    this._clearDown();
    if (this._pusherDownAt === null) this._pusherDownAt = this.now();
    const channels = this.channels;
    for (const info of channels.values()) if (info.state === "subscribed") info.state = "subscribing";
    this._fallback = { from: candidate, channels };
    this.channels = new Map();
    this.route = "";
    this.via = "";
    this.trying = "relay";
    this._openRelay(this._plan.find((c) => c.route === "relay"));
    this._replayStandby();
  }

  /** pusher-js is connected and subscribed again: back to its route, the relay dropped. */
  _maybeEndFallback() {
    const fallback = this._fallback;
    if (!fallback || this.pusher?.connection?.state !== "connected") return;
    for (const info of fallback.channels.values()) if (info.state !== "subscribed") return;
    this._fallback = null;
    this._dropRelay();
    this._clearStandby();
    this.channels = fallback.channels;
    this.note = "";
    this.error = "";
    this._confirm(fallback.from);
    this._setState("connected");
  }

  // ------------------------------------------------------------------ standby relay (a cell runs)

  /** Standby rows kept for a fallback (0 when none, or on the relay). */
  get standbyRows() {
    return this._standby ? this._standby.rows.length : 0;
  }

  /** Hear the kernel's relay stream for this model while on another route (see the header). */
  _listenStandby(relayId) {
    const listener = (part) => this._onStandby(part);
    this._standby = { listener, id: relayId, rows: [], bytes: 0, state: null };
    listenRelay(this.deps.scope, relayId, listener);
  }

  /** A relay part for this model: kept (bounded) while pusher-js's route is in use, never shown. */
  _onStandby(part) {
    const standby = this._standby;
    // on the relay its own listener shows it; before a route is confirmed there is nothing to fall back from
    if (!standby || this.relay || !this.route || this._closed) return;
    const now = this.now();
    if (part.state && typeof part.state === "object") standby.state = { at: now, value: part.state };
    for (const row of Array.isArray(part.rows) ? part.rows : []) {
      if (!Array.isArray(row) || typeof row[1] !== "string") continue;
      const [, channel, , text, , serial, stream] = row;
      if (Number.isInteger(serial) && this._shown(this._pusherMax, channel, serial, stream)) continue;
      standby.rows.push({ at: now, row });
      standby.bytes += typeof text === "string" ? text.length : 0;
    }
    this._trimStandby(now);
  }

  /** Keep the newest STANDBY_KEEP rows, STANDBY_BYTES of text, none older than STANDBY_MS. */
  _trimStandby(now) {
    const standby = this._standby;
    let drop = 0;
    let bytes = standby.bytes;
    const rows = standby.rows;
    while (
      drop < rows.length &&
      (rows.length - drop > STANDBY_KEEP || bytes > STANDBY_BYTES || rows[drop].at < now - STANDBY_MS)
    ) {
      const text = rows[drop].row[3];
      bytes -= typeof text === "string" ? text.length : 0;
      drop += 1;
    }
    if (drop) rows.splice(0, drop);
    standby.bytes = bytes;
  }

  /** Falling back: show the kept standby rows pusher-js did not show, as a relay part would. */
  _replayStandby() {
    const standby = this._standby;
    if (!standby || !this.relay) return;
    const now = this.now();
    this._trimStandby(now);
    const since = this._pusherDownAt ?? now;
    const rows = standby.rows
      .filter(({ at, row }) => Number.isInteger(row[5]) || at >= since) // no position: only after the drop
      .map(({ row }) => row);
    const state = standby.state && standby.state.at >= now - STANDBY_MS ? standby.state.value : null;
    this._clearStandby();
    if (!rows.length && !state) return;
    this._onRelayPart({ id: standby.id, rows, ...(state ? { state } : {}) });
  }

  _clearStandby() {
    if (!this._standby) return;
    this._standby.rows = [];
    this._standby.bytes = 0;
    this._standby.state = null;
  }

  _dropStandby() {
    const standby = this._standby;
    this._standby = null;
    if (!standby) return;
    unlistenRelay(this.deps.scope, standby.id, standby.listener);
  }

  /** Whether `serial` on `channel` is at or before the last position `side` showed. */
  _shown(side, channel, serial, stream) {
    const shown = side.get(channel);
    return Boolean(shown) && shown.stream === stream && serial <= shown.serial;
  }

  /** Note `serial` as shown from one side (`mine`); whether the other side showed it already. */
  _seen(mine, other, channel, serial, stream) {
    if (serial === null) return false;
    const last = mine.get(channel);
    if (!last || last.stream !== stream || serial > last.serial) mine.set(channel, { stream, serial });
    return this._shown(other, channel, serial, stream);
  }

  _onInternal(info, event, data) {
    const members = info.channel?.members;
    switch (event) {
      case "pusher:subscription_succeeded":
        info.state = "subscribed";
        info.error = "";
        if (members && typeof members.count === "number") info.members = members.count;
        info.subscribedAt = this.now(); // for historyState: a rewind is answered right away, or never
        break;
      case "pusher:rewind_complete":
        this._rewindComplete(info, data);
        this.emit("rewound", { channel: info.name, ...(data && typeof data === "object" ? data : {}) });
        break;
      case "pusher:subscription_error":
        info.state = "error";
        if (data?.type === "AuthError") info.error = `authorization: ${data.error}`;
        else info.error = data?.error ? String(data.error) : `subscription refused (status ${data?.status ?? "?"})`;
        break;
      case "pusher:member_added":
      case "pusher:member_removed":
        if (members && typeof members.count === "number") info.members = members.count;
        break;
      default:
        return;
    }
    this.emit("change");
  }

  // ------------------------------------------------------------------ authorization

  /**
   * pusher-js `channelAuthorization.customHandler`: the kernel signs; this side only carries the
   * request. First the kernel's HTTP endpoint (`_auth.url`, answers while a cell runs), then, when it
   * cannot be reached (Jupyter on another machine), a custom message over the comm.
   */
  authorize({ socketId, channelName }, callback) {
    this._authorize(socketId, channelName).then(
      (answer) => {
        if (!this._closed) callback(null, answer);
      },
      (err) => {
        const info = this.channels.get(channelName);
        if (info) {
          info.state = "error";
          info.error = `authorization: ${messageOf(err)}`;
          this.emit("change");
        }
        if (!this._closed) callback(err instanceof Error ? err : new Error(messageOf(err)), null);
      },
    );
  }

  async _authorize(socketId, channelName) {
    const auth = this.model.get("_auth") || {};
    if (auth.url && this._mayFetch(auth.url)) {
      try {
        return await this._authorizeHttp(auth.url, auth.token, socketId, channelName, { credentials: "omit" });
      } catch (err) {
        if (!(err instanceof Unreachable)) throw err;
      }
    } else if (auth.id && this._page?.baseUrl) {
      // Same-origin through the Jupyter extension (POST {base}livewidget/auth/{id}): the page's Jupyter
      // login cookie, and Jupyter's XSRF token as JupyterLab's own requests send it.
      const headers = {};
      const xsrf = cookie(this.deps.document ?? globalThis.document, "_xsrf");
      if (xsrf) headers["X-XSRFToken"] = xsrf;
      const url = `${this._page.baseUrl}livewidget/auth/${auth.id}`;
      try {
        return await this._authorizeHttp(url, auth.token, socketId, channelName, {
          credentials: "same-origin",
          headers,
          unreachableStatus: [404, 502, 503], // no extension, or not this kernel's: ask over the comm
        });
      } catch (err) {
        if (!(err instanceof Unreachable)) throw err;
      }
    }
    return this._authorizeComm(socketId, channelName);
  }

  /** The kernel's endpoint is on its loopback: from a page that is not, it is another machine (and LNA). */
  _mayFetch(url) {
    if (!this._page || isLoopback(this._page.hostname)) return true;
    try {
      return !isLoopback(new URL(url).hostname);
    } catch {
      return false;
    }
  }

  async _authorizeHttp(url, token, socketId, channelName, how) {
    const fetchImpl = this.deps.fetch || globalThis.fetch;
    if (typeof fetchImpl !== "function") throw new Unreachable("no fetch");
    const setT = this.deps.setTimeout || setTimeout;
    const clearT = this.deps.clearTimeout || clearTimeout;
    const abort = typeof AbortController === "function" ? new AbortController() : null;
    const timer = setT(() => abort?.abort(), this.deps.fetchTimeoutMs ?? FETCH_TIMEOUT_MS);
    let response;
    try {
      response = await fetchImpl(url, {
        method: "POST",
        // text/plain keeps it a "simple" CORS request: no preflight
        headers: { "Content-Type": "text/plain", ...how.headers },
        body: JSON.stringify({ token, socket_id: socketId, channel_name: channelName }),
        cache: "no-store",
        credentials: how.credentials,
        signal: abort?.signal,
      });
    } catch (err) {
      throw new Unreachable(messageOf(err));
    } finally {
      clearT(timer);
    }
    if (how.unreachableStatus?.includes(response.status)) throw new Unreachable(`HTTP ${response.status}`);
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      throw new Error(body?.error ? String(body.error) : `the kernel's endpoint answered HTTP ${response.status}`);
    }
    return authAnswer(body);
  }

  _authorizeComm(socketId, channelName) {
    return new Promise((resolve, reject) => {
      const id = `${++this._seq}-${Math.random().toString(36).slice(2, 10)}`;
      const setT = this.deps.setTimeout || setTimeout;
      const timeoutMs = this.deps.authTimeoutMs ?? AUTH_TIMEOUT_MS;
      const timer = setT(() => {
        this._pending.delete(id);
        this._late.set(id, channelName);
        reject(
          new Error(
            `no answer from the kernel within ${Math.round(timeoutMs / 1000)} s (a running cell delays it); ` +
              "will retry when it answers",
          ),
        );
      }, timeoutMs);
      this._pending.set(id, { resolve, reject, timer, channel: channelName });
      const info = this.channels.get(channelName);
      if (info) {
        info.state = "authorizing";
        this.emit("change");
      }
      this.model.send({ type: "auth", id, socket_id: socketId, channel_name: channelName });
    });
  }

  _handleCustom(msg, buffers) {
    if (msg?.type === "relay") {
      this._deliverRelay(msg, buffers);
      return;
    }
    if (!msg || msg.type !== "auth") return;
    const pending = this._pending.get(msg.id);
    if (!pending) {
      // answered after the timeout: the kernel is free again, so ask afresh
      const late = this._late.get(msg.id);
      this._late.delete(msg.id);
      if (late && this.pusher && this.channels.has(late) && !msg.error) this.pusher.subscribe(late);
      return;
    }
    this._pending.delete(msg.id);
    (this.deps.clearTimeout || clearTimeout)(pending.timer);
    if (msg.error) {
      pending.reject(new Error(String(msg.error)));
      return;
    }
    try {
      pending.resolve(authAnswer(msg));
    } catch (err) {
      pending.reject(err);
    }
  }

  /** Disconnect and forget everything (the cleanup of `initialize`). */
  close() {
    if (this._closed) return;
    this._closed = true;
    this.model.off("change:channels", this._onChannels);
    this.model.off("msg:custom", this._onCustom);
    const clearT = this.deps.clearTimeout || clearTimeout;
    for (const pending of this._pending.values()) clearT(pending.timer);
    this._pending.clear();
    this._late.clear();
    this._clearTrial();
    this._clearDown();
    this._dropStandby();
    if (this._fallback) this.channels = this._fallback.channels; // pusher-js's, to unbind
    this._fallback = null;
    this._dropPusher();
    this._dropRelay();
    this.channels.clear();
    this.state = "disconnected";
    this.removeAll();
  }
}

/** The value of cookie `name` in `doc`, or "". */
function cookie(doc, name) {
  let text = "";
  try {
    text = String(doc?.cookie ?? "");
  } catch {
    return ""; // a sandboxed frame may refuse
  }
  for (const part of text.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return "";
}

/** `{auth, channel_data?}` for pusher-js from an answer, or an error if it has no signature. */
function authAnswer(body) {
  if (!body || typeof body.auth !== "string" || !body.auth) {
    throw new Error(body?.error ? String(body.error) : "the kernel's answer has no signature");
  }
  const answer = { auth: body.auth };
  if (typeof body.channel_data === "string") answer.channel_data = body.channel_data;
  return answer;
}
