// Small pieces shared by the widget front ends: an emitter, a ring buffer, a rate meter, decoding of the
// kernel's `_history` bytes, and text formatting. No DOM, no network: everything here runs under Node.

/** A tiny event emitter: `on(type, fn)` returns the function that removes `fn`. */
export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  emit(type, ...args) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        console.error(`livewidget: a "${type}" listener failed`, err);
      }
    }
  }

  removeAll() {
    this._listeners.clear();
  }
}

/** `model.on(event, fn)`, undone by the function pushed onto `unbind` (stores and views share it). */
function onModel(model, unbind, event, fn) {
  model.on(event, fn);
  unbind.push(() => model.off(event, fn));
}

/**
 * What the widget stores share: the model-level state of one widget model, fed by its connection.
 * Listeners added with `_onModel` (or pushed onto `_unbind`) are removed by `close()`.
 */
export class StoreBase extends Emitter {
  /**
   * @param {object} model  the anywidget model (or anything with get/on/off)
   * @param {import("./connection.js").Connection | null} conn  the model's connection (emits "event")
   * @param {object} deps  `{now?}` and what each store documents
   */
  constructor(model, conn, deps = {}) {
    super();
    this.model = model;
    this.conn = conn;
    this.now = deps.now || (() => Date.now());
    this._unbind = [];
  }

  /** Call `fn` on the model's `event` ("change:<trait>", "msg:custom") until `close()`. */
  _onModel(event, fn) {
    onModel(this.model, this._unbind, event, fn);
  }

  close() {
    for (const off of this._unbind.splice(0)) off();
    this.removeAll();
  }
}

/** A fixed-capacity FIFO: pushing onto a full buffer drops the oldest item. */
export class RingBuffer {
  constructor(capacity) {
    this._cap = Math.max(1, capacity | 0);
    this._items = new Array(this._cap);
    this._start = 0; // index of the oldest item
    this._size = 0;
  }

  get capacity() {
    return this._cap;
  }

  get size() {
    return this._size;
  }

  push(item) {
    if (this._size < this._cap) {
      this._items[(this._start + this._size) % this._cap] = item;
      this._size += 1;
    } else {
      this._items[this._start] = item;
      this._start = (this._start + 1) % this._cap;
    }
  }

  /** The `i`-th newest item (0: the newest), or undefined. */
  newest(i = 0) {
    if (i < 0 || i >= this._size) return undefined;
    return this._items[(this._start + this._size - 1 - i) % this._cap];
  }

  /** Oldest first. */
  toArray() {
    const out = new Array(this._size);
    for (let i = 0; i < this._size; i++) out[i] = this._items[(this._start + i) % this._cap];
    return out;
  }

  clear() {
    this._items = new Array(this._cap);
    this._start = 0;
    this._size = 0;
  }

  /** Replace the content with `items` (oldest first), keeping the newest that fit. */
  reset(items, capacity = this._cap) {
    this._cap = Math.max(1, capacity | 0);
    this.clear();
    for (const item of items.slice(-this._cap)) this.push(item);
  }

  /** Keep only the items for which `keep(item)` is true, in order. */
  retain(keep) {
    this.reset(this.toArray().filter(keep));
  }
}

/**
 * Events per second over a sliding window, in fixed buckets so that adding an event is O(1) however
 * fast they come (thousands per second) and memory stays constant.
 */
export class RateMeter {
  constructor(windowMs = 5000, bucketMs = 250) {
    this.windowMs = windowMs;
    this.bucketMs = bucketMs;
    this._n = Math.max(2, Math.round(windowMs / bucketMs));
    this._ids = new Float64Array(this._n).fill(-1); // which absolute bucket each slot holds
    this._counts = new Float64Array(this._n);
    this._since = null; // when counting started: a young meter divides by its age, not the window
  }

  add(t, n = 1) {
    const b = Math.floor(t / this.bucketMs);
    const i = b % this._n;
    if (this._ids[i] !== b) {
      this._ids[i] = b;
      this._counts[i] = 0;
    }
    this._counts[i] += n;
    if (this._since === null) this._since = t;
  }

  /** Events per second over the last `windowMs` (at most) before `now`. */
  rate(now) {
    if (this._since === null) return 0;
    const b = Math.floor(now / this.bucketMs);
    let sum = 0;
    for (let i = 0; i < this._n; i++) {
      const id = this._ids[i];
      if (id > b - this._n && id <= b) sum += this._counts[i];
    }
    // The buckets cover the n-1 whole ones before the current one plus the current one so far.
    const covered = (this._n - 1) * this.bucketMs + (now - b * this.bucketMs);
    const span = Math.max(1000, Math.min(covered, now - this._since));
    return (sum * 1000) / span;
  }

  reset() {
    this._ids.fill(-1);
    this._counts.fill(0);
    this._since = null;
  }
}

const decoder = typeof TextDecoder === "function" ? new TextDecoder() : null;

/** Bytes as anywidget delivers them (DataView), or ArrayBuffer / typed array / string, to text. */
export function bytesToText(value) {
  if (value == null) return "";
  if (typeof value === "string") return value;
  if (value instanceof ArrayBuffer) return decoder.decode(new Uint8Array(value));
  if (ArrayBuffer.isView(value)) {
    return decoder.decode(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
  }
  return "";
}

/** JSON lines (the `_history` trait) to objects; blank and malformed lines are skipped. */
export function decodeJsonLines(value) {
  const out = [];
  for (const line of bytesToText(value).split("\n")) {
    if (!line.trim()) continue;
    try {
      const item = JSON.parse(line);
      if (item && typeof item === "object") out.push(item);
    } catch {
      // one bad line must not hide the rest
    }
  }
  return out;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** Local wall-clock time `HH:MM:SS.mmm` of `ms` since the epoch. */
export function formatTime(ms) {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return "--:--:--.---";
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export const DATA_MAX_DEPTH = 64; // nesting shown; deeper values read "[…]" / "{…}"
export const DATA_MAX_CHARS = 100_000; // text made from one value at most (then "…")

/**
 * `value` as JSON text that is always bounded: nesting deeper than `maxDepth` is shown as `[…]` / `{…}`
 * and the text stops after `maxChars` characters (ending in `…`). Never throws, whatever the value
 * (5,000 levels of nesting make `JSON.stringify` and `String` throw RangeError; a cycle, a BigInt or a
 * getter that throws make `JSON.stringify` throw), and costs O(maxChars), not O(size of the value).
 * `indent` > 0 gives JSON.stringify's indented layout.
 */
export function formatJson(value, { indent = 0, maxDepth = DATA_MAX_DEPTH, maxChars = DATA_MAX_CHARS } = {}) {
  const out = [];
  let len = 0;
  let full = false;
  const put = (text) => {
    if (full) return;
    if (len + text.length > maxChars) {
      out.push(text.slice(0, Math.max(0, maxChars - len)));
      full = true;
      return;
    }
    out.push(text);
    len += text.length;
  };
  const seen = new Set();
  const walk = (v, depth) => {
    if (full) return;
    if (v === null || v === undefined || typeof v === "function" || typeof v === "symbol") return put("null");
    if (typeof v === "string") return put(JSON.stringify(v.length > maxChars ? v.slice(0, maxChars) : v));
    if (typeof v === "number") return put(Number.isFinite(v) ? String(v) : "null");
    if (typeof v === "boolean") return put(String(v));
    if (typeof v === "bigint") return put(String(v));
    if (typeof v !== "object") return put("null");
    const isArray = Array.isArray(v);
    if (seen.has(v)) return put(isArray ? "[…]" : "{…}"); // a cycle (not from JSON, but never loop)
    if (depth >= maxDepth) return put(isArray ? "[…]" : "{…}");
    let keys;
    try {
      keys = isArray ? null : Object.keys(v);
    } catch {
      return put("{…}");
    }
    const n = isArray ? v.length : keys.length;
    if (n === 0) return put(isArray ? "[]" : "{}");
    seen.add(v);
    const pad = indent ? `\n${" ".repeat(indent * (depth + 1))}` : "";
    put(isArray ? "[" : "{");
    for (let i = 0; i < n && !full; i++) {
      if (i) put(",");
      put(pad);
      let item;
      try {
        item = isArray ? v[i] : v[keys[i]];
      } catch {
        item = null;
      }
      if (!isArray) put(`${JSON.stringify(keys[i])}:${indent ? " " : ""}`);
      walk(item, depth + 1);
    }
    seen.delete(v);
    if (indent) put(`\n${" ".repeat(indent * depth)}`);
    put(isArray ? "]" : "}");
  };
  walk(value, 0);
  let text = out.join("");
  if (full) text = `${text.slice(0, Math.max(0, maxChars - 1))}…`;
  return text;
}

/** Event data as one line of text: strings as they are, anything else as compact JSON (bounded). */
export function dataText(data, maxChars = DATA_MAX_CHARS) {
  if (typeof data === "string") return truncate(data, maxChars);
  if (data === undefined) return "";
  return formatJson(data, { maxChars });
}

/** Event data for reading: JSON indented, strings as they are (bounded like `dataText`). */
export function dataPretty(data, maxChars = DATA_MAX_CHARS) {
  if (typeof data === "string") return truncate(data, maxChars);
  return formatJson(data, { indent: 2, maxChars });
}

/** Any value as one short line of text for a label (a name, a description): never throws. */
export function labelText(value, maxChars = 200) {
  if (typeof value === "string") return truncate(value, maxChars);
  if (value === null || value === undefined) return "";
  return formatJson(value, { maxChars, maxDepth: 8 });
}

/** `text` cut to `max` characters with an ellipsis. */
export function truncate(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** `n` and the noun for it: "1 event", "2 events" (`many` when the plural is not `one` + "s"). */
export function plural(n, one, many = `${one}s`) {
  return `${typeof n === "number" ? n.toLocaleString("en-US") : n} ${n === 1 ? one : many}`;
}

/** Events per second for display: one decimal below 100, whole numbers above. */
export function formatRate(rate) {
  if (!Number.isFinite(rate) || rate <= 0) return "0.0";
  return rate < 100 ? rate.toFixed(1) : String(Math.round(rate));
}

/** `document.createElement` with a class and text (text always through textContent, never HTML). */
export function h(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * What every widget view shares: listeners removed on cleanup, and DOM writes skipped when nothing
 * changed (a repaint per animation frame must not touch what did not change).
 */
const EAGER = -1; // ViewBase.frame while a paint waits for a microtask rather than a frame
export const EAGER_GAP_MS = 16; // an eager view idle for about a frame paints at once

/** The header's connection label: the state, and "no history" when the server keeps none (issue 13). */
export function stateLabel(conn) {
  return conn.historyState?.() === "unavailable" ? `${conn.state} · no history` : conn.state;
}

/** The header's tooltip about channel history: "" unless the server keeps none. */
export function historyTitle(conn) {
  return conn.historyState?.() === "unavailable" ? "this server keeps no channel history" : "";
}

export class ViewBase {
  /** A view of `model` painted into `el`, from the model's `session` ({conn, store}); `deps` for tests. */
  constructor(model, el, session, deps = {}) {
    this._unbind = [];
    this.texts = new Map(); // what each keyed node shows now
    this.model = model;
    this.el = el;
    this.conn = session.conn;
    this.store = session.store;
    this.doc = el.ownerDocument || globalThis.document;
    const win = (this.win = this.doc.defaultView || globalThis);
    // Host functions are wrapped: called as methods of a view they would throw "Illegal invocation".
    this.raf = deps.requestAnimationFrame || win.requestAnimationFrame?.bind(win) || ((fn) => setTimeout(fn, 16));
    this.caf = deps.cancelAnimationFrame || win.cancelAnimationFrame?.bind(win) || ((id) => clearTimeout(id));
    this.setInterval = deps.setInterval || ((fn, ms) => setInterval(fn, ms));
    this.clearInterval = deps.clearInterval || ((id) => clearInterval(id));
    this.now = deps.now || (() => Date.now());
    this.frame = null; // the animation frame requested for the next paint (EAGER: a microtask)
    this.destroyed = false;
    this.eager = false; // text views set it: paint at once when idle, rather than on the next frame
    this.lastPaintAt = Number.NEGATIVE_INFINITY; // when schedule() last painted
    const paint = () => {
      this.lastPaintAt = this.now();
      this.paint();
    };
    /** Ask for a paint: coalesced to one per animation frame, or at once after a quiet frame. */
    this.schedule = () => {
      if (this.frame !== null || this.destroyed) return;
      if (this.eager && this.now() - this.lastPaintAt >= EAGER_GAP_MS) {
        // An event after a quiet spell shows now, not up to a frame later (publish-to-DOM latency);
        // the microtask still merges what the same task changes. Under load this falls back to frames.
        this.frame = EAGER;
        queueMicrotask(() => {
          if (this.frame === EAGER) paint();
        });
      } else {
        this.frame = this.raf(paint);
      }
    };
  }

  /** Remove listeners and the DOM (the cleanup `render` returns). */
  destroy() {
    this.destroyed = true;
    this._cancelFrame();
    for (const off of this._unbind.splice(0)) off();
    this.root?.remove();
  }

  /** Call `fn` on the model's `event` until `destroy()`. */
  _onModel(event, fn) {
    onModel(this.model, this._unbind, event, fn);
  }

  /** Forget the paint asked for (a frame is cancelled; an EAGER microtask finds `frame` changed). */
  _cancelFrame() {
    if (this.frame !== null && this.frame !== EAGER) this.caf(this.frame);
    this.frame = null;
  }

  _listen(node, type, fn, options) {
    node.addEventListener(type, fn, options);
    this._unbind.push(() => node.removeEventListener(type, fn, options));
  }

  _text(key, node, text) {
    if (this.texts.get(key) === text) return;
    this.texts.set(key, text);
    node.textContent = text;
  }

  /** Set `name` to `value`, or remove it when `value` is null. */
  _attr(node, name, value) {
    if (value === null) {
      if (node.hasAttribute(name)) node.removeAttribute(name);
    } else if (node.getAttribute(name) !== value) node.setAttribute(name, value);
  }
}
