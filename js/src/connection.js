// The browser's own Pusher connection for one widget model, shared by every view of it.
//
// Created in `initialize` (once per model), closed by its cleanup. It builds the pusher-js client from
// the `_connection` trait (never a secret: private and presence channels are signed by the kernel,
// see `authorize`), subscribes to the `channels` trait and follows its changes, and reports the
// connection state, each channel's subscription state and every event. The pusher-js constructor is
// injected (`deps.Pusher`) so tests can substitute a fake one.

import { Emitter } from "./util.js";

/** The states shown for the browser connection (pusher-js's `initialized` is shown as connecting). */
export const CONNECTION_STATES = ["connecting", "connected", "unavailable", "failed", "disconnected"];

const AUTH_TIMEOUT_MS = 30_000; // waiting for the kernel's comm answer (it comes when the cell ends)
const FETCH_TIMEOUT_MS = 10_000; // waiting for the kernel's HTTP endpoint before trying the comm

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
    /** name -> {state: subscribing|authorizing|subscribed|error, error, members, handler} */
    this.channels = new Map();
    this.pusher = null;
    this._pending = new Map(); // comm authorization requests: id -> {resolve, reject, timer, channel}
    this._late = new Map(); // timed-out comm requests: id -> channel, resubscribed if answered later
    this._seq = 0;
    this._lastRow = null; // the row just emitted, for the user_id that bind_global does not pass
    this._closed = false;
    this._bound = null; // our callbacks on pusher.connection, unbound on close
    this._onChannels = () => this.syncChannels();
    this._onCustom = (msg) => this._handleCustom(msg);
  }

  /** Create the pusher-js client and subscribe. Never throws: a failure is shown as the state. */
  start() {
    this.model.on("change:channels", this._onChannels);
    this.model.on("msg:custom", this._onCustom);
    const conn = this.model.get("_connection") || {};
    try {
      if (!conn.key) throw new Error("no app key in the widget's _connection");
      const Pusher = this.deps.Pusher;
      this.pusher = new Pusher(conn.key, pusherOptions(conn, (params, cb) => this.authorize(params, cb)));
    } catch (err) {
      this.state = "failed";
      this.error = `cannot start pusher-js: ${messageOf(err)}`;
      this.emit("change");
      return this;
    }
    const connection = this.pusher.connection;
    this._bound = {
      state_change: ({ current }) => this._setState(current),
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
    this._setState(connection.state);
    this.syncChannels();
    return this;
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
      if (state === "unavailable" && !this.error) {
        const conn = this.model.get("_connection") || {};
        const where = conn.wsHost ? `${conn.wsHost}:${conn.forceTLS ? conn.wssPort : conn.wsPort}` : "Pusher";
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
    if (data && data.message) {
      this.error = data.code ? `${data.message} (${data.code})` : String(data.message);
      this.emit("change");
    }
  }

  /** Subscribe to the `channels` trait and unsubscribe from channels no longer in it. */
  syncChannels() {
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

  _subscribe(name) {
    const info = { state: "subscribing", error: "", members: null, handler: null, channel: null };
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
    if (this.channels.get(name) !== info) return; // unsubscribed meanwhile
    if (isInternal(event)) {
      this._onInternal(info, event, data);
      return;
    }
    const row = { t: this.now(), channel: name, event, data, user_id: null };
    this._lastRow = row;
    this.emit("event", row);
  }

  _onInternal(info, event, data) {
    const members = info.channel?.members;
    switch (event) {
      case "pusher:subscription_succeeded":
        info.state = "subscribed";
        info.error = "";
        if (members && typeof members.count === "number") info.members = members.count;
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
    if (auth.url) {
      try {
        return await this._authorizeHttp(auth, socketId, channelName);
      } catch (err) {
        if (!(err instanceof Unreachable)) throw err;
      }
    }
    return this._authorizeComm(socketId, channelName);
  }

  async _authorizeHttp(auth, socketId, channelName) {
    const fetchImpl = this.deps.fetch || globalThis.fetch;
    if (typeof fetchImpl !== "function") throw new Unreachable("no fetch");
    const setT = this.deps.setTimeout || setTimeout;
    const clearT = this.deps.clearTimeout || clearTimeout;
    const abort = typeof AbortController === "function" ? new AbortController() : null;
    const timer = setT(() => abort?.abort(), this.deps.fetchTimeoutMs ?? FETCH_TIMEOUT_MS);
    let response;
    try {
      response = await fetchImpl(auth.url, {
        method: "POST",
        // text/plain keeps it a "simple" CORS request: no preflight
        headers: { "Content-Type": "text/plain" },
        body: JSON.stringify({ token: auth.token, socket_id: socketId, channel_name: channelName }),
        cache: "no-store",
        credentials: "omit",
        signal: abort?.signal,
      });
    } catch (err) {
      throw new Unreachable(messageOf(err));
    } finally {
      clearT(timer);
    }
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

  _handleCustom(msg) {
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
    if (this.pusher) {
      for (const [name, info] of this.channels) {
        info.channel?.unbind_global(info.handler);
        this.pusher.unsubscribe(name);
      }
      for (const [name, fn] of Object.entries(this._bound || {})) this.pusher.connection.unbind(name, fn);
      this.pusher.disconnect();
    }
    this.channels.clear();
    this.state = "disconnected";
    this.removeAll();
  }
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
