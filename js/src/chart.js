// LiveChart: points from Pusher channels drawn with uPlot (the LiveChart widget, `_kind == "chart"`).
//
// `ChartStore` is model-level (made in `initialize`): it parses each event's points, buffers them, and on
// `flush()` merges them into columns sorted by x (uPlot's aligned data: one x array, one array per
// series) and trims them to the window. It is seeded from the kernel's record (`_backfill`, binary
// columns) and fed by the browser's own connection; `chart.extend(df)` arrives as a custom message with
// the same binary columns. `ChartView` is one view (made in `render`): it flushes and redraws at most
// once per animation frame, so thousands of points per second cost one `setData` per frame.
//
// Point values: a missing y field draws nothing there (the line joins over it); a y that is null, NaN,
// not a number (or not positive on a log axis) is a "bad value", drawn as a gap (or joined over with
// `missing="skip"`) and counted; a point without a usable x, or with no usable y at all, is skipped
// and counted. Both counts are shown, and nothing a publisher sends can break the chart.

import uPlotDefault from "uplot";
import { bytesToText, formatRate, h, labelText, plural, RateMeter, StoreBase, ViewBase, stateLabel, historyTitle } from "./util.js";

export const MAX_POINTS = 1_000_000; // hard cap of points kept per model, whatever the window
const RATE_REFRESH_MS = 500;
const BACKFILL_MAGIC = "LWC1";
const MISSING = -Infinity; // in the binary columns: the field was absent (NaN: present but unusable)
const LIVE_MARGIN_MS = 250; // backfill rows this close to the first live event may be the same events
const LIVE_KEYS = 32; // first live points remembered, to find where they begin in the kernel's record
const REWOUND_KEYS = 2000; // rewound points remembered to skip them in the kernel's record
const MAX_GROUPS = 200; // series groups (`by` values) drawn; points of further groups are skipped, said why
const MAX_FIELDS_SEEN = 12; // field names of skipped points remembered, to name them
const GROUP_CHARS = 120; // characters of a `by` value kept to name its series
const MATCH_BACK_MS = 60_000; // how far before the live start that beginning is looked for

/** Colours for series, by theme (readable on JupyterLab's light and dark backgrounds). */
export const PALETTES = {
  light: ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"],
  dark: ["#5fa8e8", "#ff6b6b", "#5cd65c", "#ffa94d", "#b794f6", "#d4a373", "#f78fce", "#4dd4e6", "#bdbdbd", "#e0e05a"],
};

// ------------------------------------------------------------------------------------------ parsing

/** A finite number from a JSON value (numbers and numeric strings), or null. */
export function toNumber(v) {
  if (typeof v === "number") return Number.isFinite(v) ? v : null;
  if (typeof v === "string" && v.trim() !== "") {
    const n = Number(v);
    return Number.isFinite(n) ? n : null;
  }
  return null;
}

/** Seconds since the epoch from an x value on a time axis (ISO string, seconds or milliseconds). */
export function toTime(v) {
  if (typeof v === "number") {
    if (!Number.isFinite(v)) return null;
    return Math.abs(v) > 1e11 ? v / 1000 : v; // beyond year 5138 in seconds: it was milliseconds
  }
  if (typeof v === "string" && v.trim() !== "") {
    const n = Number(v);
    if (Number.isFinite(n)) return toTime(n);
    const ms = Date.parse(v);
    return Number.isFinite(ms) ? ms / 1000 : null;
  }
  return null;
}

/** `point[name]`, or the nested value for a dotted name ("metrics.loss", as the kernel's columns). */
export function field(point, name) {
  if (Object.hasOwn(point, name)) return point[name];
  if (!name.includes(".")) return undefined;
  let v = point;
  for (const part of name.split(".")) {
    if (v === null || typeof v !== "object" || !Object.hasOwn(v, part)) return undefined;
    v = v[part];
  }
  return v;
}

/** The points of one event's data: an object is one point, an array holds several. */
export function pointsOf(data) {
  return Array.isArray(data) ? data : [data];
}

/** The chart's settings from the model's traits. */
export function settingsOf(model) {
  const get = (name, fallback) => {
    const v = model.get(name);
    return v === undefined || v === null ? fallback : v;
  };
  const y = get("y", []);
  const windowPoints = Math.max(0, Math.floor(Number(get("window_points", 0)) || 0));
  const windowSpan = Math.max(0, Number(get("window_span", 0)) || 0);
  return {
    x: get("x", null) || null,
    y: Array.isArray(y) ? y.map(String) : [String(y)],
    by: get("by", null) || null,
    xType: get("x_type", "auto"),
    windowPoints,
    windowSpan,
    maxPoints: Math.max(1, Math.min(MAX_POINTS, Math.floor(Number(get("max_points", MAX_POINTS)) || MAX_POINTS))),
    missing: get("missing", "gap") === "skip" ? "skip" : "gap",
    logY: Boolean(get("log_y", false)),
    logX: Boolean(get("log_x", false)),
  };
}

/** The first index `i` with `xs[i] > x` (`strict`) or `xs[i] >= x`. */
export function bisect(xs, x, strict = true) {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (strict ? xs[mid] <= x : xs[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// ------------------------------------------------------------------------------------------ binary

function alignedBuffer(value) {
  if (value instanceof ArrayBuffer) return { buffer: value, offset: 0, length: value.byteLength };
  if (ArrayBuffer.isView(value)) return { buffer: value.buffer, offset: value.byteOffset, length: value.byteLength };
  return null;
}

/**
 * The kernel's binary columns (`_backfill`, and the buffer of a `points` message), little-endian:
 * `"LWC1"`, u32 header length, header JSON `{n, fields, groups, x_kind, skipped, bad}`, zero padding
 * to 8 bytes, then f64 `t[n]` (kernel receive time, ms), f64 `x[n]`, f64 `y[n]` per field (NaN: an
 * unusable value, -Infinity: absent), and with groups i32 `g[n]` (index into `groups`).
 * Returns null for empty or malformed input.
 */
export function decodeColumns(value) {
  const src = alignedBuffer(value);
  if (!src || src.length < 8) return null;
  let bytes = new Uint8Array(src.buffer, src.offset, src.length);
  if (src.offset % 8 !== 0) bytes = bytes.slice(); // typed arrays need aligned offsets
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]);
  if (magic !== BACKFILL_MAGIC) return null;
  const headerLen = view.getUint32(4, true);
  if (8 + headerLen > bytes.byteLength) return null;
  let header;
  try {
    header = JSON.parse(bytesToText(bytes.subarray(8, 8 + headerLen)));
  } catch {
    return null;
  }
  const n = Number(header.n) | 0;
  const fields = Array.isArray(header.fields) ? header.fields.map(String) : [];
  const groups = Array.isArray(header.groups) ? header.groups.map(String) : null;
  let off = Math.ceil((8 + headerLen) / 8) * 8;
  const need = off + 8 * n * (2 + fields.length) + (groups ? 4 * n : 0);
  if (n < 0 || need > bytes.byteLength) return null;
  const f64 = () => {
    const a = new Float64Array(bytes.buffer, bytes.byteOffset + off, n);
    off += 8 * n;
    return a;
  };
  const t = f64();
  const x = f64();
  const ys = fields.map(() => f64());
  const g = groups ? new Int32Array(bytes.buffer, bytes.byteOffset + off, n) : null;
  return { header, n, fields, groups, t, x, ys, g };
}

// ------------------------------------------------------------------------------------------ store

/**
 * The model-level state of a LiveChart: the points in the window, as uPlot's aligned columns, with
 * counters. Emits `"change"` when something new is buffered or the settings change.
 */
export class ChartStore extends StoreBase {
  /**
   * @param {object} model  the anywidget model (or anything with get/on/off)
   * @param {import("./connection.js").Connection | null} conn  emits "event" (null in tests)
   * @param {object} deps  `{now?}`
   */
  constructor(model, conn, deps = {}) {
    super(model, conn, deps);
    this.settings = settingsOf(model);
    this.meter = new RateMeter();
    this._filter = new Set();
    this.reset();
  }

  /** Forget every point and counter. */
  reset() {
    this.xs = [];
    /** @type {{key: string, label: string, group: string, field: string, fi: number, values: any[]}[]} */
    this.series = [];
    this.groups = new Map(); // group -> its series, in field order
    this._newGroups = new Set(); // groups of buffered points not made into series yet
    this.pending = [];
    this.xKind = this.settings.xType === "number" || this.settings.xType === "time" ? this.settings.xType : null;
    if (this.settings.x === null) this.xKind = "time";
    this.received = 0; // live points accepted (plotted) since the start
    this.seeded = 0; // points taken from the kernel's record or `extend`
    this.extendsApplied = 0; // extend() calls already included (by a `points` message or the record)
    this.skipped = 0; // points not drawn at all (no usable x, or no usable y)
    // why live points were skipped (counts by reason), and field names those points had: said when
    // nothing can be drawn, rather than "Waiting for points" while points arrive
    this.why = { notObject: 0, noX: 0, badX: 0, noY: 0, groups: 0 };
    this.fieldsSeen = new Set();
    this.bad = 0; // y values shown as gaps (null, NaN, not a number, not positive on a log axis)
    this.historySkipped = 0; // the kernel's counts for what it recorded before this browser was live
    this.historyBad = 0;
    this.trimmed = 0; // points dropped out of the window
    this.version = 0; // bumped when the columns change
    this.structure = 0; // bumped when the series or the x kind change
    this.latestX = null; // the largest x seen
    this.liveFrom = null; // when this browser started receiving live (ms, its clock)
    this.firstLive = []; // keys of the first live points (pointKey), at most LIVE_KEYS
    this.rewoundKeys = new Set(); // keys of points the server's rewind replayed (issue 13)
    this.tookRecord = false; // a `_backfill` was taken (issue 13: rewound rows then add nothing)
    this.seedUntil = -Infinity; // the newest kernel time taken from the record (ms)
  }

  start() {
    const on = (event, fn) => this._onModel(event, fn);
    this._filter = new Set(this.model.get("event_filter") || []);
    on("change:event_filter", () => {
      this._filter = new Set(this.model.get("event_filter") || []);
    });
    for (const name of ["window_points", "window_span", "max_points"]) {
      on(`change:${name}`, () => {
        this.settings = settingsOf(this.model);
        this.version += 1;
        this.emit("change");
      });
    }
    for (const name of ["x", "y", "by", "x_type", "missing", "log_y"]) {
      on(`change:${name}`, () => {
        this.settings = settingsOf(this.model);
        this.reset();
        this.seedBackfill();
        this.structure += 1;
        this.emit("change");
      });
    }
    on("change:_backfill", () => this.seedBackfill());
    on("msg:custom", (msg, buffers) => this._onCustom(msg, buffers));
    if (this.conn) {
      this._unbind.push(this.conn.on("event", (row) => this.addEvent(row)));
      this._unbind.push(
        this.conn.on("change", () => {
          if (this.liveFrom !== null) return;
          for (const info of this.conn.channels.values()) {
            if (info.state === "subscribed") {
              this.liveFrom = this.now();
              return;
            }
          }
        }),
      );
    }
    this.seedBackfill();
    return this;
  }

  /** Whether events named `event` carry points for this chart (`event_filter`; empty: all). */
  accepts(event) {
    if (event.startsWith("pusher:") || event.startsWith("pusher_internal:")) return false;
    return this._filter.size === 0 || this._filter.has(event);
  }

  /** A live event from the connection: `{t, channel, event, data}`; its data is one point or a list. */
  addEvent(row) {
    // Replayed by the server's channel history (issue 13) after the kernel's record was taken: the
    // kernel rewound the same history, so the record has these points (and their skipped counts).
    if (!this.accepts(row.event) || (row.rewound && this.tookRecord)) return;
    if (this.liveFrom === null) this.liveFrom = row.t;
    let n = 0;
    for (const point of pointsOf(row.data)) {
      if (!this.addPoint(point, row.t)) continue;
      n += 1;
      // replayed by the server's channel history: the kernel's record has it too (seedBackfill skips it)
      const last = this.pending[this.pending.length - 1];
      if (row.rewound && last && this.rewoundKeys.size < REWOUND_KEYS) this.rewoundKeys.add(pointKey(last));
    }
    this.received += n;
    if (n) this.meter.add(row.t, n);
    this.emit("change");
  }

  /** Parse one point received at `t` (ms) and buffer it; false when it was skipped. */
  addPoint(point, t) {
    const s = this.settings;
    if (point === null || typeof point !== "object" || Array.isArray(point)) {
      this.skipped += 1;
      this.why.notObject += 1;
      return false;
    }
    let x;
    if (s.x === null) {
      x = t / 1000;
    } else {
      const raw = field(point, s.x);
      if (this.xKind === null) {
        if (toNumber(raw) !== null) this.xKind = "number";
        else if (toTime(raw) !== null) this.xKind = "time";
        if (this.xKind !== null) this.structure += 1;
      }
      x = this.xKind === "time" ? toTime(raw) : toNumber(raw);
    }
    if (x === null || (s.logX && x <= 0)) {
      this.skipped += 1;
      if (s.x !== null && field(point, s.x) === undefined) this.why.noX += 1;
      else this.why.badX += 1;
      this._sawFields(point);
      return false;
    }
    const gap = s.missing === "gap" ? null : undefined;
    const v = new Array(s.y.length);
    let usable = 0;
    let bad = 0;
    for (let i = 0; i < s.y.length; i++) {
      const raw = field(point, s.y[i]);
      if (raw === undefined) {
        v[i] = undefined;
        continue;
      }
      const y = toNumber(raw);
      if (y === null || (s.logY && y <= 0)) {
        v[i] = gap;
        bad += 1;
      } else {
        v[i] = y;
        usable += 1;
      }
    }
    const group = s.by === null ? "" : groupName(field(point, s.by));
    if (!this.groups.has(group) && this.groups.size + this._newGroups.size >= MAX_GROUPS && !this._newGroups.has(group)) {
      this.skipped += 1; // one more series would make the chart unreadable (and slow): say so instead
      this.why.groups += 1;
      return false;
    }
    if (usable === 0) {
      this.skipped += 1;
      this.why.noY += 1;
      this._sawFields(point);
      // a point with only unusable values still breaks the line there
      if (bad === 0 || gap === undefined) return false;
    } else {
      this.bad += bad;
    }
    if (!this.groups.has(group)) this._newGroups.add(group);
    const p = { x, g: group, v };
    this.pending.push(p);
    if (this.liveFrom !== null && this.firstLive.length < LIVE_KEYS) this.firstLive.push(pointKey(p));
    if (this.pending.length > s.maxPoints) this.flush(); // no view is flushing: keep memory bounded
    return usable > 0;
  }

  /** Remember the field names of a skipped point (a few), to say which fields the points do have. */
  _sawFields(point) {
    if (this.fieldsSeen.size >= MAX_FIELDS_SEEN) return;
    for (const key of Object.keys(point)) {
      if (this.fieldsSeen.size >= MAX_FIELDS_SEEN) break;
      this.fieldsSeen.add(key.length > 40 ? `${key.slice(0, 39)}…` : key);
    }
  }

  /**
   * Why points were skipped, in words ("12 points skipped: no field 'step'; fields seen: a, b"), or ""
   * when none was. The view shows it in place of "Waiting for points" while nothing can be drawn.
   */
  skipSummary() {
    const s = this.settings;
    const w = this.why;
    const parts = [];
    const q = (name) => `'${name}'`;
    if (w.noX) parts.push(`${w.noX} without field ${q(s.x)}`);
    if (w.badX) parts.push(`${w.badX} whose ${q(s.x)} is not a ${this.xKind === "time" ? "time" : "number"}${s.logX ? " > 0" : ""}`);
    if (w.noY) parts.push(`${w.noY} with no numeric ${s.y.map(q).join(" or ")}${s.logY ? " > 0" : ""}`);
    if (w.notObject) parts.push(`${w.notObject} not an object`);
    if (w.groups) parts.push(`${w.groups} beyond ${MAX_GROUPS} series of ${q(s.by)}`);
    const live = w.noX + w.badX + w.noY + w.notObject + w.groups;
    if (this.historySkipped) parts.push(`${this.historySkipped} skipped by the kernel before this view`);
    const total = live + this.historySkipped;
    if (!total) return "";
    let text = `${total.toLocaleString("en-US")} point${total === 1 ? "" : "s"} skipped: ${parts.join("; ")}`;
    if (this.fieldsSeen.size) text += `; fields seen: ${[...this.fieldsSeen].sort().join(", ")}`;
    return text;
  }

  /** Ingest decoded binary columns (the kernel's record, or `extend`); `keep(t, row)` filters rows. */
  addColumns(cols, keep = () => true) {
    if (this.xKind === null && cols.header.x_kind) {
      this.xKind = cols.header.x_kind === "time" ? "time" : "number";
      this.structure += 1;
    }
    const index = this.settings.y.map((name) => cols.fields.indexOf(name));
    let n = 0;
    let newest = -Infinity;
    for (let r = 0; r < cols.n; r++) {
      const t = cols.t[r];
      if (!keep(t, r)) continue;
      const p = this._rowPoint(cols, r, index);
      if (p === null || (this.rewoundKeys.size && this.rewoundKeys.has(pointKey(p)))) continue;
      this.pending.push(p);
      if (t > newest) newest = t;
      n += 1;
    }
    this.seeded += n;
    if (newest > this.seedUntil) this.seedUntil = newest;
    return n;
  }

  /** Row `r` of decoded columns as a buffered point `{x, g, v}`, or null when it has nothing to draw. */
  _rowPoint(cols, r, index) {
    const s = this.settings;
    const x = cols.x[r];
    if (!Number.isFinite(x) || (s.logX && x <= 0)) return null;
    const gap = s.missing === "gap" ? null : undefined;
    const v = new Array(index.length);
    let usable = 0;
    for (let i = 0; i < index.length; i++) {
      const y = index[i] < 0 ? MISSING : cols.ys[index[i]][r];
      if (y === MISSING) v[i] = undefined;
      else if (Number.isNaN(y) || !Number.isFinite(y) || (s.logY && y <= 0)) v[i] = gap;
      else {
        v[i] = y;
        usable += 1;
      }
    }
    if (!usable && !v.some((y) => y === null)) return null;
    const group = cols.g && cols.groups ? (cols.groups[cols.g[r]] ?? "") : "";
    return { x, g: group, v };
  }

  /**
   * The row of the kernel's record where this browser's live points begin, or -1 when the record does
   * not show them (yet). The kernel's receiver and this browser get a channel's events in the same
   * order (the server fans each one out in turn), so the first live points appear in the record as one
   * run: everything before it is what this browser missed, everything from it on arrived live.
   */
  _liveStartRow(cols) {
    const live = this.firstLive;
    if (!live.length) return -1;
    const index = this.settings.y.map((name) => cols.fields.indexOf(name));
    const from = this.liveFrom - MATCH_BACK_MS;
    const rows = [];
    const keys = [];
    for (let r = 0; r < cols.n; r++) {
      if (cols.t[r] < from) continue;
      const p = this._rowPoint(cols, r, index);
      if (p === null) continue;
      rows.push(r);
      keys.push(pointKey(p));
    }
    for (let i = 0; i < keys.length; i++) {
      const m = Math.min(live.length, keys.length - i);
      let k = 0;
      while (k < m && keys[i + k] === live[k]) k += 1;
      if (k === m) return rows[i];
    }
    return -1;
  }

  /**
   * Take the kernel's record (`_backfill`): the points it holds that this browser has not seen, i.e.
   * newer than what was taken before and older than this browser's live start.
   */
  seedBackfill() {
    const cols = decodeColumns(this.model.get("_backfill"));
    if (!cols || cols.n === 0) return;
    this.tookRecord = true;
    const since = this.seedUntil;
    // Where the live points begin in the record, when it shows them: exactly what was missed. Else (no
    // live point yet, or not recorded yet) a time bound, with a margin for events still on their way.
    const start = this.liveFrom === null ? -1 : this._liveStartRow(cols);
    let keep;
    if (start >= 0) keep = (t, r) => t > since && r < start;
    else {
      const until = this.liveFrom === null ? Infinity : this.liveFrom - LIVE_MARGIN_MS;
      keep = (t) => t > since && t < until;
    }
    const n = this.addColumns(cols, keep);
    // The record includes these extend() calls: their `points` messages, if still on the way, repeat it.
    this.extendsApplied = Math.max(this.extendsApplied, Number(cols.header.extends) || 0);
    if (this.liveFrom === null) {
      this.historySkipped = Number(cols.header.skipped) || 0;
      this.historyBad = Number(cols.header.bad) || 0;
    }
    if (n) this.emit("change");
  }

  _onCustom(msg, buffers) {
    if (!msg || msg.type !== "points") return;
    const seq = Number(msg.seq) || 0;
    if (!msg.reset && seq && seq <= this.extendsApplied) return; // the record had it already
    if (msg.reset) {
      this.reset();
      this.structure += 1;
    }
    const cols = decodeColumns(buffers?.[0]);
    if (cols) this.addColumns(cols);
    if (seq) this.extendsApplied = Math.max(this.extendsApplied, seq);
    this.emit("change");
  }

  /** Skipped points and bad values, the kernel's history included. */
  get problems() {
    return this.skipped + this.bad + this.historySkipped + this.historyBad;
  }

  get size() {
    return this.xs.length;
  }

  /** Points per second received live over the last few seconds. */
  rate(now = this.now()) {
    return this.meter.rate(now);
  }

  _seriesFor(group) {
    let list = this.groups.get(group);
    if (list) return list;
    const { y, by } = this.settings;
    list = [];
    const n = this.xs.length;
    y.forEach((name, fi) => {
      let label = name;
      if (by !== null) label = y.length > 1 ? `${group} · ${name}` : group;
      const values = new Array(n).fill(undefined);
      const series = { key: `${group}\u0000${name}`, label, group, field: name, fi, values };
      list.push(series);
      this.series.push(series);
    });
    this.groups.set(group, list);
    this.structure += 1;
    return list;
  }

  /**
   * Merge the buffered points into the columns (sorted by x; equal x keep arrival order) and trim to
   * the window. Cheap when nothing is buffered; returns whether the columns changed.
   */
  flush() {
    const rows = this.pending;
    const before = this.version;
    if (rows.length) {
      this.pending = [];
      for (const row of rows) if (!this.groups.has(row.g)) this._seriesFor(row.g);
      this._newGroups.clear();
      let sorted = true;
      for (let i = 1; i < rows.length; i++) {
        if (rows[i].x < rows[i - 1].x) {
          sorted = false;
          break;
        }
      }
      if (!sorted) rows.sort((a, b) => a.x - b.x); // stable: equal x keep arrival order
      const xs = this.xs;
      if (xs.length === 0 || rows[0].x >= xs[xs.length - 1]) this._append(rows);
      else this._merge(rows);
      const last = this.xs[this.xs.length - 1];
      if (this.latestX === null || last > this.latestX) this.latestX = last;
      this.version += 1;
    }
    if (this._trim()) this.version += 1;
    return this.version !== before;
  }

  _append(rows) {
    const xs = this.xs;
    const series = this.series;
    for (const row of rows) {
      xs.push(row.x);
      for (const s of series) s.values.push(s.group === row.g ? row.v[s.fi] : undefined);
    }
  }

  _merge(rows) {
    // Only the part of the columns after the first new x moves: O(tail + new), not O(window).
    const start = bisect(this.xs, rows[0].x, true);
    const tailX = this.xs.splice(start);
    const tails = this.series.map((s) => s.values.splice(start));
    const xs = this.xs;
    const series = this.series;
    let i = 0;
    let j = 0;
    while (i < tailX.length || j < rows.length) {
      if (j >= rows.length || (i < tailX.length && tailX[i] <= rows[j].x)) {
        xs.push(tailX[i]);
        for (let k = 0; k < series.length; k++) series[k].values.push(tails[k][i]);
        i += 1;
      } else {
        const row = rows[j];
        xs.push(row.x);
        for (const s of series) s.values.push(s.group === row.g ? row.v[s.fi] : undefined);
        j += 1;
      }
    }
  }

  _trim() {
    const { windowPoints, windowSpan, maxPoints } = this.settings;
    const xs = this.xs;
    const n = xs.length;
    if (n === 0) return false;
    let drop = 0;
    const cap = windowPoints > 0 ? Math.min(windowPoints, maxPoints) : maxPoints;
    if (n > cap) drop = n - cap;
    if (windowSpan > 0) drop = Math.max(drop, bisect(xs, xs[n - 1] - windowSpan, false));
    if (drop <= 0) return false;
    xs.splice(0, drop);
    for (const s of this.series) s.values.splice(0, drop);
    this.trimmed += drop;
    return true;
  }

  /** uPlot's aligned data: `[xs, ...one array per series]` (the live arrays: do not change them). */
  data() {
    return [this.xs, ...this.series.map((s) => s.values)];
  }
}

/** A point's identity for matching live points against the kernel's record. */
function pointKey(p) {
  return `${p.x}\u0001${p.g}\u0001${p.v.join("\u0002")}`;
}

function groupName(v) {
  if (v === undefined || v === null) return "(none)";
  // Bounded, and never throws (JSON.stringify does on data nested thousands deep): it names a series.
  return labelText(v, GROUP_CHARS);
}

/** The model-level part of a LiveChart (the body of `initialize`). */
export function initializeChart(model, conn, deps) {
  const store = new ChartStore(model, conn, deps).start();
  return { conn, store, close: () => store.close() };
}

// ------------------------------------------------------------------------------------------ view

const KERNEL_LABELS = { disabled: "not recording" };

function readLimits(value) {
  if (!Array.isArray(value) || value.length !== 2) return null;
  const lo = toNumber(value[0]);
  const hi = toNumber(value[1]);
  if (lo === null && hi === null) return null;
  return [lo, hi];
}

function withAlpha(color, alpha) {
  const m = /^#([0-9a-f]{6})$/i.exec(color);
  if (!m) return color;
  const n = Number.parseInt(m[1], 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

function formatNumber(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
  return String(Number(v.toPrecision(6)));
}

/** One view of a LiveChart: uPlot in `el`, redrawn on animation frames; `destroy()` undoes everything. */
export class ChartView extends ViewBase {
  constructor(model, el, session, deps = {}) {
    super(model, el, session, deps);
    this.uPlot = deps.uPlot || uPlotDefault;
    const win = this.win;
    this.ResizeObserver = deps.ResizeObserver === undefined ? win.ResizeObserver : deps.ResizeObserver;
    this.MutationObserver = deps.MutationObserver === undefined ? win.MutationObserver : deps.MutationObserver;
    this.plot = null;
    this.built = { structure: -1, version: -1, options: -1, width: 0 };
    this.optionsVersion = 0; // bumped when a trait that shapes the plot changes
    this.paused = false;
    this.pausedAt = 0; // store.received when paused
    this.zoomed = false; // the last mouse-up ended a zoom or a pan: not a click that resumes
    this.paints = 0; // redraws with new data (for tests and benchmarks)
    this.paintMs = 0; // how long the last of them took (flush + setData), ms
  }

  mount() {
    const { doc } = this;
    const root = (this.root = h(doc, "div", "lw-chart"));
    const header = h(doc, "div", "lw-header");
    this.stateEl = h(doc, "span", "lw-state");
    this.stateEl.append(h(doc, "span", "lw-dot"), (this.stateText = h(doc, "span", "lw-state-text")));
    this.stateEl.title = "this browser's connection to Pusher";
    this.titleEl = h(doc, "span", "lw-title");
    const stat = (cls, label, title) => {
      const box = h(doc, "span", "lw-stat");
      const value = h(doc, "span", cls, "0");
      box.append(value, h(doc, "span", "lw-label", label));
      box.title = title;
      return [box, value];
    };
    const [pointsBox, points] = stat("lw-chart-points", "points", "points in the window shown");
    this.pointsLabelEl = pointsBox.lastChild;
    const [rateBox, rate] = stat("lw-rate", "/s", "points per second received by this browser (last 5 s)");
    this.pointsEl = points;
    this.rateEl = rate;
    this.skippedEl = h(doc, "span", "lw-chart-skipped");
    this.skippedEl.hidden = true;
    this.pauseEl = h(doc, "button", "lw-chart-resume");
    this.pauseEl.type = "button";
    this.pauseEl.hidden = true;
    this.pauseEl.title = "the view is paused while you zoom or pan; click to follow the live data again";
    this.kernelEl = h(doc, "span", "lw-kernel-status");
    this.kernelEl.title = "the kernel's receiver, which records points for Python (chart.df)";
    header.append(
      this.stateEl,
      this.titleEl,
      h(doc, "span", "lw-spacer"),
      this.pauseEl,
      this.skippedEl,
      pointsBox,
      rateBox,
      this.kernelEl,
    );
    this.errorEl = h(doc, "div", "lw-error");
    this.errorEl.setAttribute("role", "alert");
    this.errorEl.hidden = true;
    this.plotEl = h(doc, "div", "lw-chart-plot");
    this.emptyEl = h(doc, "div", "lw-chart-empty");
    this.plotEl.append(this.emptyEl);
    this.hintEl = h(doc, "div", "lw-chart-hint", "drag: zoom · shift+drag: pan · click or double-click: back to live · legend: show/hide");
    root.append(header, this.errorEl, this.plotEl, this.hintEl);
    this.el.append(root);

    this._listen(this.pauseEl, "click", () => this.resume());
    this._unbind.push(this.store.on("change", this.schedule), this.conn.on("change", this.schedule));
    for (const name of ["status", "error", "count", "title", "channels"]) {
      this._onModel(`change:${name}`, this.schedule);
    }
    const reshape = () => {
      this.optionsVersion += 1;
      this.schedule();
    };
    for (const name of ["kind", "x_label", "y_label", "log_x", "log_y", "xlim", "ylim", "height", "colors"]) {
      this._onModel(`change:${name}`, reshape);
    }
    const timer = this.setInterval(this.schedule, RATE_REFRESH_MS);
    this._unbind.push(() => this.clearInterval(timer));
    if (this.ResizeObserver) {
      const ro = new this.ResizeObserver(() => this.schedule());
      ro.observe(this.plotEl);
      this._unbind.push(() => ro.disconnect());
    }
    // JupyterLab's theme: body[data-jp-theme-light] changes; elsewhere the OS colour scheme.
    if (this.MutationObserver && this.doc.body) {
      const mo = new this.MutationObserver(() => reshape());
      mo.observe(this.doc.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name"] });
      this._unbind.push(() => mo.disconnect());
    }
    const mq = this.win.matchMedia?.("(prefers-color-scheme: dark)");
    if (mq?.addEventListener) {
      mq.addEventListener("change", reshape);
      this._unbind.push(() => mq.removeEventListener("change", reshape));
    }
    this.paint();
    return this;
  }

  /** Stop following the live data (a zoom or a pan); the store keeps receiving. */
  pause() {
    if (this.paused) return;
    this.paused = true;
    this.pausedAt = this.store.received + this.store.seeded;
    this.schedule();
  }

  /** Follow the live data again, with the x range back to automatic. */
  resume() {
    if (!this.paused) return;
    this.paused = false;
    this.built.version = -1;
    if (this.plot) {
      this.plot.setData(this.store.data(), true);
    }
    this.schedule();
  }

  /** Bring the chart up to date (one animation frame). */
  paint() {
    this.frame = null;
    if (this.destroyed) return;
    const started = performance.now();
    const { store } = this;
    store.flush();
    this._paintHeader();
    const n = store.size;
    const waiting = n === 0 && !this.plot;
    if (waiting) {
      const channels = (this.model.get("channels") || []).join(", ");
      // Points that arrive but cannot be drawn: say why, not "Waiting" (which reads as "nothing came").
      const why = store.skipSummary();
      this._text("empty", this.emptyEl, why ? `Nothing to draw yet: ${why}.` : `Waiting for points on ${channels || "no channel"}…`);
      this._attr(this.emptyEl, "data-skipped", why ? "true" : null);
    }
    this.emptyEl.hidden = !waiting;
    const width = Math.floor(this.plotEl.clientWidth || this.plotEl.getBoundingClientRect?.().width || 0);
    if (n > 0 || this.plot) {
      const b = this.built;
      const shape = b.structure !== store.structure || b.options !== this.optionsVersion;
      if (!this.plot || shape) {
        this._build(width || 600);
      } else if (width > 0 && width !== b.width) {
        this.plot.setSize({ width, height: this._plotHeight() });
        b.width = width;
      }
      if (!this.paused && b.version !== store.version) {
        this.plot.setData(store.data(), true);
        b.version = store.version;
        this.paints += 1;
        this.paintMs = performance.now() - started;
      }
    }
    this._paintStats();
  }

  _plotHeight() {
    const hgt = Number(this.model.get("height"));
    return Number.isFinite(hgt) && hgt >= 120 ? hgt : 320;
  }

  _colors() {
    const style = this.win.getComputedStyle?.(this.root);
    const v = (name, fallback) => style?.getPropertyValue(name)?.trim() || fallback;
    const isLight = this.doc.body?.dataset?.jpThemeLight;
    const dark =
      isLight !== undefined ? isLight === "false" : Boolean(this.win.matchMedia?.("(prefers-color-scheme: dark)")?.matches);
    const custom = this.model.get("colors");
    const palette = Array.isArray(custom) && custom.length ? custom.map(String) : PALETTES[dark ? "dark" : "light"];
    return {
      dark,
      palette,
      fg: v("--lw-fg1", dark ? "rgba(255,255,255,0.87)" : "rgba(0,0,0,0.87)"),
      fg2: v("--lw-fg2", dark ? "rgba(255,255,255,0.54)" : "rgba(0,0,0,0.54)"),
      grid: v("--lw-grid", dark ? "rgba(255,255,255,0.09)" : "rgba(0,0,0,0.08)"),
      font: v("--lw-ui", "system-ui, sans-serif"),
    };
  }

  _seriesOptions(s, i, colors) {
    const kind = this.model.get("kind") || "line";
    const color = colors.palette[i % colors.palette.length];
    const paths = this.uPlot.paths || {};
    const base = {
      label: s.label,
      stroke: color,
      width: 1.5,
      spanGaps: false,
      value: (_u, v) => formatNumber(v),
      points: { show: false },
    };
    switch (kind) {
      case "scatter":
        return { ...base, paths: () => null, points: { show: true, size: 4, width: 0, fill: color, stroke: color, space: 0 } };
      case "area":
        return { ...base, fill: withAlpha(color, colors.dark ? 0.22 : 0.15) };
      case "bar":
        return {
          ...base,
          width: 0,
          fill: withAlpha(color, 0.75),
          paths: paths.bars ? paths.bars({ size: [0.7, 60], align: 0 }) : undefined,
        };
      case "step":
        return { ...base, paths: paths.stepped ? paths.stepped({ align: 1 }) : undefined };
      default:
        return base;
    }
  }

  /** A scale's range: fixed limits where given, else the data's (padded unless `pad` is false). */
  _range(limits, log, pad = true) {
    return (u, min, max) => {
      let lo = min;
      let hi = max;
      if (lo === null || hi === null || lo === undefined || hi === undefined) {
        lo = limits?.[0] ?? 0;
        hi = limits?.[1] ?? 1;
      } else if (!pad) {
        // x follows the data edge to edge
      } else if (this.uPlot.rangeNum && !log) {
        [lo, hi] = this.uPlot.rangeNum(min, max, 0.05, true);
      } else if (this.uPlot.rangeLog && log) {
        [lo, hi] = this.uPlot.rangeLog(min, max, 10, true);
      }
      if (limits?.[0] !== null && limits?.[0] !== undefined) lo = limits[0];
      if (limits?.[1] !== null && limits?.[1] !== undefined) hi = limits[1];
      if (!(hi > lo)) hi = lo + 1;
      return [lo, hi];
    };
  }

  _build(width) {
    const { store, model } = this;
    const colors = this._colors();
    const time = store.xKind === "time";
    const xlim = readLimits(model.get("xlim"));
    const ylim = readLimits(model.get("ylim"));
    const logX = Boolean(model.get("log_x"));
    const logY = Boolean(model.get("log_y"));
    const font = `11px ${colors.font}`;
    const axis = (label) => ({
      stroke: colors.fg2,
      font,
      labelFont: `600 12px ${colors.font}`,
      label: label || undefined,
      labelSize: label ? 22 : 0,
      grid: { stroke: colors.grid, width: 1 },
      ticks: { stroke: colors.grid, width: 1, size: 4 },
    });
    const xAxis = { ...axis(model.get("x_label") || ""), size: time ? 44 : 30, labelGap: 0 };
    const yAxis = { ...axis(model.get("y_label") || ""), size: 56 };
    const kind = model.get("kind") || "line";
    const xScale = { time, range: this._range(xlim, logX, kind === "bar") };
    if (logX) Object.assign(xScale, { distr: 3, log: 10 });
    const yScale = { range: this._range(ylim, logY) };
    if (logY) Object.assign(yScale, { distr: 3, log: 10 });
    if (xlim && xlim[0] !== null && xlim[1] !== null) xScale.auto = false;
    const xName = model.get("x") || "time";
    const opts = {
      width,
      height: this._plotHeight(),
      pxAlign: 0,
      scales: { x: xScale, y: yScale },
      axes: [xAxis, yAxis],
      series: [
        {
          label: xName,
          value: time
            ? (_u, v) => (v === null || v === undefined ? "–" : new Date(v * 1000).toLocaleString())
            : (_u, v) => formatNumber(v),
        },
        ...store.series.map((s, i) => this._seriesOptions(s, i, colors)),
      ],
      legend: { show: true, live: true },
      cursor: {
        drag: { x: true, y: false, setScale: true },
        points: { size: 7 },
        bind: { mousedown: (u, targ, handler) => (e) => this._mouseDown(u, e, handler) },
      },
      hooks: {
        setSelect: [
          (u) => {
            if (u.select.width > 0) {
              this.zoomed = true;
              this.pause();
            }
          },
        ],
      },
    };
    if (this.plot) this.plot.destroy();
    const data = store.data();
    this.plot = new this.uPlot(opts, data, this.plotEl);
    this._bindOver(this.plot);
    Object.assign(this.built, {
      structure: store.structure,
      options: this.optionsVersion,
      version: store.version,
      width,
    });
    this.paints += 1;
    if (this.paused) this.paused = false; // a rebuilt plot starts live
  }

  _bindOver(plot) {
    const over = plot.over;
    if (!over?.addEventListener) return;
    const onClick = () => {
      if (this.zoomed) {
        this.zoomed = false;
        return;
      }
      if (this.paused) this.resume();
    };
    const onDbl = () => {
      this.zoomed = false;
      if (this.paused) this.resume();
    };
    over.addEventListener("click", onClick);
    over.addEventListener("dblclick", onDbl);
  }

  /** uPlot's mousedown: shift+drag pans (and pauses); a plain drag selects a range to zoom into. */
  _mouseDown(u, e, handler) {
    if (e.button !== 0) return null;
    if (!e.shiftKey) {
      this.zoomed = false;
      handler(e);
      return null;
    }
    e.preventDefault();
    const { min, max } = u.scales.x;
    if (min === null || max === null || min === undefined) return null;
    const startX = e.clientX;
    const plotWidth = u.bbox.width / (this.win.devicePixelRatio || 1) || 1;
    const doc = this.doc;
    const move = (ev) => {
      const dx = ((ev.clientX - startX) / plotWidth) * (max - min);
      if (dx === 0) return;
      this.zoomed = true;
      this.pause();
      u.setScale("x", { min: min - dx, max: max - dx });
    };
    const up = () => {
      doc.removeEventListener("mousemove", move);
      doc.removeEventListener("mouseup", up);
    };
    doc.addEventListener("mousemove", move);
    doc.addEventListener("mouseup", up);
    return null;
  }

  _paintHeader() {
    const { conn, model } = this;
    this._attr(this.stateEl, "data-state", conn.state);
    this._text("state", this.stateText, stateLabel(conn));
    this._attr(this.stateEl, "title", historyTitle(conn) || null);
    this._text("title", this.titleEl, model.get("title") || "");
    const status = model.get("status") || "";
    this._attr(this.kernelEl, "data-state", status);
    this._text("kernel", this.kernelEl, `kernel ${KERNEL_LABELS[status] || status}`);
    const errors = [];
    const kernelError = model.get("error");
    if (kernelError) errors.push(`kernel: ${kernelError}`);
    if (conn.error) errors.push(`browser: ${conn.error}`);
    for (const [name, info] of conn.channels) if (info.error) errors.push(`${name}: ${info.error}`);
    const errorText = errors.join("\n");
    this._text("error", this.errorEl, errorText);
    this.errorEl.hidden = !errorText;
  }

  _paintStats() {
    const { store, root } = this;
    const n = store.size;
    this._text("points", this.pointsEl, n.toLocaleString("en-US"));
    this._text("pointsLabel", this.pointsLabelEl, n === 1 ? "point" : "points");
    this._text("rate", this.rateEl, formatRate(store.rate(this.now())));
    const problems = store.problems;
    this.skippedEl.hidden = problems === 0;
    if (problems > 0) {
      this._text("skipped", this.skippedEl, `${problems.toLocaleString("en-US")} skipped`);
      const parts = [];
      const pts = store.skipped + store.historySkipped;
      const bad = store.bad + store.historyBad;
      const why = store.skipSummary();
      if (why) parts.push(why);
      else if (pts) parts.push(`${pts} point${pts === 1 ? "" : "s"} without a usable x or y were skipped`);
      if (bad) parts.push(`${bad} value${bad === 1 ? "" : "s"} (null, NaN, not a number) shown as gaps`);
      this.skippedEl.title = parts.join("; ");
    }
    this.pauseEl.hidden = !this.paused;
    if (this.paused) {
      const behind = store.received + store.seeded - this.pausedAt;
      this._text("paused", this.pauseEl, behind > 0 ? `⏸ paused · ${behind.toLocaleString("en-US")} new · resume` : "⏸ paused · resume");
    }
    this._attr(root, "data-points", String(n));
    this._attr(root, "data-received", String(store.received));
    this._attr(root, "data-seeded", String(store.seeded));
    this._attr(root, "data-skipped", String(problems));
    this._attr(root, "data-series", String(store.series.length));
    this._attr(root, "data-paused", String(this.paused));
    this._attr(root, "data-x-kind", store.xKind || "");
    this._attr(root, "data-latest-x", store.latestX === null ? "" : String(store.latestX));
    this._attr(root, "data-paints", String(this.paints));
    this._attr(root, "data-paint-ms", this.paintMs.toFixed(1));
    if (this.el.dataset) this.el.dataset.lwPoints = String(n);
  }

  destroy() {
    super.destroy();
    this.plot?.destroy();
    this.plot = null;
  }
}

/** Paint a LiveChart into `el` (the body of `render`); returns the cleanup. */
export function renderChart(model, el, session, deps) {
  const view = new ChartView(model, el, session, deps).mount();
  return () => view.destroy();
}
