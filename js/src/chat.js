// Chat: a chat room on a presence channel (the Chat widget, `_kind == "chat"`).
//
// `ChatStore` is model-level (made in `initialize`): messages, members, who is typing, the outbox of
// client events, history. Messages go browser to browser as client events over this model's own
// pusher-js connection, so chat works while the kernel is busy; messages from Python
// (`chat.send`, REST) arrive as `chat-message` and are shown the same. Pusher allows 10 client events
// a second per connection and 10 KB per event: the outbox paces events under the rate (a token
// bucket), long messages go in parts, and both are shown as a note, never dropped. `ChatView` (made
// in `render`) paints the store at most once per animation frame; message text is rendered by
// markdown.js, which never interprets HTML. The wire format and where history lives are described
// in livewidget/widgets/chat.py.

import { renderMarkdown } from "./markdown.js";
import { decodeJsonLines, h, historyTitle, labelText, stateLabel, StoreBase, ViewBase } from "./util.js";

export const EVENTS = {
  message: "client-chat-message",
  serverMessage: "chat-message",
  typing: "client-chat-typing",
  historyRequest: "client-chat-history-request",
  history: "client-chat-history",
};

export const LIMITS = {
  pieceBytes: 9000, // JSON bytes of one event's data (Pusher: 10 KB)
  maxParts: 12, // longer messages are refused (with a note), about 100 KB
  rate: 8, // client events per second this browser sends (Pusher: 10 per connection)
  burst: 8,
  typingEveryMs: 2500, // between typing notifications while typing
  typingShowMs: 5000, // how long "X is typing" stays without news
  unackedMs: 1500, // events resent after a rate-limit error (receivers ignore duplicates)
  pauseMs: 1000, // sending pauses this long after a rate-limit error
  historyLimit: 200, // messages asked for and given on join
  answerMinMs: 300, // browsers answer history requests after kernels had their chance...
  answerSpreadMs: 700, // ...at a random moment, so that one answers and the others see it and stop
  maxMessages: 1000, // messages kept by the store
  // Incomplete multi-part messages: kept per (sender, id) at most partsTtlMs, at most
  // pendingPerSender per sender and pendingTotal in all (oldest dropped), so that a member sending
  // first parts only cannot grow this page's memory.
  partsTtlMs: 60_000,
  pendingPerSender: 4,
  pendingTotal: 64,
};

/** Whether `member` (a presence id the server stamped) is `author` or `author`'s kernel. */
export function samePerson(author, member) {
  return member !== null && member !== undefined && (member === author || member === `${author}:kernel`);
}

export const MAX_DOM_MESSAGES = 300;
const GROUP_MS = 5 * 60 * 1000; // consecutive messages of one person within this are grouped
const COLOR = /^#(?:[0-9a-f]{3}|[0-9a-f]{6})$/i;
const PALETTE = [
  "#e5484d",
  "#f76b15",
  "#d6a100",
  "#46a758",
  "#12a594",
  "#0090ff",
  "#3e63dd",
  "#8e4ec6",
  "#d6409f",
  "#a18072",
  "#6e56cf",
  "#00a2c7",
];

/** The palette colour of a user id (the same FNV-1a as livewidget/widgets/chat.py color_for). */
export function colorFor(id) {
  let hash = 0;
  for (const ch of String(id)) hash = Math.imul(hash ^ ch.codePointAt(0), 16777619) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

/** A colour from a member's info if it is a plain hex colour, else the id's palette colour. */
export function safeColor(color, id) {
  return typeof color === "string" && COLOR.test(color) ? color : colorFor(id);
}

const encoder = new TextEncoder();
const jsonBytes = (value) => encoder.encode(JSON.stringify(value)).length;

/** `text` in chunks whose JSON encoding is at most `budget` bytes each, on code point boundaries. */
export function splitText(text, budget = LIMITS.pieceBytes - 400) {
  const chunks = [];
  let current = "";
  let size = 0;
  for (const ch of text) {
    const cost = jsonBytes(ch) - 2;
    if (size + cost > budget && current) {
      chunks.push(current);
      current = "";
      size = 0;
    }
    current += ch;
    size += cost;
  }
  chunks.push(current);
  return chunks;
}

/** Two-letter initials of a display name. */
export function initials(name) {
  const words = String(name).trim().split(/[\s._@-]+/u).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words[words.length - 1]] : [words[0] || "?"];
  return letters
    .map((w) => [...w][0] || "")
    .join("")
    .toUpperCase()
    .slice(0, 2);
}

function formatClock(ms) {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return "--:--";
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

function isNumber(v) {
  return typeof v === "number" && Number.isFinite(v);
}

/** The model-level state of a Chat. Emits `"change"`. */
export class ChatStore extends StoreBase {
  /**
   * @param {object} model  the anywidget model
   * @param {import("./connection.js").Connection} conn  the model's connection
   * @param {object} deps  `{now?, random?, setTimeout?, clearTimeout?, defer?}`
   */
  constructor(model, conn, deps = {}) {
    super(model, conn, deps);
    this.random = deps.random || Math.random;
    this.setTimer = deps.setTimeout || ((fn, ms) => setTimeout(fn, ms));
    this.clearTimer = deps.clearTimeout || ((id) => clearTimeout(id));
    // The sender's user_id reaches the connection just after the event (connection.js): read it later.
    this.defer = deps.defer || ((fn) => queueMicrotask(fn));
    this.channelName = (model.get("channels") || [])[0] || "";
    this.messages = new Map(); // id -> message
    this.sorted = []; // messages by time
    this.generation = 0; // bumped when `sorted` changes other than by appending
    this.parts = new Map(); // `${sender}\n${id}` -> {source, parts, got: Map, since} being received
    this.members = []; // people online (kernels hidden): [{id, name, color}], me first
    this.infoById = new Map(); // every member, kernels included: id -> info
    this.memberTotal = 0;
    this.typing = new Map(); // user id -> {name, color, until}
    this.outbox = []; // client events waiting: {kind, event, data, msg?}
    this.recent = []; // [{at, item}] sent in the last `unackedMs`
    this.notes = new Map(); // key -> {text, kind, until}
    this.tokens = LIMITS.burst;
    this.tokenTime = this.now();
    this.pausedUntil = 0;
    this.horizon = null; // ms: since when this browser has heard every message
    this.subscribed = false;
    this.myRequest = null;
    this.answers = new Map(); // history requests: req -> timer | false (answered or cancelled)
    this.lastTyping = Number.NEGATIVE_INFINITY;
    this._seq = 0;
    this._sent = 0;
    this._timers = new Set();
    this._pumpTimer = null;
    this._errorBound = null;
    this._closed = false;
    this._onError = (err) => this._connectionError(err);
  }

  start() {
    const on = (event, fn) => this._onModel(event, fn);
    on("change:_history", () => this.seedHistory());
    on("change:me", () => this.emit("change"));
    this._unbind.push(
      this.conn.on("event", (row) => this.defer(() => this.receive(row))),
      this.conn.on("change", () => this._connectionChanged()),
    );
    this.seedHistory();
    return this;
  }

  /** Who this browser is: `{id, name, color}` (the `me` trait). */
  get me() {
    const me = this.model.get("me") || {};
    const id = String(me.id ?? "");
    return { id, name: String(me.name || id), color: safeColor(me.color, id) };
  }

  // ------------------------------------------------------------------ timers

  _later(ms, fn) {
    const id = this.setTimer(() => {
      this._timers.delete(id);
      if (!this._closed) fn();
    }, ms);
    this._timers.add(id);
    return id;
  }

  _cancel(id) {
    if (id === null || id === undefined || id === false) return;
    this._timers.delete(id);
    this.clearTimer(id);
  }

  // ------------------------------------------------------------------ notes

  /** Show `text` (kind "info" or "warn") under the log, for `ms` or until cleared. */
  setNote(key, text, kind = "info", ms = 0) {
    const note = { text, kind, until: ms ? this.now() + ms : 0 };
    this.notes.set(key, note);
    if (ms) {
      this._later(ms + 10, () => {
        if (this.notes.get(key) === note) {
          this.notes.delete(key);
          this.emit("change");
        }
      });
    }
    this.emit("change");
  }

  clearNote(key) {
    if (this.notes.delete(key)) this.emit("change");
  }

  // ------------------------------------------------------------------ connection and members

  _channel() {
    return this.conn.channels.get(this.channelName)?.channel || null;
  }

  _connectionChanged() {
    const connection = this.conn.pusher?.connection;
    if (connection && this._errorBound !== connection) {
      connection.bind("error", this._onError);
      this._errorBound = connection;
    }
    const info = this.conn.channels.get(this.channelName);
    const ready = this.conn.state === "connected" && info?.state === "subscribed";
    if (ready) this._readMembers();
    if (ready && !this.subscribed) {
      this.subscribed = true;
      if (this.horizon === null) this.horizon = this.now();
      this.clearNote("offline");
      if (this.memberTotal > 1) this.requestHistory();
      this.pump();
    } else if (!ready && this.subscribed) {
      this.subscribed = false;
    }
  }

  _readMembers() {
    const members = this._channel()?.members;
    const people = [];
    const infos = new Map();
    if (members && typeof members.each === "function") {
      members.each((member) => {
        const id = String(member.id);
        const info = member.info && typeof member.info === "object" ? member.info : {};
        infos.set(id, info);
        if (info.livewidget_kernel) return; // the notebooks' kernels are members too: not people
        people.push({ id, name: labelText(info.name, 80) || id.slice(0, 80), color: safeColor(info.color, id) });
      });
    }
    const me = this.me.id;
    people.sort((a, b) => (b.id === me) - (a.id === me) || a.name.localeCompare(b.name) || (a.id < b.id ? -1 : 1));
    this.infoById = infos;
    this.memberTotal = infos.size;
    if (JSON.stringify(people) !== JSON.stringify(this.members)) {
      this.members = people;
      for (const id of [...this.typing.keys()]) if (!infos.has(id)) this.typing.delete(id);
      this.emit("change");
    }
  }

  _connectionError(err) {
    const data = err?.data || err?.error?.data;
    if (!data || Number(data.code) !== 4301) return;
    // Pusher refused a client event (more than 10 a second): which one is not said, so everything
    // sent in the last moments goes again; receivers ignore message ids they already have.
    if (/4301/.test(this.conn.error || "")) {
      this.conn.error = "";
      this.conn.emit("change");
    }
    const now = this.now();
    const again = this.recent.filter((r) => r.at >= now - LIMITS.unackedMs && r.item.kind !== "typing");
    this.recent = [];
    for (const { item } of again) {
      if (item.msg) {
        item.msg.sentParts = Math.max(0, item.msg.sentParts - 1);
        item.msg.state = "queued";
      }
    }
    this.outbox.unshift(...again.map((r) => r.item));
    this.tokens = 0;
    this.pausedUntil = now + LIMITS.pauseMs;
    this.setNote(
      "limit",
      `Pusher's limit of 10 client events a second was reached: sending ${again.length} again, slower.`,
      "warn",
      5000,
    );
    this.pump();
  }

  /** People online (the kernels hidden), each counted once whatever their tabs and kernels. */
  get online() {
    return this.members.length;
  }

  // ------------------------------------------------------------------ receiving

  /** An event from the connection: `{t, channel, event, data, user_id}`. */
  receive(row) {
    if (this._closed || row.channel !== this.channelName) return;
    const data = row.data;
    if (!data || typeof data !== "object") return;
    // Replayed by the server's channel history (issue 13): messages are marked; past typing, history
    // requests and answers are long settled.
    const history = row.history === true;
    if (history && row.event !== EVENTS.message && row.event !== EVENTS.serverMessage) return;
    switch (row.event) {
      case EVENTS.message:
        // A client event always carries the sender the server stamped; without it, it is not one.
        if (row.user_id === undefined || row.user_id === null) return;
        this.takePiece(data, { via: "browser", stamped: String(row.user_id), history });
        break;
      case EVENTS.serverMessage:
        this.takePiece(data, { via: "python", stamped: null, history });
        break;
      case EVENTS.typing:
        this._typingFrom(row.user_id, data); // who is typing: the stamped sender only, never a claim
        break;
      case EVENTS.historyRequest:
        this._historyRequested(data);
        break;
      case EVENTS.history:
        this._historyAnswered(data, row.user_id === undefined || row.user_id === null ? null : String(row.user_id));
        break;
      default:
    }
  }

  /** Who sent `piece`: the id the server stamped wins; name and colour from the signed presence info. */
  sender(piece, stamped) {
    const claimed = piece?.user && typeof piece.user === "object" ? piece.user : {};
    // labelText, not String(): a claimed name may be any JSON (nested thousands deep, String() throws).
    const id = labelText(stamped ?? claimed.id ?? "?", 128) || "?";
    const info = this.infoById.get(id) || {};
    const name = labelText(info.name || claimed.name, 80) || id.slice(0, 80);
    return { id, name, color: safeColor(info.color || claimed.color, id) };
  }

  /**
   * One piece of a message (`{id, t, text, user, part?, parts?}`); whole messages are added.
   * `source` is who sent the event (the stamped id, or the member answering history): parts are
   * joined per source and id. `relayedBy` is set when the author is only claimed (history relayed
   * by another member).
   */
  takePiece(piece, { via, stamped, history, relayedBy = null, source = null }) {
    const { id, text } = piece;
    if (typeof id !== "string" || !id || id.length > 200 || typeof text !== "string") return;
    if (this.messages.has(id)) return;
    let body = text;
    const parts = piece.parts;
    if (Number.isInteger(parts) && parts > 1 && parts <= LIMITS.maxParts) {
      if (!Number.isInteger(piece.part) || piece.part < 0 || piece.part >= parts) return;
      body = this._join(String(source ?? stamped ?? via), id, parts, piece.part, text);
      if (body === null) return;
    }
    const who = this.sender(piece, stamped);
    this.addMessage({
      id,
      t: isNumber(piece.t) ? piece.t : this.now(),
      userId: who.id,
      name: who.name,
      color: who.color,
      text: body,
      via: history && (piece.via === "python" || piece.via === "browser") ? piece.via : via,
      history,
      relayedBy: typeof relayedBy === "string" && relayedBy ? relayedBy.slice(0, 128) : null,
      state: "received",
    });
  }

  /** A display name for the member who relayed a message (a kernel shows as its user). */
  relayerName(id) {
    const user = String(id).replace(/:kernel$/, "");
    const info = this.infoById.get(String(id)) || this.infoById.get(user) || {};
    return String(info.name || user).slice(0, 80);
  }

  /** Keep part `part` of message `id` from `source`; returns the whole text once all parts are here. */
  _join(source, id, parts, part, text) {
    const now = this.now();
    for (const [key, p] of this.parts) if (now - p.since > LIMITS.partsTtlMs) this.parts.delete(key);
    const key = `${source}\n${id}`;
    let pending = this.parts.get(key);
    if (!pending || pending.parts !== parts) {
      const oldest = (keys) => keys.reduce((a, b) => (this.parts.get(b).since < this.parts.get(a).since ? b : a));
      let mine = [...this.parts.keys()].filter((k) => this.parts.get(k).source === source);
      while (mine.length >= LIMITS.pendingPerSender) {
        const gone = oldest(mine);
        this.parts.delete(gone);
        mine = mine.filter((k) => k !== gone);
      }
      while (this.parts.size >= LIMITS.pendingTotal) this.parts.delete(oldest([...this.parts.keys()]));
      pending = { source, parts, got: new Map(), since: now };
      this.parts.set(key, pending);
    }
    pending.got.set(part, text);
    if (pending.got.size < parts) return null;
    this.parts.delete(key);
    return Array.from({ length: parts }, (_, i) => pending.got.get(i)).join("");
  }

  /** Add a whole message unless its id is known; keeps `sorted` in time order. */
  addMessage(msg) {
    if (this.messages.has(msg.id)) return false;
    msg.seq = ++this._seq;
    this.messages.set(msg.id, msg);
    const list = this.sorted;
    const last = list[list.length - 1];
    if (!last || last.t <= msg.t) {
      list.push(msg);
    } else {
      let i = list.length - 1;
      while (i >= 0 && list[i].t > msg.t) i--;
      list.splice(i + 1, 0, msg);
      this.generation += 1;
    }
    if (list.length > LIMITS.maxMessages) {
      for (const gone of list.splice(0, list.length - LIMITS.maxMessages)) this.messages.delete(gone.id);
      this.generation += 1;
    }
    this.typing.delete(msg.userId);
    this.emit("change");
    return true;
  }

  /** Messages the kernel recorded before this view (`_history`, JSON lines). */
  seedHistory() {
    for (const item of decodeJsonLines(this.model.get("_history"))) {
      const data = item.data;
      if (!data || typeof data !== "object") continue;
      // The kernel's own record: its attribution (and relayed_by) is as trusted as the kernel.
      this.takePiece(data, {
        via: data.via || "browser",
        stamped: item.user_id ?? data.user?.id,
        history: true,
        relayedBy: typeof data.relayed_by === "string" ? data.relayed_by : null,
        source: "kernel",
      });
    }
  }

  _typingFrom(userId, data) {
    if (userId === undefined || userId === null) return;
    const id = String(userId);
    if (id === this.me.id) return;
    const who = this.sender(data, id);
    this.typing.set(id, { name: who.name, color: who.color, until: this.now() + LIMITS.typingShowMs });
    this._later(LIMITS.typingShowMs + 20, () => {
      const entry = this.typing.get(id);
      if (entry && entry.until <= this.now()) {
        this.typing.delete(id);
        this.emit("change");
      }
    });
    this.emit("change");
  }

  /** Names of the people typing now. */
  typingNames() {
    const now = this.now();
    return [...this.typing.values()].filter((t) => t.until > now).map((t) => t.name);
  }

  // ------------------------------------------------------------------ sending

  /**
   * Send `text` as a message: shown at once, queued, sent as client events under Pusher's limits.
   * Returns `{ok: true, id}`, or `{ok: false, error}` (empty, or too long: shown as a note).
   */
  send(text) {
    const body = String(text ?? "");
    if (!body.trim()) return { ok: false, error: "empty message" };
    const me = this.me;
    const chunks = splitText(body);
    if (chunks.length > LIMITS.maxParts) {
      const kb = Math.ceil(encoder.encode(body).length / 1024);
      const error =
        `This message is ${kb} KB: too long to send (at most about ${Math.floor(
          (LIMITS.maxParts * (LIMITS.pieceBytes - 400)) / 1024,
        )} KB). ` + "It is still in the box: shorten it or send it in pieces.";
      this.setNote("size", error, "warn", 10_000);
      return { ok: false, error };
    }
    const t = this.now();
    const rand = Math.floor(this.random() * 0xffffffff).toString(16);
    const id = `${me.id.slice(0, 40)}-${t.toString(16)}-${rand}${(++this._sent).toString(36)}`;
    const msg = {
      id,
      t,
      userId: me.id,
      name: me.name,
      color: me.color,
      text: body,
      via: "browser",
      history: false,
      state: "queued",
      parts: chunks.length,
      sentParts: 0,
    };
    this.addMessage(msg);
    const base = { id, t, user: { id: me.id, name: me.name, color: me.color } };
    chunks.forEach((chunk, part) => {
      const data = chunks.length > 1 ? { ...base, text: chunk, part, parts: chunks.length } : { ...base, text: chunk };
      this.outbox.push({ kind: "message", event: EVENTS.message, data, msg });
    });
    if (chunks.length > 1) {
      this.setNote(
        "size",
        `Long message: sent in ${chunks.length} parts (Pusher allows 10 KB per event).`,
        "info",
        6000,
      );
    }
    this.lastTyping = Number.NEGATIVE_INFINITY;
    this.pump();
    return { ok: true, id };
  }

  /** The user is typing: tell the others, at most every `typingEveryMs`, never ahead of messages. */
  notifyTyping() {
    const now = this.now();
    if (!this.subscribed || this.outbox.length > 0 || now - this.lastTyping < LIMITS.typingEveryMs) return;
    this.lastTyping = now;
    const me = this.me;
    this.outbox.push({ kind: "typing", event: EVENTS.typing, data: { user: me } });
    this.pump();
  }

  /** Send what the outbox holds, as fast as the token bucket allows. */
  pump() {
    if (this._closed) return;
    this._cancel(this._pumpTimer);
    this._pumpTimer = null;
    const channel = this._channel();
    const now = this.now();
    const waiting = () => this.outbox.filter((item) => item.kind === "message").length;
    if (!this.subscribed || !channel || this.conn.state !== "connected") {
      if (waiting()) {
        this.setNote("offline", `Not connected: ${waiting()} message(s) will be sent when the connection is back.`, "warn");
      }
      this.emit("change");
      return;
    }
    this.clearNote("offline");
    this.tokens = Math.min(LIMITS.burst, this.tokens + ((now - this.tokenTime) / 1000) * LIMITS.rate);
    this.tokenTime = now;
    let blocked = false;
    while (this.outbox.length > 0 && this.tokens >= 1 && now >= this.pausedUntil) {
      const item = this.outbox[0];
      let sent = false;
      try {
        sent = channel.trigger(item.event, item.data) !== false;
      } catch (err) {
        this.setNote("error", `Cannot send: ${err?.message || err}`, "warn", 5000);
      }
      if (!sent) {
        blocked = true;
        break;
      }
      this.outbox.shift();
      this.tokens -= 1;
      this.recent.push({ at: now, item });
      if (item.msg) {
        item.msg.sentParts += 1;
        if (item.msg.sentParts >= item.msg.parts) item.msg.state = "sent";
      }
    }
    this.recent = this.recent.filter((r) => r.at >= now - LIMITS.unackedMs);
    if (this.outbox.length > 0) {
      const wait = blocked
        ? 500
        : Math.max(this.pausedUntil - now, ((1 - this.tokens) / LIMITS.rate) * 1000, 15);
      this._pumpTimer = this._later(Math.ceil(wait), () => this.pump());
      const n = waiting();
      if (n > 0) {
        this.setNote("queue", `${n} message part${n === 1 ? "" : "s"} queued: Pusher allows 10 client events a second.`);
      } else {
        this.clearNote("queue");
      }
    } else {
      this.clearNote("queue");
    }
    this.emit("change");
  }

  // ------------------------------------------------------------------ history

  /** Ask the members for what was said before we came (and what we missed while disconnected). */
  requestHistory() {
    const req = `${Math.floor(this.random() * 2 ** 48).toString(36)}${this.now().toString(36)}`;
    this.myRequest = req;
    let since = 0;
    for (const m of this.sorted) if (m.state !== "queued" && m.t > since) since = m.t;
    this.outbox.unshift({
      kind: "request",
      event: EVENTS.historyRequest,
      data: { req, since, limit: LIMITS.historyLimit },
    });
    this.pump();
  }

  _historyRequested(data) {
    const req = data.req;
    if (typeof req !== "string" || this.answers.has(req) || req === this.myRequest) return;
    const since = isNumber(data.since) ? data.since : 0;
    const limit = Math.max(1, Math.min(Number.isInteger(data.limit) ? data.limit : LIMITS.historyLimit, LIMITS.historyLimit));
    if (!this.sorted.some((m) => m.t > since && m.state !== "queued")) return;
    const delay = LIMITS.answerMinMs + this.random() * LIMITS.answerSpreadMs;
    this.answers.set(
      req,
      this._later(delay, () => this._answer(req, since, limit)),
    );
  }

  _answer(req, since, limit) {
    if (!this.answers.get(req)) return;
    this.answers.set(req, false);
    const msgs = this.sorted.filter((m) => m.t > since && m.state !== "queued").slice(-limit);
    const pieces = [];
    for (const m of msgs) {
      const base = { id: m.id, t: m.t, user: { id: m.userId, name: m.name, color: m.color }, via: m.via };
      if (m.relayedBy) base.relayed_by = m.relayedBy; // passed on as not first-hand
      const chunks = splitText(m.text);
      if (chunks.length === 1) pieces.push({ ...base, text: m.text });
      else chunks.forEach((text, part) => pieces.push({ ...base, text, part, parts: chunks.length }));
    }
    const groups = [];
    let group = [];
    let size = 0;
    for (const piece of pieces) {
      const n = jsonBytes(piece) + 1;
      if (group.length && size + n > LIMITS.pieceBytes - 200) {
        groups.push(group);
        group = [];
        size = 0;
      }
      group.push(piece);
      size += n;
    }
    groups.push(group);
    groups.forEach((chunk, seq) => {
      const data = { req, horizon: this.horizon ?? 0, seq, done: seq === groups.length - 1, pieces: chunk };
      this.outbox.push({ kind: "history", event: EVENTS.history, data });
    });
    this.pump();
  }

  _historyAnswered(data, answerer = null) {
    const req = data.req;
    if (typeof req !== "string") return;
    const theirs = isNumber(data.horizon) ? data.horizon : null;
    const pending = this.answers.get(req);
    if (pending && theirs !== null && (this.horizon === null || theirs <= this.horizon)) {
      this._cancel(pending); // someone who has heard at least as much answers
      this.answers.set(req, false);
    }
    if (req !== this.myRequest) return;
    for (const piece of Array.isArray(data.pieces) ? data.pieces : []) {
      if (piece && typeof piece === "object") {
        const claimed = piece.user && typeof piece.user === "object" ? piece.user.id : undefined;
        const author = (typeof claimed === "string" || typeof claimed === "number") && claimed !== "" ? String(claimed).slice(0, 128) : "?";
        // The server stamped the answering member, not the authors of what it passes on.
        // What the answering member was itself told (relayed_by) is not first-hand either.
        const firstHand = samePerson(author, answerer) && !piece.relayed_by;
        const relayedBy = firstHand ? null : answerer ?? "?";
        this.takePiece(piece, { via: "browser", stamped: author, history: true, relayedBy, source: answerer ?? "?" });
      }
    }
    if (data.done && theirs !== null && (this.horizon === null || theirs < this.horizon)) this.horizon = theirs;
  }

  close() {
    this._closed = true;
    if (this._errorBound) this._errorBound.unbind("error", this._onError);
    for (const id of this._timers) this.clearTimer(id);
    this._timers.clear();
    super.close();
  }
}

/** The model-level part of a Chat (the body of `initialize`). */
export function initializeChat(model, conn, deps) {
  const store = new ChatStore(model, conn, deps).start();
  return { conn, store, close: () => store.close() };
}

const STATE_LABELS = { queued: "sending…", sent: "sent", received: "" };

/** One view of a Chat. Paints on animation frames; `destroy()` removes every listener it added. */
export class ChatView extends ViewBase {
  constructor(model, el, session, deps = {}) {
    super(model, el, session, deps);
    this.built = { generation: -1, count: 0 };
    this.elById = new Map();
    this.pending = new Set(); // ids of own messages not sent yet
    this.forceBottom = true;
    this.eager = deps.eager ?? true;
  }

  mount() {
    const { doc } = this;
    const root = (this.root = h(doc, "div", "lw-chat"));

    const header = h(doc, "div", "lw-chat-header");
    this.stateEl = h(doc, "span", "lw-state");
    this.stateEl.append(h(doc, "span", "lw-dot"));
    this.stateEl.title = "this browser's connection to Pusher";
    this.titleEl = h(doc, "span", "lw-chat-title");
    this.onlineEl = h(doc, "span", "lw-chat-online");
    this.facesEl = h(doc, "span", "lw-faces");
    this.countEl = h(doc, "span", "lw-member-count", "0");
    this.onlineEl.append(this.facesEl, this.countEl, h(doc, "span", "lw-label", " online"));
    header.append(this.stateEl, this.titleEl, h(doc, "span", "lw-spacer"), this.onlineEl);

    this.membersEl = h(doc, "div", "lw-chat-members");
    this.membersEl.setAttribute("aria-label", "people online");
    this.errorEl = h(doc, "div", "lw-error");
    this.errorEl.setAttribute("role", "alert");
    this.errorEl.hidden = true;

    this.logEl = h(doc, "div", "lw-chat-log");
    this.logEl.setAttribute("role", "log");
    this.logEl.setAttribute("aria-live", "polite");
    this.logEl.tabIndex = 0;
    this.emptyEl = h(doc, "div", "lw-chat-empty", "No messages yet. Say hello!");
    this.listEl = h(doc, "div", "lw-chat-list");
    this.logEl.append(this.emptyEl, this.listEl);

    this.typingEl = h(doc, "div", "lw-typing");
    this.typingEl.setAttribute("aria-live", "polite");
    this.noteEl = h(doc, "div", "lw-chat-note");
    this.noteEl.setAttribute("role", "status");
    this.noteEl.hidden = true;

    const composer = h(doc, "form", "lw-chat-composer");
    this.inputEl = h(doc, "textarea", "lw-chat-input");
    this.inputEl.rows = 1;
    this.inputEl.placeholder = "Message";
    this.inputEl.setAttribute("aria-label", "message");
    this.sendEl = h(doc, "button", "lw-chat-send", "Send");
    this.sendEl.type = "submit";
    composer.append(this.inputEl, this.sendEl);
    const hint = h(doc, "div", "lw-chat-hint", "Enter to send · Shift+Enter for a new line · Markdown: **bold**, *italic*, `code`, [text](url)");

    root.append(header, this.membersEl, this.errorEl, this.logEl, this.typingEl, this.noteEl, composer, hint);
    this.el.append(root);

    this._listen(composer, "submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    this._listen(this.inputEl, "keydown", (e) => {
      e.stopPropagation(); // typing here must not drive notebook shortcuts
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.submit();
      }
    });
    this._listen(this.inputEl, "input", () => {
      this._grow();
      if (this.inputEl.value.trim()) this.store.notifyTyping();
    });

    this._unbind.push(this.store.on("change", this.schedule), this.conn.on("change", this.schedule));
    for (const name of ["status", "error", "title"]) {
      this._onModel(`change:${name}`, this.schedule);
    }
    this.paint();
    return this;
  }

  _grow() {
    const el = this.inputEl;
    el.style.height = "auto";
    const height = Math.min(el.scrollHeight || 0, 160);
    if (height) el.style.height = `${height}px`;
  }

  submit() {
    const result = this.store.send(this.inputEl.value);
    if (result.ok) {
      this.inputEl.value = "";
      this._grow();
      this.forceBottom = true;
      this.schedule();
    }
    return result;
  }

  paint() {
    this.frame = null;
    if (this.destroyed) return;
    this._paintHeader();
    this._paintLog();
    this._paintFooter();
  }

  _paintHeader() {
    const { conn, store, model, doc } = this;
    if (this.stateEl.getAttribute("data-state") !== conn.state) this.stateEl.setAttribute("data-state", conn.state);
    const note = historyTitle(conn);
    this.stateEl.title = `this browser's connection: ${stateLabel(conn)}${note ? `\n${note}` : ""}`;
    this._text("title", this.titleEl, model.get("title") || `# ${model.get("room") || ""}`);
    const members = store.members;
    this._text("count", this.countEl, String(members.length));
    this.onlineEl.title = members.map((m) => m.name).join(", ");
    const key = JSON.stringify(members);
    if (this.texts.get("members") !== key) {
      this.texts.set("members", key);
      const me = store.me.id;
      const chips = doc.createDocumentFragment();
      for (const m of members) {
        const chip = h(doc, "span", "lw-member");
        chip.setAttribute("data-user-id", m.id);
        chip.title = m.id === m.name ? m.id : `${m.name} (${m.id})`;
        const dot = h(doc, "span", "lw-member-dot");
        dot.style.backgroundColor = m.color;
        chip.append(dot, h(doc, "span", "lw-member-name", m.name));
        if (m.id === me) {
          chip.classList.add("lw-me");
          chip.append(h(doc, "span", "lw-you", "you"));
        }
        chips.append(chip);
      }
      this.membersEl.replaceChildren(chips);
      const faces = doc.createDocumentFragment();
      for (const m of members.slice(0, 4)) faces.append(this._avatar(m.name, m.color, "lw-face"));
      this.facesEl.replaceChildren(faces);
    }
    const errors = [];
    const kernelError = model.get("error");
    if (kernelError) errors.push(`kernel: ${kernelError}`);
    if (conn.error) errors.push(`browser: ${conn.error}`);
    for (const [name, info] of conn.channels) if (info.error) errors.push(`${name}: ${info.error}`);
    const errorText = errors.join("\n");
    this._text("error", this.errorEl, errorText);
    this.errorEl.hidden = !errorText;
  }

  _avatar(name, color, cls = "lw-avatar") {
    const el = h(this.doc, "span", cls, initials(name));
    el.style.backgroundColor = color;
    el.setAttribute("aria-hidden", "true");
    return el;
  }

  _paintLog() {
    const { store, built } = this;
    const log = this.logEl;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
    const list = store.sorted;
    if (built.generation !== store.generation || built.count > list.length) {
      this.elById.clear();
      this.pending.clear();
      const frag = this.doc.createDocumentFragment();
      const start = Math.max(0, list.length - MAX_DOM_MESSAGES);
      for (let i = start; i < list.length; i++) frag.append(this._message(list[i], i > start ? list[i - 1] : null));
      this.listEl.replaceChildren(frag);
      built.generation = store.generation;
    } else if (list.length > built.count) {
      const frag = this.doc.createDocumentFragment();
      for (let i = built.count; i < list.length; i++) frag.append(this._message(list[i], list[i - 1] || null));
      this.listEl.append(frag);
      while (this.listEl.childElementCount > MAX_DOM_MESSAGES) {
        const first = this.listEl.firstElementChild;
        this.elById.delete(first.getAttribute("data-id"));
        first.remove();
      }
    }
    built.count = list.length;
    for (const id of [...this.pending]) {
      const msg = store.messages.get(id);
      const el = this.elById.get(id);
      if (!msg || !el) {
        this.pending.delete(id);
        continue;
      }
      this._state(el, msg);
      if (msg.state === "sent") this.pending.delete(id);
    }
    this.emptyEl.hidden = list.length > 0;
    if (this.forceBottom || atBottom) {
      log.scrollTop = log.scrollHeight;
      this.forceBottom = false;
    }
  }

  _state(el, msg) {
    if (el.getAttribute("data-state") === msg.state) return;
    el.setAttribute("data-state", msg.state);
    const label = el.querySelector(".lw-msg-state");
    if (label) {
      label.textContent = msg.state === "queued" && msg.parts > 1 ? `sending ${msg.sentParts}/${msg.parts}…` : STATE_LABELS[msg.state] || "";
    }
  }

  /** One message. Its text goes through renderMarkdown (DOM nodes and textContent, never HTML). */
  _message(msg, previous) {
    const { doc } = this;
    const me = this.store.me.id;
    const el = h(doc, "div", "lw-msg");
    el.setAttribute("data-id", msg.id);
    el.setAttribute("data-user-id", msg.userId);
    el.setAttribute("data-via", msg.via);
    el.setAttribute("data-state", msg.state);
    const cont =
      previous &&
      previous.userId === msg.userId &&
      previous.via === msg.via &&
      previous.relayedBy === msg.relayedBy &&
      msg.t - previous.t < GROUP_MS &&
      msg.t >= previous.t;
    if (cont) el.classList.add("lw-cont");
    if (msg.userId === me) el.classList.add("lw-own");
    if (msg.history) el.classList.add("lw-history");

    const gutter = h(doc, "div", "lw-msg-gutter");
    const when = new Date(msg.t);
    const time = h(doc, "time", "lw-msg-time", formatClock(msg.t));
    if (!Number.isNaN(when.getTime())) {
      time.setAttribute("datetime", when.toISOString());
      time.title = when.toLocaleString();
    }
    const main = h(doc, "div", "lw-msg-main");
    if (cont) {
      gutter.append(time);
    } else {
      gutter.append(this._avatar(msg.name, msg.color));
      const head = h(doc, "div", "lw-msg-head");
      const name = h(doc, "span", "lw-msg-name", msg.name);
      name.style.color = msg.color;
      name.title = msg.userId;
      head.append(name);
      if (msg.via === "python") {
        const tag = h(doc, "span", "lw-msg-via", "python");
        tag.title = "sent from Python (chat.send)";
        head.append(tag);
      }
      if (msg.relayedBy) {
        const by = this.store.relayerName(msg.relayedBy);
        const tag = h(doc, "span", "lw-msg-relayed", `relayed by ${by}`);
        tag.title = `passed on by ${msg.relayedBy}, who did not write it: its author is not verified`;
        el.setAttribute("data-relayed-by", msg.relayedBy);
        head.append(tag);
      }
      head.append(time);
      main.append(head);
    }
    const body = renderMarkdown(doc, msg.text);
    body.classList.add("lw-msg-text");
    main.append(body);
    el.append(gutter, main);
    if (msg.userId === me && msg.state !== "received") {
      const state = h(doc, "span", "lw-msg-state");
      el.append(state);
      el.setAttribute("data-state", "");
      this._state(el, msg);
      if (msg.state !== "sent") this.pending.add(msg.id);
    }
    this.elById.set(msg.id, el);
    return el;
  }

  _paintFooter() {
    const names = this.store.typingNames();
    let typing = "";
    if (names.length === 1) typing = `${names[0]} is typing…`;
    else if (names.length === 2) typing = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) typing = `${names.length} people are typing…`;
    this._text("typing", this.typingEl, typing);
    this.typingEl.classList.toggle("lw-active", Boolean(typing));
    const notes = [...this.store.notes.values()];
    const text = notes.map((n) => n.text).join("\n");
    this._text("note", this.noteEl, text);
    this.noteEl.hidden = !text;
    this.noteEl.classList.toggle("lw-warn", notes.some((n) => n.kind === "warn"));
  }
}

/** Paint a Chat into `el` (the body of `render`); returns the cleanup. */
export function renderChat(model, el, session, deps) {
  const view = new ChatView(model, el, session, deps).mount();
  return () => view.destroy();
}
