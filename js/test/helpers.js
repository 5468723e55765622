// Test doubles: an anywidget model, a pusher-js client, timers and animation frames run by hand, and a
// DOM (happy-dom). No module mocking: the code under test takes these through its `deps`.

import { Window } from "happy-dom";

/** The traits a LiveWidget syncs (livewidget/widgets/_base.py), with test defaults. */
export function traits(overrides = {}) {
  return {
    _kind: "feed",
    _connection: { key: "testkey", cluster: "mt1", forceTLS: false },
    channels: ["sensors"],
    event_filter: [],
    _auth: { url: "http://127.0.0.1:9999/auth", token: "tok-1" },
    status: "connecting",
    error: "",
    count: 0,
    dropped: 0,
    rate: 0,
    last: null,
    _history: new DataView(new ArrayBuffer(0)),
    max_log: 500,
    title: "sensors",
    ...overrides,
  };
}

/** A Backbone-like widget model with the anywidget surface, recording what is sent to the kernel. */
export class FakeModel {
  constructor(overrides = {}) {
    this.attributes = traits(overrides);
    this.listeners = new Map();
    this.sent = [];
    this.saved = 0;
  }

  get(name) {
    return this.attributes[name];
  }

  set(name, value) {
    this.attributes[name] = value;
    this.trigger(`change:${name}`, this, value);
  }

  save_changes() {
    this.saved += 1;
  }

  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, []);
    this.listeners.get(event).push(fn);
  }

  off(event, fn) {
    const list = this.listeners.get(event) || [];
    const i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
  }

  send(content, _callbacks, _buffers) {
    this.sent.push(content);
  }

  trigger(event, ...args) {
    for (const fn of [...(this.listeners.get(event) || [])]) fn(...args);
  }

  /** A custom message from the kernel. */
  receive(content, buffers = []) {
    this.trigger("msg:custom", content, buffers);
  }

  listenerCount() {
    let n = 0;
    for (const list of this.listeners.values()) n += list.length;
    return n;
  }

  /** What anywidget hands to initialize()/render(): a fresh object over the same model each time. */
  proxy() {
    return {
      get: this.get.bind(this),
      set: this.set.bind(this),
      save_changes: this.save_changes.bind(this),
      send: this.send.bind(this),
      on: (event, fn) => this.on(event, fn),
      off: (event, fn) => this.off(event, fn),
    };
  }
}

/** JSON lines as the kernel writes `_history`, delivered as anywidget does: a DataView. */
export function historyBytes(rows) {
  const bytes = new TextEncoder().encode(rows.map((r) => JSON.stringify(r)).join("\n"));
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

class Dispatcher {
  constructor() {
    this.callbacks = new Map();
    this.globals = [];
  }

  bind(event, fn) {
    if (!this.callbacks.has(event)) this.callbacks.set(event, []);
    this.callbacks.get(event).push(fn);
    return this;
  }

  unbind(event, fn) {
    if (event === undefined) {
      this.callbacks.clear();
      return this;
    }
    const list = this.callbacks.get(event) || [];
    const i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
    return this;
  }

  bind_global(fn) {
    this.globals.push(fn);
    return this;
  }

  unbind_global(fn) {
    this.globals = this.globals.filter((g) => g !== fn);
    return this;
  }

  emit(event, data, metadata) {
    for (const fn of [...this.globals]) fn(event, data); // as pusher-js: no metadata for globals
    for (const fn of [...(this.callbacks.get(event) || [])]) fn(data, metadata);
  }

  count() {
    let n = this.globals.length;
    for (const list of this.callbacks.values()) n += list.length;
    return n;
  }
}

class FakeConnection extends Dispatcher {
  constructor() {
    super();
    this.state = "initialized";
    this.socket_id = undefined;
  }

  setState(state) {
    const previous = this.state;
    this.state = state;
    this.emit("state_change", { previous, current: state });
    this.emit(state);
  }
}

class FakeChannel extends Dispatcher {
  constructor(name, pusher) {
    super();
    this.name = name;
    this.pusher = pusher;
    this.subscribed = false;
    this.authData = null;
    this.members = name.startsWith("presence-") ? { count: 0 } : undefined;
  }

  /** As pusher-js: private and presence channels ask the authorizer, then the server confirms. */
  subscribe() {
    if (this.pusher.connection.state !== "connected") return;
    if (!/^(private|presence)-/.test(this.name)) {
      this.pusher.send_event("pusher:subscribe", { auth: "", channel: this.name });
      this.succeed();
      return;
    }
    const handler = this.pusher.options.channelAuthorization.customHandler;
    handler({ socketId: this.pusher.connection.socket_id, channelName: this.name }, (err, data) => {
      if (err) {
        this.emit("pusher:subscription_error", { type: "AuthError", error: err.message, status: 200 });
        return;
      }
      this.authData = data;
      this.pusher.send_event("pusher:subscribe", { auth: data.auth, channel: this.name });
      this.succeed();
    });
  }

  succeed() {
    this.subscribed = true;
    if (this.members) this.members.count = 1;
    this.emit("pusher:subscription_succeeded", {});
  }
}

/** A pusher-js stand-in: records what it is asked; tests drive the connection and the events. */
export class FakePusher {
  static instances = [];

  constructor(key, options) {
    this.key = key;
    this.options = options;
    this.connection = new FakeConnection();
    this.channels = new Map();
    this.subscribes = [];
    this.unsubscribes = [];
    this.disconnected = false;
    this.sent = []; // frames sent with send_event: {name, data, channel}
    FakePusher.instances.push(this);
  }

  /** As pusher-js: what channels send (pusher:subscribe); connection wrappers may replace it. */
  send_event(name, data, channel) {
    this.sent.push({ name, data, channel });
    return true;
  }

  /** An event as a server with channel history sends it: delivered, then the raw frame on the transport
   * (pusher-js decodes frames without `serial`/`stream_id`; the transport emits the raw frame after). */
  deliverRaw(channel, event, data, extra = {}) {
    this.deliver(channel, event, data, extra.user_id, extra);
  }

  subscribe(name) {
    let channel = this.channels.get(name);
    if (!channel) this.channels.set(name, (channel = new FakeChannel(name, this)));
    this.subscribes.push(name);
    channel.subscribe();
    return channel;
  }

  unsubscribe(name) {
    this.channels.delete(name);
    this.unsubscribes.push(name);
  }

  disconnect() {
    this.disconnected = true;
    this.connection.setState("disconnected");
  }

  /** The server accepted the connection: subscribe what was asked before, as pusher-js does. */
  connect(socketId = "1234.5678") {
    this.connection.socket_id = socketId;
    this.connection.connection = { transport: new Dispatcher() }; // a new socket each time, as pusher-js
    this.connection.setState("connected");
    for (const channel of this.channels.values()) channel.subscribe();
  }

  /** An event from the server, delivered the way pusher-js does (channel first, then "message"). */
  deliver(channel, event, data, userId, extra = {}) {
    const ch = this.channels.get(channel);
    if (ch) ch.emit(event, data, userId ? { user_id: userId } : {});
    const message = { event, channel, data };
    if (userId) message.user_id = userId;
    this.connection.emit("message", message);
    // then the transport's raw frame, as pusher-js's transport emits it after its own listener ran
    let text = "";
    try {
      text = JSON.stringify({ ...message, data: JSON.stringify(data), ...extra });
    } catch {
      text = JSON.stringify({ event, channel, data: "(too deep for the fake)", ...extra });
    }
    this.connection.connection?.transport?.emit("message", { data: text });
  }

  static reset() {
    FakePusher.instances = [];
  }

  static last() {
    return FakePusher.instances[FakePusher.instances.length - 1];
  }
}

/** setTimeout / clearTimeout run by hand: `advance(ms)` fires what is due. */
export class ManualTimers {
  constructor() {
    this.now = 0;
    this.timers = new Map();
    this.next = 1;
    this.setTimeout = (fn, ms = 0) => {
      const id = this.next++;
      this.timers.set(id, { at: this.now + ms, fn });
      return id;
    };
    this.clearTimeout = (id) => this.timers.delete(id);
  }

  advance(ms) {
    this.now += ms;
    for (const [id, t] of [...this.timers].sort((a, b) => a[1].at - b[1].at)) {
      if (t.at <= this.now && this.timers.has(id)) {
        this.timers.delete(id);
        t.fn();
      }
    }
  }

  get pending() {
    return this.timers.size;
  }
}

/** requestAnimationFrame run by hand: `frame()` runs the callbacks queued so far. */
export class ManualFrames {
  constructor() {
    this.queue = new Map();
    this.next = 1;
    this.requested = 0;
    this.requestAnimationFrame = (fn) => {
      this.requested += 1;
      const id = this.next++;
      this.queue.set(id, fn);
      return id;
    };
    this.cancelAnimationFrame = (id) => this.queue.delete(id);
  }

  frame() {
    const due = [...this.queue.values()];
    this.queue.clear();
    for (const fn of due) fn();
    return due.length;
  }
}

/** A fresh happy-dom document; `close()` when done. */
export function makeDom() {
  const window = new Window({ url: "http://localhost/" });
  const document = window.document;
  return {
    window,
    document,
    container() {
      const el = document.createElement("div");
      document.body.append(el);
      return el;
    },
    close: () => window.happyDOM.close(),
  };
}

/** Let pending promise callbacks (fetch stubs, then-chains) run. */
export async function settle(times = 10) {
  for (let i = 0; i < times; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** A fetch Response-like answer. */
export function jsonResponse(status, body) {
  return {
    ok: status >= 200 && status < 300,
    status,
    json: async () => body,
  };
}

/** A connection config (the `_connection` trait) for an embedded server on the kernel's loopback. */
export const LOOP = {
  key: "k",
  cluster: "mt1",
  forceTLS: false,
  wsHost: "127.0.0.1",
  wsPort: 6001,
  wssPort: 6001,
  serverId: "0123456789abcdef0123",
  route: "auto",
};

/** A page document whose Jupyter configuration (`#jupyter-config-data`) is `config`. */
export function configDoc(config) {
  return { getElementById: (id) => (id === "jupyter-config-data" ? { textContent: JSON.stringify(config) } : null) };
}
