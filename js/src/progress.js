// ProgressBoard: every job publishing `livewidget.progress()` on the channels, live (`_kind == "progress"`).
//
// `ProgressStore` is model-level (made in `initialize`): the latest state of each job, seeded from the
// kernel's `jobs` trait (so a board opened later shows the current states) and then fed by the
// browser's own pusher-js connection (event "progress"), which keeps working while the kernel is busy.
// It also raises the opt-in desktop notifications (once per job, batched). `ProgressView` is one view
// (made in `render`): it paints the store at most once per animation frame, one row per job, children
// of a parent under one aggregate row that expands. Job data is untrusted: text only, never HTML.
//
// The contract with Python is the docstring of livewidget/widgets/progress_board.py.

import { h, historyTitle, labelText, plural, stateLabel, StoreBase, ViewBase } from "./util.js";

export const EVENT = "progress";
export const FINISHED = new Set(["done", "failed", "cancelled"]);
const STATUSES = ["running", "done", "failed", "cancelled"];
const LIVE_GRACE_MS = 3000; // a job received live this recently survives a `jobs` trait that lacks it
const STALE_MS = 60_000; // a running job with no update for this long is shown as stale
const NOTIFY_BATCH_MS = 300; // notifications raised within this window are merged when there are many
const NOTIFY_MAX_SEPARATE = 3; // more than this at once: one summary notification
const TICK_MS = 1000; // repaint while jobs run, for staleness

// ------------------------------------------------------------------------------------------ formatting

const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);

/** tqdm's `format_sizeof`: 3 significant figures with an SI prefix (`divisor` 1000 or 1024). */
export function formatSizeof(value, divisor = 1000) {
  let n = value;
  for (const unit of ["", "k", "M", "G", "T", "P", "E", "Z"]) {
    if (Math.abs(n) < 999.5) {
      if (Math.abs(n) < 99.95) {
        if (Math.abs(n) < 9.995) return `${n.toFixed(2)}${unit}`;
        return `${n.toFixed(1)}${unit}`;
      }
      return `${n.toFixed(0)}${unit}`;
    }
    n /= divisor;
  }
  return `${n.toFixed(1)}Y`;
}

/** tqdm's `format_interval`: `MM:SS`, or `H:MM:SS` from an hour. */
export function formatInterval(seconds) {
  const s = num(seconds);
  if (s === null || s < 0) return "?";
  const whole = Math.floor(s);
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const sec = whole % 60;
  const two = (x) => String(x).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(sec)}` : `${two(m)}:${two(sec)}`;
}

/** A plain count as Python's str() would show it (integers whole, floats with a few decimals). */
function plain(n) {
  if (Number.isInteger(n)) return String(n);
  return String(Number(n.toPrecision(6)));
}

/**
 * How tqdm would show a state's numbers: `{n, total, rate, unit}` as text, and the fraction done.
 * `unit_scale` true → SI prefixes (`unit_divisor`); a number → n, total and rate multiplied by it.
 */
export function formatCounts(state) {
  let n = num(state.n) ?? 0;
  let total = num(state.total);
  let rate = num(state.rate);
  // A finished job or group has no current rate (a group's is the sum over running workers: none):
  // show its final, average one, as tqdm does when it closes.
  const elapsed = num(state.elapsed);
  if (FINISHED.has(state.status) && (rate === null || rate <= 0) && n > 0 && elapsed) rate = n / elapsed;
  const unit = typeof state.unit === "string" && state.unit ? state.unit : "it";
  let scale = state.unit_scale;
  const divisor = num(state.unit_divisor) || 1000;
  if (typeof scale === "number" && scale !== 1 && Number.isFinite(scale)) {
    n *= scale;
    if (total !== null) total *= scale;
    if (rate !== null) rate *= scale;
    scale = false;
  }
  const si = scale === true || scale === 1;
  const fmt = (v) => (si ? formatSizeof(v, divisor) : plain(v));
  const nText = fmt(n);
  const totalText = total === null ? "?" : fmt(total);
  let rateText;
  if (rate === null || rate <= 0) rateText = `?${unit}/s`;
  else if (si) rateText = `${formatSizeof(rate, divisor)}${unit}/s`;
  else if (rate < 1) rateText = `${(1 / rate).toFixed(2)}s/${unit}`;
  else rateText = `${rate.toFixed(2)}${unit}/s`;
  const fraction = total !== null && total > 0 ? Math.min(1, Math.max(0, n / total)) : null;
  return { n: nText, total: totalText, counts: `${nText}/${totalText}`, rate: rateText, fraction, unit };
}

/** `elapsed<remaining` as tqdm shows it (`00:12<00:30`); only the elapsed time once finished. */
export function formatTimes(state) {
  if (FINISHED.has(state.status)) return formatInterval(state.elapsed);
  const remaining = num(state.remaining);
  return `${formatInterval(state.elapsed)}<${remaining === null ? "?" : formatInterval(remaining)}`;
}

// ------------------------------------------------------------------------------------------ aggregation

/**
 * `{parent: aggregate}` over the jobs that have a parent: the same rules as the kernel's `aggregate()`
 * (livewidget/widgets/progress_board.py), so live updates need not wait for `_groups`.
 */
export function aggregate(jobs) {
  const children = new Map();
  for (const state of jobs.values()) {
    const parent = state.parent;
    if (typeof parent === "string" && parent) {
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(state);
    }
  }
  const out = new Map();
  for (const [parent, kids] of children) {
    const counts = { running: 0, done: 0, failed: 0, cancelled: 0 };
    for (const kid of kids) if (kid.status in counts) counts[kid.status] += 1;
    const n = kids.reduce((sum, kid) => sum + (num(kid.n) ?? 0), 0);
    const totals = kids.map((kid) => num(kid.total));
    const total = totals.some((t) => t === null) ? null : totals.reduce((a, b) => a + b, 0);
    const rates = kids.filter((kid) => kid.status === "running").map((kid) => num(kid.rate));
    const rate = rates.some((r) => r) ? rates.reduce((a, r) => a + (r || 0), 0) : null;
    const times = kids.map((kid) => num(kid.t) ?? 0);
    const starts = kids.map((kid, i) => times[i] - (num(kid.elapsed) ?? 0));
    let status = "done";
    if (counts.failed) status = "failed";
    else if (counts.running) status = "running";
    else if (counts.cancelled) status = "cancelled";
    let remaining = null;
    if (status === "done") remaining = 0;
    else if (rate && total !== null && total >= n) remaining = (total - n) / rate;
    const own = jobs.get(parent);
    out.set(parent, {
      parent,
      desc: (own && own.desc) || parent,
      jobs: kids.length,
      ...counts,
      n,
      total,
      status,
      rate,
      elapsed: Math.round((Math.max(...times) - Math.min(...starts)) * 1000) / 1000,
      remaining,
      hosts: [...new Set(kids.map((kid) => kid.host).filter(Boolean).map(String))].sort(),
      updated: Math.max(...times),
      // for display: the units and scaling of the children when they agree
      unit: kids[0].unit,
      unit_scale: kids.every((kid) => kid.unit_scale === kids[0].unit_scale) ? kids[0].unit_scale : false,
      unit_divisor: kids[0].unit_divisor,
      errors: kids.filter((kid) => kid.status === "failed" && kid.error).map((kid) => String(kid.error)),
    });
  }
  return out;
}

/** When a job started (epoch s), for a stable order: `t - elapsed`. */
function startOf(state) {
  return (num(state.t) ?? 0) - (num(state.elapsed) ?? 0);
}

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

/** Jobs by description, numbers in order, then by id. */
function byName(a, b) {
  return collator.compare(String(a.desc || a.job), String(b.desc || b.job)) || (a.job < b.job ? -1 : a.job > b.job ? 1 : 0);
}

/** A job's state from event data (an object, or its JSON text), or null when it is not one. */
function parseState(data) {
  let value = data;
  if (typeof value === "string") {
    try {
      value = JSON.parse(value);
    } catch {
      return null;
    }
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) return null;
  if (typeof value.job !== "string" || !value.job) return null;
  const state = { ...value };
  // Text a job shows, bounded and made text here once: a publisher may send any JSON (a list nested
  // thousands deep makes String() throw; a megabyte description would be painted on every frame).
  for (const [field, max] of Object.entries(TEXT_FIELDS)) {
    if (state[field] !== undefined && state[field] !== null) state[field] = labelText(state[field], max);
  }
  return state;
}

/** The text fields of a job's state and the characters kept of each. */
const TEXT_FIELDS = { desc: 300, postfix: 300, host: 200, error: 4000, unit: 40, parent: 300 };

// ------------------------------------------------------------------------------------------ store

/**
 * The model-level state of a board: `jobs` (job → latest state, with `_received` ms), the aggregates,
 * and the notifications. Emits `"change"` (a view coalesces them per animation frame).
 */
export class ProgressStore extends StoreBase {
  constructor(model, conn, deps = {}) {
    super(model, conn, deps);
    this.setTimeout = deps.setTimeout || ((fn, ms) => setTimeout(fn, ms));
    this.clearTimeout = deps.clearTimeout || ((id) => clearTimeout(id));
    this.Notification = "Notification" in deps ? deps.Notification : globalThis.Notification;
    this.jobs = new Map();
    this.received = 0; // live progress events taken by this browser
    this.generation = 0;
    this._groups = null; // cached aggregate, reset on change
    this._hidden = new Map(); // job -> t of the state cleared locally (a stale trait must not revive it)
    this._notified = new Set(); // jobs (and "group:<parent>") already notified, or finished when seen first
    this._pending = []; // notifications waiting for the batch timer
    this._timer = null;
    this._order = 0; // first-seen order of jobs: rows keep their place while they update
  }

  start() {
    const on = (event, fn) => this._onModel(event, fn);
    on("change:jobs", () => this.seed());
    this._unbind.push(this.conn.on("event", (row) => this.add(row)));
    this.seed(true);
    return this;
  }

  get groups() {
    if (!this._groups) this._groups = aggregate(this.jobs);
    return this._groups;
  }

  /** Counts of jobs by status. */
  counts() {
    const counts = { running: 0, done: 0, failed: 0, cancelled: 0 };
    for (const state of this.jobs.values()) if (state.status in counts) counts[state.status] += 1;
    return counts;
  }

  /**
   * Replace the table with the kernel's `jobs` trait. A state older than the one this browser received
   * live is kept out (the last received wins); a job missing from the trait goes (the kernel cleared
   * it), unless this browser received it live in the last few seconds (the kernel's flush may lag).
   */
  seed(first = false) {
    const incoming = this.model.get("jobs") || {};
    const now = this.now();
    const next = new Map();
    const changed = [];
    for (const [job, raw] of Object.entries(incoming)) {
      const state = parseState(raw && typeof raw === "object" ? { job, ...raw } : raw);
      if (!state) continue;
      const hidden = this._hidden.get(job);
      if (hidden !== undefined) {
        if ((num(state.t) ?? 0) <= hidden) continue;
        this._hidden.delete(job);
      }
      const mine = this.jobs.get(job);
      if (mine && (num(mine.t) ?? 0) > (num(state.t) ?? 0)) {
        next.set(job, mine);
        continue;
      }
      state._received = mine && mine.t === state.t ? mine._received : now;
      state._live = false;
      state._seq = mine?._seq;
      if (first && FINISHED.has(state.status)) this._notified.add(job);
      if (!mine || mine.status !== state.status) changed.push([state, mine?.status]);
      next.set(job, state);
    }
    for (const [job, mine] of this.jobs) {
      if (!next.has(job) && mine._live && now - mine._received < LIVE_GRACE_MS) next.set(job, mine);
    }
    const fresh = [...next.values()].filter((state) => state._seq === undefined);
    fresh.sort((a, b) => startOf(a) - startOf(b) || (a.job < b.job ? -1 : 1));
    for (const state of fresh) state._seq = ++this._order;
    for (const job of [...this._hidden.keys()]) if (!(job in incoming)) this._hidden.delete(job);
    this.jobs = next;
    this._groups = null;
    this.generation += 1;
    if (!first) for (const [state, before] of changed) this._transition(state, before);
    this.emit("change");
  }

  /** A live event from the connection: `{t, channel, event, data}`. */
  add(row) {
    if (row.event !== EVENT) return;
    const state = parseState(row.data);
    if (!state) return;
    const job = state.job;
    const before = this.jobs.get(job);
    this._hidden.delete(job);
    this.received += 1;
    state._received = this.now();
    state._live = true;
    state._seq = before?._seq ?? ++this._order;
    this.jobs.delete(job);
    if (!(state.status === "done" && state.leave === false)) this.jobs.set(job, state);
    this._groups = null;
    this.generation += 1;
    // a state replayed by the server's channel history (issue 13) is shown, never notified again
    if (row.history === true) state._history = true;
    else this._transition(state, before?.status);
    this.emit("change");
  }

  /**
   * Forget the finished jobs here at once (browser → kernel messages wait while a cell runs) and ask
   * the kernel to forget them too (`{"type": "clear", "finished": true}`). Returns how many went.
   */
  clearFinished() {
    let gone = 0;
    for (const [job, state] of [...this.jobs]) {
      if (FINISHED.has(state.status)) {
        this.jobs.delete(job);
        this._hidden.set(job, num(state.t) ?? 0);
        gone += 1;
      }
    }
    this.model.send({ type: "clear", finished: true });
    this._groups = null;
    this.generation += 1;
    this.emit("change");
    return gone;
  }

  // -------------------------------------------------------------------------------- notifications

  /** Whether notifications are wanted and allowed. */
  get canNotify() {
    return Boolean(this.model.get("notify")) && this.Notification?.permission === "granted";
  }

  /** A job's status moved from `before`: queue its notification (once per job; groups once). */
  _transition(state, before) {
    const status = state.status;
    if (status !== "done" && status !== "failed") return;
    if (FINISHED.has(before) && this._notified.has(state.job)) return;
    if (this._notified.has(state.job)) return;
    this._notified.add(state.job);
    const parent = typeof state.parent === "string" && state.parent ? state.parent : null;
    if (!parent || status === "failed") this._queue({ kind: "job", state });
    if (parent) this._queue({ kind: "group", parent });
  }

  _queue(note) {
    if (!this.model.get("notify")) return;
    this._pending.push(note);
    if (this._timer === null) {
      this._timer = this.setTimeout(() => {
        this._timer = null;
        this._deliver();
      }, NOTIFY_BATCH_MS);
    }
  }

  _deliver() {
    const pending = this._pending.splice(0);
    if (!this.canNotify) return;
    const notes = [];
    const seenGroups = new Set();
    for (const note of pending) {
      if (note.kind === "job") {
        notes.push(jobNote(note.state));
        continue;
      }
      if (seenGroups.has(note.parent)) continue;
      seenGroups.add(note.parent);
      const group = this.groups.get(note.parent);
      const key = `group:${note.parent}`;
      if (!group || group.running > 0 || this._notified.has(key)) continue;
      this._notified.add(key);
      notes.push(groupNote(group));
    }
    if (notes.length === 0) return;
    if (notes.length > NOTIFY_MAX_SEPARATE) {
      const failed = notes.filter((n) => n.failed).length;
      const title = `${plural(notes.length, "job")} ended${failed ? ` (${failed} failed)` : ""}`;
      this._show(title, { body: notes.map((n) => n.title).join("\n"), tag: "livewidget-progress-summary" });
      return;
    }
    for (const note of notes) this._show(note.title, { body: note.body, tag: note.tag });
  }

  _show(title, options) {
    try {
      new this.Notification(title, options);
    } catch (err) {
      console.error("livewidget: notification failed", err);
    }
  }

  close() {
    if (this._timer !== null) this.clearTimeout(this._timer);
    this._timer = null;
    super.close();
  }
}

function jobNote(state) {
  const f = formatCounts(state);
  const name = state.desc || state.job;
  const failed = state.status === "failed";
  const body = failed
    ? String(state.error || "failed")
    : `${f.counts} ${f.unit} in ${formatInterval(state.elapsed)}${state.host ? ` on ${state.host}` : ""}`;
  return { title: `${name}: ${failed ? "failed" : "done"}`, body, tag: `livewidget-${state.job}`, failed };
}

function groupNote(group) {
  const parts = STATUSES.filter((s) => group[s]).map((s) => `${group[s]} ${s}`);
  const failed = group.failed > 0;
  return {
    title: `${group.desc}: ${failed ? "finished with failures" : "done"}`,
    body: `${plural(group.jobs, "job")}: ${parts.join(", ")} in ${formatInterval(group.elapsed)}`,
    tag: `livewidget-group-${group.parent}`,
    failed,
  };
}

/** The model-level part of a board (the body of `initialize`). */
export function initializeProgress(model, conn, deps) {
  const store = new ProgressStore(model, conn, deps).start();
  return { conn, store, close: () => store.close() };
}

// ------------------------------------------------------------------------------------------ view

const STATUS_LABELS = { running: "running", done: "done", failed: "failed", cancelled: "cancelled" };
const STATUS_ICONS = { running: "", done: "✓", failed: "✕", cancelled: "–" };

/** One view of a board. Paints on animation frames; `destroy()` removes every listener it added. */
export class ProgressView extends ViewBase {
  constructor(model, el, session, deps = {}) {
    super(model, el, session, deps);
    const win = this.win;
    this.Notification = "Notification" in deps ? deps.Notification : win.Notification;
    this.paints = 0;
    this.expanded = new Set(); // parents shown open in this view
    this.rows = new Map(); // job -> {el, parts}
    this.groupEls = new Map(); // parent -> {el, parts, list}
  }

  mount() {
    const { doc } = this;
    const root = (this.root = h(doc, "div", "lw-board"));
    const header = h(doc, "div", "lw-header");
    this.stateEl = h(doc, "span", "lw-state");
    this.stateEl.append(h(doc, "span", "lw-dot"), (this.stateText = h(doc, "span", "lw-state-text")));
    this.stateEl.title = "this browser's connection to Pusher";
    this.titleEl = h(doc, "span", "lw-title");
    this.summaryEl = h(doc, "span", "lw-board-summary");
    this.notifyEl = h(doc, "button", "lw-notify");
    this.notifyEl.type = "button";
    this.clearEl = h(doc, "button", "lw-clear", "Clear finished");
    this.clearEl.type = "button";
    this.clearEl.title = "remove the finished jobs from this board (and from board.df)";
    header.append(this.stateEl, this.titleEl, h(doc, "span", "lw-spacer"), this.summaryEl, this.notifyEl, this.clearEl);

    this.errorEl = h(doc, "div", "lw-error");
    this.errorEl.setAttribute("role", "alert");
    this.errorEl.hidden = true;
    this.listEl = h(doc, "div", "lw-jobs");
    this.listEl.setAttribute("role", "list");
    this.emptyEl = h(doc, "div", "lw-empty");
    root.append(header, this.errorEl, this.listEl, this.emptyEl);
    this.el.append(root);

    this._listen(this.clearEl, "click", () => {
      this.store.clearFinished();
      this.paint();
    });
    this._listen(this.notifyEl, "click", () => this._toggleNotify());
    this._listen(this.listEl, "click", (e) => this._toggleGroup(e));
    this._listen(this.listEl, "keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        if (this._toggleGroup(e)) e.preventDefault();
      }
    });

    this._unbind.push(this.store.on("change", this.schedule), this.conn.on("change", this.schedule));
    for (const name of ["status", "error", "title", "channels", "notify"]) {
      this._onModel(`change:${name}`, this.schedule);
    }
    const timer = this.setInterval(() => {
      if (this.store.counts().running) this.schedule();
    }, TICK_MS);
    this._unbind.push(() => this.clearInterval(timer));
    this.paint();
    return this;
  }

  _text(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  /** The notification toggle: asking permission needs this click (browsers refuse it otherwise). */
  async _toggleNotify() {
    const N = this.Notification;
    const on = Boolean(this.model.get("notify"));
    if (!N) return;
    const wanted = !on || N.permission !== "granted";
    if (wanted && N.permission !== "granted") {
      let answer = N.permission;
      try {
        if (answer === "default") answer = await N.requestPermission();
      } catch {
        answer = N.permission;
      }
      if (answer !== "granted") {
        this.schedule();
        return;
      }
    }
    if (Boolean(this.model.get("notify")) !== wanted) {
      this.model.set("notify", wanted);
      this.model.save_changes();
    }
    this.schedule();
  }

  _toggleGroup(e) {
    const head = e.target?.closest?.(".lw-group-head");
    if (!head) return false;
    const group = head.closest(".lw-group");
    const parent = group?.getAttribute("data-parent");
    if (parent === null || parent === undefined) return false;
    if (this.expanded.has(parent)) this.expanded.delete(parent);
    else this.expanded.add(parent);
    this.paint();
    return true;
  }

  paint() {
    this._cancelFrame();
    if (this.destroyed) return;
    this.paints += 1;
    this._paintHeader();
    this._paintJobs();
  }

  _paintHeader() {
    const { conn, store, model } = this;
    this._attr(this.stateEl, "data-state", conn.state);
    this._text(this.stateText, stateLabel(conn));
    this._attr(this.stateEl, "title", historyTitle(conn) || null);
    this._text(this.titleEl, model.get("title") || "");

    const counts = store.counts();
    const parts = STATUSES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`);
    this._text(this.summaryEl, parts.join(" · "));
    this.summaryEl.hidden = parts.length === 0;
    for (const s of STATUSES) this._attr(this.root, `data-${s}`, String(counts[s]));
    this._attr(this.root, "data-jobs", String(store.jobs.size));
    const finished = counts.done + counts.failed + counts.cancelled;
    this.clearEl.disabled = finished === 0;
    this._text(this.clearEl, finished ? `Clear finished (${finished})` : "Clear finished");

    const N = this.Notification;
    const wanted = Boolean(model.get("notify"));
    let state = "off";
    let label = "Notify";
    let title = "desktop notifications when a job ends: off (click to turn on)";
    if (!N) {
      state = "unsupported";
      title = "this browser has no desktop notifications";
    } else if (N.permission === "denied") {
      state = "denied";
      title = "desktop notifications are blocked for this site (browser settings)";
    } else if (wanted && N.permission === "granted") {
      state = "on";
      label = "✓ Notify";
      title = "desktop notifications when a job ends: on (click to turn off)";
    } else if (wanted) {
      state = "ask";
      label = "Allow notifications";
      title = "click to allow desktop notifications when a job ends";
    }
    this._attr(this.notifyEl, "data-state", state);
    this._text(this.notifyEl, label);
    this.notifyEl.title = title;
    this.notifyEl.setAttribute("aria-label", title);
    this.notifyEl.setAttribute("aria-pressed", state === "on" ? "true" : "false");
    this.notifyEl.disabled = state === "unsupported" || state === "denied";

    const errors = [];
    const kernelError = model.get("error");
    if (kernelError) errors.push(`kernel: ${kernelError}`);
    if (conn.error) errors.push(`browser: ${conn.error}`);
    for (const [name, info] of conn.channels) if (info.error) errors.push(`${name}: ${info.error}`);
    const errorText = errors.join("\n");
    this._text(this.errorEl, errorText);
    this.errorEl.hidden = !errorText;
  }

  /** Top-level items in a stable order (by start): lone jobs, and groups (a parent and its children). */
  _layout() {
    const { jobs } = this.store;
    const groups = this.store.groups;
    const items = [];
    for (const [parent, agg] of groups) {
      const kids = [...jobs.values()].filter((s) => s.parent === parent);
      const own = jobs.get(parent);
      const members = own ? [own, ...kids] : kids;
      // workers by name ("worker 2" before "worker 10"), the parent's own row first
      members.sort((a, b) => (b === own) - (a === own) || byName(a, b));
      const start = Math.min(...members.map((m) => m._seq));
      items.push({ kind: "group", parent, agg, members, start, key: `g:${parent}` });
    }
    for (const state of jobs.values()) {
      if (groups.has(state.job)) continue; // shown inside its group
      const parent = state.parent;
      if (typeof parent === "string" && parent && groups.has(parent)) continue;
      items.push({ kind: "job", state, start: state._seq, key: `j:${state.job}` });
    }
    items.sort((a, b) => a.start - b.start || (a.key < b.key ? -1 : 1));
    return items;
  }

  _paintJobs() {
    const items = this._layout();
    const now = this.now();
    const wantedJobs = new Set();
    const wantedGroups = new Set();
    const order = [];
    for (const item of items) {
      if (item.kind === "job") {
        wantedJobs.add(item.state.job);
        order.push(this._jobRow(item.state, now).el);
        continue;
      }
      wantedGroups.add(item.parent);
      const group = this._groupRow(item.parent);
      const open = this.expanded.has(item.parent);
      this._fillGroup(group, item.agg, open);
      const kids = [];
      for (const state of item.members) {
        wantedJobs.add(state.job);
        const row = this._jobRow(state, now);
        row.el.classList.toggle("lw-own", state.job === item.parent);
        kids.push(row.el);
      }
      this._order(group.list, kids);
      group.list.hidden = !open;
      order.push(group.el);
    }
    for (const [job, row] of this.rows) {
      if (!wantedJobs.has(job)) {
        row.el.remove();
        this.rows.delete(job);
      }
    }
    for (const [parent, group] of this.groupEls) {
      if (!wantedGroups.has(parent)) {
        group.el.remove();
        this.groupEls.delete(parent);
      }
    }
    this._order(this.listEl, order);

    const empty = items.length === 0;
    this.listEl.hidden = empty;
    this.emptyEl.hidden = !empty;
    if (empty) {
      const channels = (this.model.get("channels") || []).join(", ") || "no channel";
      this._text(this.emptyEl, `No jobs yet. Publish with livewidget.progress(..., channel=…) on ${channels}.`);
    }
  }

  /** Make `parent`'s children exactly `nodes`, in order, moving only what is out of place. */
  _order(parent, nodes) {
    let i = 0;
    for (; i < nodes.length; i++) {
      const current = parent.children[i];
      if (current !== nodes[i]) parent.insertBefore(nodes[i], current || null);
    }
    while (parent.children.length > nodes.length) parent.lastElementChild.remove();
  }

  _cells(el) {
    const { doc } = this;
    const parts = {
      icon: h(doc, "span", "lw-icon"),
      desc: h(doc, "span", "lw-desc"),
      name: h(doc, "span", "lw-name"),
      postfix: h(doc, "span", "lw-postfix"),
      bar: h(doc, "span", "lw-bar"),
      fill: h(doc, "span", "lw-fill"),
      pct: h(doc, "span", "lw-pct"),
      pctOn: h(doc, "span", "lw-pct lw-pct-on"), // the same text, drawn over the fill in its own colour
      n: h(doc, "span", "lw-n"),
      rate: h(doc, "span", "lw-job-rate"),
      time: h(doc, "span", "lw-times"),
      host: h(doc, "span", "lw-host"),
      detail: h(doc, "div", "lw-detail"),
    };
    parts.desc.append(parts.name, parts.postfix);
    parts.pctOn.setAttribute("aria-hidden", "true");
    parts.bar.append(parts.fill, parts.pct, parts.pctOn);
    parts.bar.setAttribute("role", "progressbar");
    const line = h(doc, "div", "lw-line");
    line.append(parts.icon, parts.desc, parts.bar, parts.n, parts.rate, parts.time, parts.host);
    el.append(line, parts.detail);
    return parts;
  }

  _fillCommon(parts, state, statusTitle) {
    const f = formatCounts(state);
    const status = STATUS_LABELS[state.status] ? state.status : "running";
    this._text(parts.icon, STATUS_ICONS[status]);
    parts.icon.title = statusTitle || status;
    const pct = f.fraction === null ? "" : `${Math.floor(f.fraction * 100)}%`;
    const width = f.fraction === null ? (status === "running" ? "" : "100%") : `${(f.fraction * 100).toFixed(2)}%`;
    if (parts.fill.style.width !== width) {
      parts.fill.style.width = width;
      // The percentage reads on both parts of the bar: the copy over the fill is clipped to the fill's
      // width and drawn in the colour that contrasts with the fill (progress.css, WCAG AA 4.5:1).
      parts.bar.style.setProperty("--lw-frac", width || "0%");
    }
    parts.bar.classList.toggle("lw-indeterminate", f.fraction === null && status === "running");
    this._text(parts.pct, pct);
    this._text(parts.pctOn, pct);
    this._attr(parts.bar, "aria-valuenow", f.fraction === null ? null : String(Math.round(f.fraction * 100)));
    this._attr(parts.bar, "aria-valuemin", "0");
    this._attr(parts.bar, "aria-valuemax", "100");
    this._text(parts.n, f.counts);
    parts.n.title = `${f.counts} ${f.unit}`;
    this._text(parts.rate, f.rate);
    this._text(parts.time, formatTimes(state));
    parts.time.title = FINISHED.has(state.status)
      ? `took ${formatInterval(state.elapsed)}`
      : `elapsed ${formatInterval(state.elapsed)}, remaining ${
          num(state.remaining) === null ? "unknown" : formatInterval(state.remaining)
        }`;
    return { f, status };
  }

  _jobRow(state, now) {
    let row = this.rows.get(state.job);
    if (!row) {
      const el = h(this.doc, "div", "lw-job");
      el.setAttribute("role", "listitem");
      el.setAttribute("data-job", state.job);
      row = { el, parts: this._cells(el), state: null, stale: null };
      this.rows.set(state.job, row);
    }
    const { el, parts } = row;
    const stale = state.status === "running" && now - (state._received ?? now) > STALE_MS;
    if (row.state !== state || row.stale !== stale) {
      row.state = state;
      row.stale = stale;
      const { status } = this._fillCommon(parts, state);
      this._attr(el, "data-status", status);
      this._attr(el, "data-parent", typeof state.parent === "string" && state.parent ? state.parent : null);
      const f = formatCounts(state);
      this._attr(el, "data-n", String(num(state.n) ?? 0));
      this._attr(el, "data-total", num(state.total) === null ? "" : String(state.total));
      el.classList.toggle("lw-stale", stale);
      el.classList.toggle("lw-history", state._history === true); // replayed by the channel's history
      const name = state.desc ? String(state.desc) : state.job;
      this._text(parts.name, name);
      parts.name.title = `${name}\njob ${state.job}${state.pid ? ` · pid ${state.pid}` : ""}`;
      this._text(parts.postfix, state.postfix ? String(state.postfix) : "");
      parts.postfix.hidden = !state.postfix;
      this._text(parts.host, state.host ? String(state.host) : "");
      parts.host.title = state.host ? `host ${state.host}${state.pid ? `, pid ${state.pid}` : ""}` : "";
      const error = status === "failed" || status === "cancelled" ? state.error : null;
      this._text(parts.detail, error ? String(error) : "");
      parts.detail.hidden = !error;
      parts.detail.title = error ? String(error) : "";
      this._attr(parts.bar, "aria-label", `${name}: ${f.counts} ${f.unit}, ${status}`);
    }
    if (stale) parts.icon.title = "no update for over a minute";
    return row;
  }

  _groupRow(parent) {
    let group = this.groupEls.get(parent);
    if (group) return group;
    const { doc } = this;
    const el = h(doc, "div", "lw-group");
    el.setAttribute("data-parent", parent);
    el.setAttribute("role", "listitem");
    const head = h(doc, "div", "lw-group-head");
    head.tabIndex = 0;
    const parts = this._cells(head);
    parts.caret = h(doc, "span", "lw-caret");
    parts.caret.setAttribute("aria-hidden", "true");
    parts.badges = h(doc, "span", "lw-badges");
    parts.desc.prepend(parts.caret);
    parts.desc.append(parts.badges);
    const list = h(doc, "div", "lw-children");
    list.setAttribute("role", "list");
    el.append(head, list);
    group = { el, head, parts, list, agg: null };
    this.groupEls.set(parent, group);
    return group;
  }

  _fillGroup(group, agg, open) {
    const { el, head, parts } = group;
    head.setAttribute("aria-expanded", open ? "true" : "false");
    el.classList.toggle("lw-open", open);
    this._text(parts.caret, open ? "▾" : "▸");
    if (group.agg === agg) return;
    group.agg = agg;
    const { status } = this._fillCommon(parts, agg, `${agg.status}: ${plural(agg.jobs, "job")}`);
    this._attr(el, "data-status", status);
    this._attr(el, "data-jobs", String(agg.jobs));
    this._text(parts.name, String(agg.desc));
    parts.name.title = `${agg.desc}\nparent ${agg.parent} · click to ${open ? "hide" : "show"} its ${plural(agg.jobs, "job")}`;
    this._text(parts.postfix, "");
    parts.postfix.hidden = true;
    const frag = this.doc.createDocumentFragment();
    frag.append(h(this.doc, "span", "lw-badge lw-badge-jobs", plural(agg.jobs, "job")));
    for (const s of STATUSES) {
      if (!agg[s]) continue;
      const badge = h(this.doc, "span", "lw-badge", `${agg[s]} ${s}`);
      badge.setAttribute("data-status", s);
      frag.append(badge);
    }
    parts.badges.replaceChildren(frag);
    const hosts = agg.hosts.join(", ");
    this._text(parts.host, agg.hosts.length > 1 ? `${agg.hosts.length} hosts` : hosts);
    parts.host.title = hosts;
    const errors = agg.errors;
    const detail = errors.length
      ? `${errors[0]}${errors.length > 1 ? ` (and ${errors.length - 1} more failure${errors.length > 2 ? "s" : ""})` : ""}`
      : "";
    this._text(parts.detail, detail);
    parts.detail.hidden = !detail;
    parts.detail.title = errors.join("\n");
  }
}

/** Paint a board into `el` (the body of `render`); returns the cleanup. */
export function renderProgress(model, el, session, deps) {
  const view = new ProgressView(model, el, session, deps).mount();
  return () => view.destroy();
}
