// Feed: a live "debug console" for Pusher channels (the Feed widget, `_kind == "feed"`).
//
// `FeedStore` is model-level (made in `initialize`): the log of recent events, seeded from the kernel's
// `_history` and then fed by the browser's own connection, with counts and a rate. `FeedView` is one
// view (made in `render`): it only paints the store, at most once per animation frame, so thousands of
// events per second cost a few DOM updates per frame, and never writes event data as HTML.

import {
  dataPretty,
  dataText,
  decodeJsonLines,
  formatJson,
  formatRate,
  formatTime,
  h,
  labelText,
  plural,
  RateMeter,
  RingBuffer,
  StoreBase,
  stateLabel,
  historyTitle,
  truncate,
  ViewBase,
} from "./util.js";

export const MAX_DOM_ROWS = 200; // rows a view keeps in the DOM (the store keeps `max_log`)
export const FLOOD_ROWS_PER_FRAME = 20; // more new rows than this in one frame: a flood
export const FLOOD_LOG_FPS = 5; // log repaints per second during a flood
const PREVIEW_CHARS = 240; // data shown in a collapsed row
const TITLE_CHARS = 4000; // data in a row's tooltip
const RATE_REFRESH_MS = 500; // repaint the rate while no event arrives, so it decays to 0

function maxLog(model) {
  const n = Number(model.get("max_log"));
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : 500;
}

const LIVE_KEYS = 32; // first live events remembered, to find where they begin in the kernel's history
const KEY_CHARS = 4000; // data in a row's identity (rowKey)

/** An event's identity for matching live events against the kernel's history. */
function rowKey(row) {
  // Bounded text, not JSON.stringify: data nested thousands deep would throw (and a huge value cost).
  return `${row.channel}\u0001${row.event}\u0001${formatJson(row.data ?? null, { maxChars: KEY_CHARS })}`;
}

/** A row's position in its channel (servers with history): the same event has the same key everywhere. */
function positionKey(row) {
  return `${row.channel}\u0001${row.stream_id}\u0001${row.serial}`;
}

/** The index in `rows` where the live events (`live`: their keys, in order) begin, or -1. */
function liveStart(rows, live) {
  if (!live.length) return -1;
  const keys = rows.map(rowKey);
  for (let i = 0; i < keys.length; i++) {
    const m = Math.min(live.length, keys.length - i);
    let k = 0;
    while (k < m && keys[i + k] === live[k]) k += 1;
    if (k === m) return i;
  }
  return -1;
}

// --- Rows of packed events and log levels (issue 16) -------------------------------------------------
// An event whose data is a non-empty array of objects (points packed by `livewidget.points`, records by
// `livewidget.LogHandler`) is one row per object, as in the kernel's `feed.df` and `_history`
// (livewidget/widgets/_base.py `unpack`: keep the two rules the same).

/** The log rows of one live event. */
export function unpackRows(event) {
  const { data } = event;
  if (!Array.isArray(data) || data.length === 0) return [event];
  for (const item of data) if (item === null || typeof item !== "object" || Array.isArray(item)) return [event];
  return data.map((item) => ({ ...event, data: item }));
}

/** A row's log level (`data.level` of a LogHandler record), lower case, or "". */
export function rowLevel(row) {
  const level = row.data !== null && typeof row.data === "object" ? row.data.level : undefined;
  return typeof level === "string" ? level.toLowerCase().slice(0, 20) : "";
}
// --- end of issue 16's part ----------------------------------------------------------------------------

/** The model-level state of a Feed: the event log, counts and rate. Emits `"change"`. */
export class FeedStore extends StoreBase {
  /**
   * @param {object} model  the anywidget model
   * @param {import("./connection.js").Connection} conn  the model's connection (emits "event")
   * @param {object} deps  `{now?}`
   */
  constructor(model, conn, deps = {}) {
    super(model, conn, deps);
    this.log = new RingBuffer(maxLog(model));
    this.meter = new RateMeter();
    this.received = 0; // live events accepted (after event_filter) since the start
    this.seeded = 0; // rows taken from the kernel's history
    this.generation = 0; // bumped when rows are replaced or removed, not when one is appended
    this.liveSince = null; // receive time of the first live event
    this.firstLive = []; // keys of the first live events (rowKey), at most LIVE_KEYS
    this.historyUntil = Number.NEGATIVE_INFINITY; // kernel time of the newest history row taken
    this._seededAt = new Set(); // positions (positionKey) of the rows taken from `_history`
    this._seq = 0;
    this._filter = new Set();
  }

  start() {
    const on = (event, fn) => this._onModel(event, fn);
    this._readFilter();
    on("change:event_filter", () => this._filterChanged());
    on("change:max_log", () => this._resize());
    on("change:_history", () => this.seedHistory());
    this._unbind.push(this.conn.on("event", (row) => this.add(row)));
    this.seedHistory();
    return this;
  }

  /** Whether `event` passes `event_filter` (empty: everything but pusher-internal events). */
  accepts(event) {
    if (event.startsWith("pusher:") || event.startsWith("pusher_internal:")) return false;
    return this._filter.size === 0 || this._filter.has(event);
  }

  /**
   * An event from the connection: `{t, channel, event, data, user_id}`, with `serial`/`stream_id` and
   * `history`/`rewound` for those the server's channel history replayed. The first live row after
   * history rows carries `liveStart` (the view marks where history ends and live begins).
   */
  add(event) {
    if (!this.accepts(event.event)) return;
    // replayed by the server's rewind, and already shown from the kernel's `_history`: the same position
    if (event.serial !== undefined && this._seededAt.has(positionKey(event))) return;
    let after = this.log.newest(0)?.history === true;
    for (const row of unpackRows(event)) {
      if (after && !row.history) row.liveStart = true;
      after = row.history === true;
      row.seq = ++this._seq;
      this.log.push(row);
      if (this.firstLive.length < LIVE_KEYS) this.firstLive.push(rowKey(row));
    }
    this.received += 1;
    this.meter.add(event.t);
    if (this.liveSince === null) this.liveSince = event.t;
    this.emit("change");
  }

  /**
   * Seed the log from `_history` (JSON lines written by the kernel). Before the first live event it
   * replaces the log. After it, a refreshed history only fills the gap: the events sent while this
   * browser was subscribing, which the kernel heard and this browser did not. The kernel and this
   * browser get each channel's events in the same order, so the first live events appear in the
   * history as one run; what comes before it and after the rows taken so far is the gap.
   */
  seedHistory() {
    const rows = [];
    for (const item of decodeJsonLines(this.model.get("_history"))) {
      const t = Number(item.t);
      if (!Number.isFinite(t) || typeof item.event !== "string" || !this.accepts(item.event)) continue;
      rows.push({
        t,
        channel: labelText(item.channel, 200),
        event: item.event,
        data: item.data,
        user_id: item.user_id === undefined || item.user_id === null ? null : labelText(item.user_id, 200),
        history: true,
        seq: 0,
      });
      if (Number.isInteger(item.serial) && typeof item.stream_id === "string") {
        rows[rows.length - 1].serial = item.serial;
        rows[rows.length - 1].stream_id = item.stream_id;
      }
    }
    if (this.liveSince === null) {
      if (rows.length === 0 && this.log.size === 0) return;
      for (const row of rows) row.seq = ++this._seq;
      this.log.reset(rows);
      this._seededAt = new Set(rows.filter((r) => r.serial !== undefined).map(positionKey));
      this.seeded = Math.min(rows.length, this.log.capacity);
      this.historyUntil = rows.length ? rows[rows.length - 1].t : this.historyUntil;
      this.generation += 1;
      this.emit("change");
      return;
    }
    const start = liveStart(rows, this.firstLive);
    if (start < 0) return; // the history does not show the live events yet: a later refresh will
    // rows this view has already (the server's rewind replayed them too): the same position
    const have = new Set();
    for (const row of this.log.toArray()) if (row.serial !== undefined) have.add(positionKey(row));
    const missed = rows
      .slice(0, start)
      .filter((row) => row.t > this.historyUntil && (row.serial === undefined || !have.has(positionKey(row))));
    if (missed.length === 0) return;
    this.historyUntil = missed[missed.length - 1].t;
    const all = this.log.toArray();
    const firstLive = all.findIndex((row) => !row.history || row.rewound); // rewound: this view's own
    const at = firstLive < 0 ? all.length : firstLive;
    const merged = [...all.slice(0, at), ...missed, ...all.slice(at)];
    for (const row of missed) if (row.serial !== undefined) this._seededAt.add(positionKey(row));
    for (const row of merged) row.seq = ++this._seq; // the log's order, renumbered
    this.log.reset(merged);
    this.seeded += missed.length;
    this.generation += 1;
    this.emit("change");
  }

  /** Events per second received live over the last few seconds. */
  rate(now = this.now()) {
    return this.meter.rate(now);
  }

  _readFilter() {
    this._filter = new Set(this.model.get("event_filter") || []);
  }

  _filterChanged() {
    this._readFilter();
    this.log.retain((row) => this.accepts(row.event));
    this.generation += 1;
    this.emit("change");
  }

  _resize() {
    this.log.reset(this.log.toArray(), maxLog(this.model));
    this.generation += 1;
    this.emit("change");
  }
}

/**
 * The model-level part of a Feed (the body of `initialize`), on a connection not started yet, so the
 * store listens before the first event. Returns what `render` needs and `close`.
 */
export function initializeFeed(model, conn, deps) {
  const store = new FeedStore(model, conn, deps).start();
  return { conn, store, close: () => store.close() };
}

const KERNEL_LABELS = { disabled: "not recording" };

/** Lower-cased text of a row for the text filter (cached on the row: rows never change). */
function searchText(row) {
  if (row._search === undefined) row._search = `${row.channel}\n${row.event}\n${fullText(row)}`.toLowerCase();
  return row._search;
}

function fullText(row) {
  if (row._text === undefined) row._text = dataText(row.data);
  return row._text;
}

/** One view of a Feed. Paints on animation frames; `destroy()` removes every listener it added. */
export class FeedView extends ViewBase {
  constructor(model, el, session, deps = {}) {
    super(model, el, session, deps);
    this.query = "";
    this.built = { generation: -1, query: null, capacity: -1, topSeq: 0 };
    this.expanded = new WeakSet();
    this.rowOf = new WeakMap(); // row element -> row
    this.lastLogPaint = -Infinity;
    this.eager = deps.eager ?? true;
  }

  mount() {
    const { doc } = this;
    const root = (this.root = h(doc, "div", "lw-feed"));
    root.setAttribute("data-latest-t", "");

    const header = h(doc, "div", "lw-header");
    this.stateEl = h(doc, "span", "lw-state");
    this.stateEl.append(h(doc, "span", "lw-dot"), (this.stateText = h(doc, "span", "lw-state-text")));
    this.stateEl.title = "this browser's connection to Pusher";
    this.titleEl = h(doc, "span", "lw-title");
    this.kernelEl = h(doc, "span", "lw-kernel-status");
    this.kernelEl.title = "the kernel's receiver, which records events for Python (feed.df)";
    header.append(this.stateEl, this.titleEl, h(doc, "span", "lw-spacer"), this.kernelEl);

    this.channelsEl = h(doc, "div", "lw-channels");
    this.errorEl = h(doc, "div", "lw-error");
    this.errorEl.setAttribute("role", "alert");
    this.errorEl.hidden = true;

    const bar = h(doc, "div", "lw-toolbar");
    const stat = (cls, label, title) => {
      const box = h(doc, "span", "lw-stat");
      const value = h(doc, "span", cls, "0");
      box.append(value, h(doc, "span", "lw-label", label));
      box.title = title;
      return [box, value];
    };
    const [countBox, count] = stat("lw-count", "events", "events in this view");
    this.countBox = countBox;
    this.countLabelEl = countBox.lastChild;
    const [rateBox, rate] = stat("lw-rate", "/s", "events per second in this browser (last 5 s)");
    const [kcBox, kcount] = stat("lw-kernel-count", "recorded", "events recorded by the kernel (feed.df)");
    const [dropBox, dropped] = stat("lw-dropped", "dropped", "rows the kernel dropped (max_rows)");
    rate.textContent = "0.0";
    Object.assign(this, { countEl: count, rateEl: rate, kernelCountEl: kcount, droppedEl: dropped });
    this.dropBox = dropBox;
    const kernelGroup = h(doc, "span", "lw-kernel-stats");
    kernelGroup.append(h(doc, "span", "lw-label", "kernel"), kcBox, dropBox);
    this.filterEl = h(doc, "input", "lw-filter");
    this.filterEl.type = "search";
    this.filterEl.placeholder = "Filter channel, event, data";
    this.filterEl.setAttribute("aria-label", "filter the log");
    this.filterEl.spellcheck = false;
    bar.append(countBox, rateBox, kernelGroup, h(doc, "span", "lw-spacer"), this.filterEl);

    this.logEl = h(doc, "div", "lw-log");
    this.logEl.setAttribute("role", "log");
    this.emptyEl = h(doc, "div", "lw-empty");
    this.footerEl = h(doc, "div", "lw-footer");
    root.append(header, this.channelsEl, this.errorEl, bar, this.logEl, this.emptyEl, this.footerEl);
    this.el.append(root);

    this._listen(this.filterEl, "input", () => {
      this.query = this.filterEl.value.trim().toLowerCase();
      this.schedule();
    });
    this._listen(this.filterEl, "keydown", (e) => {
      if (e.key === "Escape" && this.filterEl.value) {
        this.filterEl.value = "";
        this.query = "";
        this.schedule();
      }
      e.stopPropagation(); // typing here must not drive notebook shortcuts (as ipywidgets' Text does)
    });
    this._listen(this.logEl, "click", (e) => this._toggle(e));

    this._unbind.push(this.store.on("change", this.schedule), this.conn.on("change", this.schedule));
    for (const name of ["status", "error", "count", "dropped", "title", "channels"]) {
      this._onModel(`change:${name}`, this.schedule);
    }
    const timer = this.setInterval(this.schedule, RATE_REFRESH_MS);
    this._unbind.push(() => this.clearInterval(timer));
    this.paint();
    return this;
  }

  /** Bring the DOM up to date with the store, the connection and the model (one animation frame). */
  paint() {
    this.frame = null;
    if (this.destroyed) return;
    this._paintHeader();
    // Under a flood the log cannot be read row by row anyway, and rebuilding up to MAX_DOM_ROWS rows
    // every frame costs as much DOM work as one row per event: repaint it at most FLOOD_LOG_FPS times a
    // second then (counters above still update every frame).
    const now = this.now();
    const pending = this.store.log.size ? this.store.log.newest(0).seq - this.built.topSeq : 0;
    if (pending > FLOOD_ROWS_PER_FRAME) {
      if (now - this.lastLogPaint < 1000 / FLOOD_LOG_FPS) {
        this.schedule();
        return;
      }
      this.lastLogPaint = now;
    } else {
      this.lastLogPaint = -Infinity;
    }
    this._paintLog();
  }

  _paintHeader() {
    const { conn, store, model } = this;
    this._attr(this.stateEl, "data-state", conn.state);
    this._text("state", this.stateText, stateLabel(conn));
    this._attr(this.stateEl, "title", historyTitle(conn) || null);
    this._text("title", this.titleEl, model.get("title") || "");
    const status = model.get("status") || "";
    this._attr(this.kernelEl, "data-state", status);
    this._text("kernel", this.kernelEl, `kernel ${KERNEL_LABELS[status] || status}`);

    const chips = [...conn.channels].map(([name, info]) => [name, info.state, info.members]);
    const chipKey = JSON.stringify(chips);
    if (this.texts.get("chips") !== chipKey) {
      this.texts.set("chips", chipKey);
      const frag = this.doc.createDocumentFragment();
      for (const [name, state, members] of chips) {
        const chip = h(this.doc, "span", "lw-chip", name);
        chip.setAttribute("data-channel", name);
        chip.setAttribute("data-state", state);
        chip.title = `${name}: ${state}`;
        if (members !== null && members !== undefined) {
          chip.append(h(this.doc, "span", "lw-members", String(members)));
          chip.title += ` (${members} member${members === 1 ? "" : "s"})`;
        }
        frag.append(chip);
      }
      this.channelsEl.replaceChildren(frag);
    }

    const errors = [];
    const kernelError = model.get("error");
    if (kernelError) errors.push(`kernel: ${kernelError}`);
    if (conn.error) errors.push(`browser: ${conn.error}`);
    for (const [name, info] of conn.channels) if (info.error) errors.push(`${name}: ${info.error}`);
    const errorText = errors.join("\n");
    this._text("error", this.errorEl, errorText);
    this.errorEl.hidden = !errorText;

    // Every event this view shows counts: those from the kernel's history as well as those received
    // live (a Feed restored from history showed its rows under "0 events").
    const events = store.received + store.seeded;
    this._text("count", this.countEl, String(events));
    this._text("countLabel", this.countLabelEl, events === 1 ? "event" : "events");
    const countTitle =
      `${plural(store.received, "event")} received live by this browser` +
      (store.seeded ? `, ${store.seeded} from the kernel's history` : "");
    if (this.countBox.title !== countTitle) this.countBox.title = countTitle;
    this._text("rate", this.rateEl, formatRate(store.rate(this.now())));
    this._text("kcount", this.kernelCountEl, String(model.get("count") ?? 0));
    const dropped = Number(model.get("dropped") ?? 0);
    this._text("dropped", this.droppedEl, String(dropped));
    this.dropBox.classList.toggle("lw-warn", dropped > 0);
  }

  _matches(row) {
    return !this.query || searchText(row).includes(this.query);
  }

  _paintLog() {
    const { store, built } = this;
    const log = store.log;
    const cap = Math.min(MAX_DOM_ROWS, log.capacity);
    const newest = log.newest(0);
    const rebuild =
      built.generation !== store.generation || built.query !== this.query || built.capacity !== cap;
    const fresh = [];
    for (let i = 0; i < log.size && fresh.length < cap; i++) {
      const row = log.newest(i);
      if (!rebuild && row.seq <= built.topSeq) break;
      if (this._matches(row)) fresh.push(row);
    }
    if (rebuild || fresh.length > 0) {
      const frag = this.doc.createDocumentFragment();
      for (const row of fresh) frag.append(this._safeRow(row));
      if (rebuild || fresh.length >= cap) {
        this.logEl.replaceChildren(frag);
      } else {
        this.logEl.insertBefore(frag, this.logEl.firstChild);
        while (this.logEl.childElementCount > cap) this.logEl.lastElementChild.remove();
      }
    }
    Object.assign(built, { generation: store.generation, query: this.query, capacity: cap });
    built.topSeq = newest ? newest.seq : 0;

    const shown = this.logEl.childElementCount;
    if (newest) {
      const latest = String(newest.t);
      this._attr(this.root, "data-latest-t", latest);
      if (this.el.dataset) this.el.dataset.lwLatest = latest;
    }
    let empty = "";
    if (shown === 0) {
      const channels = (this.model.get("channels") || []).join(", ");
      empty = this.query
        ? `No event in the log matches “${this.filterEl.value.trim()}”.`
        : `Waiting for events on ${channels || "no channel"}…`;
    }
    this._text("empty", this.emptyEl, empty);
    this.emptyEl.hidden = !empty;
    this.logEl.hidden = shown === 0;
    const footer =
      log.size === 0
        ? ""
        : `${shown} shown of ${log.size} in the log (max_log ${log.capacity})` +
          (store.seeded ? ` · ${store.seeded} from the kernel's history` : "") +
          " · click a row for its data";
    this._text("footer", this.footerEl, footer);
    this.footerEl.hidden = !footer;
  }

  /** `_row(row)`, or a row saying it could not be shown: one event never stops the log's repaints. */
  _safeRow(row) {
    try {
      return this._row(row);
    } catch (err) {
      console.error("livewidget: a Feed row could not be shown", err);
      const el = h(this.doc, "div", "lw-row lw-row-broken");
      el.append(h(this.doc, "span", "lw-time", formatTime(row.t)), h(this.doc, "span", "lw-data", "(this event could not be shown)"));
      return el;
    }
  }

  /** A log row. Every piece of event data goes through textContent or an attribute: it is untrusted. */
  _row(row) {
    const { doc } = this;
    const el = h(doc, "div", "lw-row");
    el.setAttribute("data-channel", row.channel);
    el.setAttribute("data-event", row.event);
    if (row.history) el.classList.add("lw-history");
    if (row.liveStart) {
      el.classList.add("lw-live-start"); // where history ends and live begins
      el.setAttribute("data-live-start", "live from here");
    }
    const level = rowLevel(row);
    if (level) el.setAttribute("data-level", level);
    const time = h(doc, "span", "lw-time", formatTime(row.t));
    if (row.rewound) time.title = "from the channel's history, replayed when this view subscribed";
    else if (row.history) time.title = "recorded by the kernel before this view connected";
    const channel = h(doc, "span", "lw-ch", row.channel);
    channel.title = row.channel;
    const event = h(doc, "span", "lw-ev", row.event);
    event.title = row.event;
    if (row.user_id !== null && row.user_id !== undefined && row.user_id !== "") {
      el.setAttribute("data-user-id", String(row.user_id));
      const user = h(doc, "span", "lw-user", String(row.user_id));
      user.title = `sent by user ${row.user_id}`;
      event.append(user);
    }
    const data = h(doc, "span", "lw-data");
    const text = fullText(row);
    data.title = truncate(text, TITLE_CHARS);
    el.append(time, channel, event, data);
    this.rowOf.set(el, row);
    this._fill(el, data, row, this.expanded.has(row));
    return el;
  }

  _fill(el, dataEl, row, open) {
    el.classList.toggle("lw-open", open);
    dataEl.textContent = open ? dataPretty(row.data) : truncate(fullText(row), PREVIEW_CHARS);
  }

  _toggle(e) {
    const sel = this.doc.defaultView?.getSelection?.();
    if (sel && String(sel)) return; // selecting text, not toggling
    const el = e.target?.closest?.(".lw-row");
    const row = el && this.rowOf.get(el);
    if (!row) return;
    const open = !this.expanded.has(row);
    if (open) this.expanded.add(row);
    else this.expanded.delete(row);
    this._fill(el, el.querySelector(".lw-data"), row, open);
  }
}

/** Paint a Feed into `el` (the body of `render`); returns the cleanup. */
export function renderFeed(model, el, session, deps) {
  const view = new FeedView(model, el, session, deps).mount();
  return () => view.destroy();
}
