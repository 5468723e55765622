import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";

import { Connection, isLoopback, jupyterBaseUrl, planRoutes, pusherOptions } from "../src/connection.js";
import { configDoc, FakeModel, FakePusher, jsonResponse, LOOP, ManualTimers, settle } from "./helpers.js";

let realFetch;
beforeEach(() => {
  FakePusher.reset();
  realFetch = globalThis.fetch;
});
afterEach(() => {
  globalThis.fetch = realFetch;
});

function open(overrides = {}, extra = {}) {
  const model = new FakeModel(overrides);
  const timers = new ManualTimers();
  const conn = new Connection(model, {
    Pusher: FakePusher,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
    now: () => 1_700_000_000_000 + timers.now,
    ...extra,
  }).start();
  return { model, conn, timers, pusher: FakePusher.last() };
}

describe("pusher-js options", () => {
  test("come from _connection, with stats off and the kernel as authorizer", () => {
    const { pusher } = open({
      _connection: {
        key: "k1",
        cluster: "eu",
        forceTLS: false,
        wsHost: "127.0.0.1",
        wsPort: 6001,
        wssPort: 6001,
        enabledTransports: ["ws", "wss"],
        bogus: "ignored",
      },
    });
    assert.equal(pusher.key, "k1");
    const o = pusher.options;
    assert.equal(o.cluster, "eu");
    assert.equal(o.forceTLS, false);
    assert.equal(o.wsHost, "127.0.0.1");
    assert.equal(o.wsPort, 6001);
    assert.equal(o.wssPort, 6001);
    assert.deepEqual(o.enabledTransports, ["ws", "wss"]);
    assert.equal(o.disableStats, true);
    assert.equal(typeof o.channelAuthorization.customHandler, "function");
    assert.equal(o.bogus, undefined);
  });

  test("never allow SockJS, the transport that loads a script from a CDN", () => {
    const o = pusherOptions({ key: "k", cluster: "mt1", forceTLS: true }, () => {});
    assert.deepEqual(o.disabledTransports, ["sockjs"]);
    assert.equal(o.forceTLS, true);
  });

  test("a missing key is shown as a failed connection, not thrown", () => {
    const { conn } = open({ _connection: {} });
    assert.equal(conn.state, "failed");
    assert.match(conn.error, /no app key/);
  });

  test("a throwing constructor is shown as a failed connection", () => {
    class Broken {
      constructor() {
        throw new Error("boom");
      }
    }
    const { conn } = open({}, { Pusher: Broken });
    assert.equal(conn.state, "failed");
    assert.match(conn.error, /boom/);
  });
});

describe("connection state", () => {
  test("follows pusher-js, initialized shown as connecting", () => {
    const { conn, pusher } = open();
    const changes = [];
    conn.on("change", () => changes.push(conn.state));
    assert.equal(conn.state, "connecting");
    pusher.connect("11.22");
    assert.equal(conn.state, "connected");
    assert.equal(conn.socketId, "11.22");
    pusher.connection.setState("unavailable");
    assert.equal(conn.state, "unavailable");
    assert.match(conn.error, /cannot reach/);
    pusher.connection.setState("connected");
    assert.equal(conn.error, "");
    assert.ok(changes.includes("unavailable"));
  });

  test("a server refusal (PusherError) is shown", () => {
    const { conn, pusher } = open();
    pusher.connection.emit("error", { type: "PusherError", data: { code: 4001, message: "App key x not in this cluster" } });
    assert.equal(conn.error, "App key x not in this cluster (4001)");
  });
});

describe("channels", () => {
  test("subscribes to `channels` and follows change:channels", () => {
    const { model, conn, pusher } = open({ channels: ["a", "b"] });
    assert.deepEqual(pusher.subscribes, ["a", "b"]);
    const a = pusher.channels.get("a");
    model.set("channels", ["b", "c"]);
    assert.deepEqual(pusher.unsubscribes, ["a"]);
    assert.deepEqual(pusher.subscribes, ["a", "b", "c"]);
    assert.equal(a.globals.length, 0, "the global callback of a is unbound");
    assert.deepEqual([...conn.channels.keys()], ["b", "c"]);
  });

  test("subscription state per channel", () => {
    const { conn, pusher } = open({ channels: ["a", "presence-room"] });
    assert.equal(conn.channels.get("a").state, "subscribing");
    globalThis.fetch = async () => jsonResponse(200, { auth: "k:sig", channel_data: '{"user_id":"u"}' });
    pusher.connect();
    assert.equal(conn.channels.get("a").state, "subscribed");
    pusher.connection.setState("connecting");
    assert.equal(conn.channels.get("a").state, "subscribing", "resubscribed by pusher-js on reconnect");
  });

  test("events: internal ones ignored, the rest emitted with time, channel, data and user_id", () => {
    const { conn, pusher, timers } = open({ channels: ["a", "presence-room"] });
    const rows = [];
    conn.on("event", (row) => rows.push(row));
    pusher.channels.get("a").emit("pusher:subscription_succeeded", {});
    pusher.channels.get("a").emit("pusher_internal:subscription_count", { subscription_count: 2 });
    timers.advance(5);
    pusher.deliver("a", "tick", { i: 1 });
    pusher.deliver("presence-room", "client-typing", { on: true }, "alice");
    assert.equal(rows.length, 2);
    assert.deepEqual(rows[0], { t: 1_700_000_000_005, channel: "a", event: "tick", data: { i: 1 }, user_id: null });
    assert.equal(rows[1].user_id, "alice");
    assert.equal(rows[1].event, "client-typing");
  });

  test("subscription errors are shown on the channel", () => {
    const { conn, pusher } = open({ channels: ["a"] });
    pusher.channels.get("a").emit("pusher:subscription_error", { type: "AuthError", error: "nope", status: 403 });
    assert.equal(conn.channels.get("a").state, "error");
    assert.equal(conn.channels.get("a").error, "authorization: nope");
  });
});

describe("authorization", () => {
  test("endpoint: POSTs the token as text/plain and passes the signature to pusher-js", async () => {
    const { conn, pusher, model } = open({ channels: ["presence-team"] });
    const calls = [];
    globalThis.fetch = async (url, init) => {
      calls.push({ url, init });
      return jsonResponse(200, { auth: "key:abc", channel_data: '{"user_id":"me"}' });
    };
    pusher.connect("9.9");
    await settle();
    assert.equal(calls.length, 1);
    assert.equal(calls[0].url, "http://127.0.0.1:9999/auth");
    assert.equal(calls[0].init.method, "POST");
    assert.equal(calls[0].init.headers["Content-Type"], "text/plain");
    assert.deepEqual(JSON.parse(calls[0].init.body), {
      token: "tok-1",
      socket_id: "9.9",
      channel_name: "presence-team",
    });
    const channel = pusher.channels.get("presence-team");
    assert.deepEqual(channel.authData, { auth: "key:abc", channel_data: '{"user_id":"me"}' });
    assert.equal(conn.channels.get("presence-team").state, "subscribed");
    assert.equal(conn.channels.get("presence-team").members, 1);
    assert.equal(model.sent.length, 0, "no comm message when the endpoint answers");
  });

  test("endpoint refusal (403 {error}): the error goes to pusher-js and is shown", async () => {
    const { conn, pusher, model } = open({ channels: ["private-x"] });
    globalThis.fetch = async () => jsonResponse(403, { error: "this widget did not ask for private-x" });
    const errors = [];
    pusher.connect();
    pusher.channels.get("private-x").bind("pusher:subscription_error", (e) => errors.push(e));
    await settle();
    assert.equal(errors.length, 1);
    assert.equal(errors[0].error, "this widget did not ask for private-x");
    const info = conn.channels.get("private-x");
    assert.equal(info.state, "error");
    assert.match(info.error, /did not ask for private-x/);
    assert.equal(model.sent.length, 0, "a refusal is final: no comm fallback");
  });

  test("endpoint unreachable: falls back to the comm, round trip", async () => {
    const { conn, pusher, model } = open({ channels: ["private-x"] });
    globalThis.fetch = async () => {
      throw new TypeError("Failed to fetch");
    };
    pusher.connect("5.6");
    await settle();
    assert.equal(model.sent.length, 1);
    const request = model.sent[0];
    assert.equal(request.type, "auth");
    assert.equal(request.socket_id, "5.6");
    assert.equal(request.channel_name, "private-x");
    assert.equal(typeof request.id, "string");
    assert.equal(conn.channels.get("private-x").state, "authorizing");
    model.receive({ type: "auth", id: "someone-else", auth: "wrong" });
    assert.equal(pusher.channels.get("private-x").authData, null, "answers to other ids are ignored");
    model.receive({ type: "auth", id: request.id, auth: "key:sig" });
    await settle();
    assert.deepEqual(pusher.channels.get("private-x").authData, { auth: "key:sig" });
    assert.equal(conn.channels.get("private-x").state, "subscribed");
  });

  test("comm answer with an error is shown", async () => {
    const { conn, pusher, model } = open({ channels: ["private-x"], _auth: {} });
    pusher.connect();
    await settle();
    assert.equal(model.sent.length, 1, "no endpoint: straight to the comm");
    model.receive({ type: "auth", id: model.sent[0].id, error: "needs the app secret" });
    await settle();
    assert.equal(conn.channels.get("private-x").state, "error");
    assert.match(conn.channels.get("private-x").error, /needs the app secret/);
  });

  test("comm timeout is shown, and a late answer resubscribes", async () => {
    const { conn, pusher, model, timers } = open({ channels: ["private-x"], _auth: {} });
    pusher.connect();
    await settle();
    const { id } = model.sent[0];
    timers.advance(30_000);
    await settle();
    assert.equal(conn.channels.get("private-x").state, "error");
    assert.match(conn.channels.get("private-x").error, /no answer from the kernel within 30 s/);
    const before = pusher.subscribes.length;
    model.receive({ type: "auth", id, auth: "key:late" });
    assert.equal(pusher.subscribes.length, before + 1, "subscribed again");
    assert.equal(model.sent.length, 2, "a fresh request");
  });

  test("an endpoint that hangs counts as unreachable after its timeout", async () => {
    const timers = new ManualTimers();
    const model = new FakeModel({ channels: ["private-x"] });
    globalThis.fetch = (_url, init) =>
      new Promise((_resolve, reject) => {
        init.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      });
    new Connection(model, {
      Pusher: FakePusher,
      setTimeout: timers.setTimeout,
      clearTimeout: timers.clearTimeout,
    }).start();
    FakePusher.last().connect();
    await settle();
    assert.equal(model.sent.length, 0);
    timers.advance(10_000);
    await settle();
    assert.equal(model.sent.length, 1);
  });
});

describe("close", () => {
  test("disconnects, unbinds and removes the model listeners", async () => {
    const { conn, pusher, model, timers } = open({ channels: ["a", "private-x"], _auth: {} });
    pusher.connect();
    await settle();
    assert.ok(model.listenerCount() > 0);
    assert.equal(timers.pending, 1, "the comm request's timeout");
    conn.close();
    assert.equal(pusher.disconnected, true);
    assert.equal(model.listenerCount(), 0);
    assert.equal(timers.pending, 0);
    assert.equal(pusher.connection.count(), 0, "our connection callbacks are unbound");
    assert.deepEqual(pusher.unsubscribes.sort(), ["a", "private-x"]);
    conn.close(); // twice is harmless
  });
});

// ------------------------------------------------------------------------------------ routes (issue 12)

const REMOTE_PAGE = { hostname: "lab.test", port: 8888, https: false, baseUrl: "/user/alice/" };
const LOCAL_PAGE = { hostname: "127.0.0.1", port: 8888, https: false, baseUrl: "/" };

function openAt(loc, doc, connection = LOOP, extra = {}) {
  return open({ _connection: connection, route: "" }, { location: loc, document: doc, ...extra });
}


describe("routes", () => {
  test("planRoutes: direct for hosted and non-loopback servers, whatever the page", () => {
    assert.deepEqual(planRoutes({ key: "k" }, REMOTE_PAGE).map((c) => c.route), ["direct"]);
    const lan = { ...LOOP, wsHost: "pusher.example.org", serverId: undefined };
    assert.deepEqual(planRoutes(lan, REMOTE_PAGE).map((c) => c.route), ["direct"]);
  });

  test("planRoutes: a loopback server from a remote page goes through Jupyter, never direct", () => {
    const plan = planRoutes(LOOP, REMOTE_PAGE);
    assert.deepEqual(plan.map((c) => c.via), ["livewidget extension", "jupyter-server-proxy"]);
    assert.equal(plan[0].options.wsHost, "lab.test");
    assert.equal(plan[0].options.wsPort, 8888);
    assert.equal(plan[0].options.wsPath, "/user/alice/livewidget/0123456789abcdef0123");
    assert.equal(plan[0].infoUrl, "/user/alice/livewidget/0123456789abcdef0123/info");
    assert.equal(plan[1].options.wsPath, "/user/alice/proxy/6001");
    // no Jupyter page config: nothing can work from there
    assert.deepEqual(planRoutes(LOOP, { ...REMOTE_PAGE, baseUrl: null }), []);
  });

  test("planRoutes: from a loopback page direct comes first; forcing keeps only that route", () => {
    assert.deepEqual(planRoutes(LOOP, LOCAL_PAGE).map((c) => c.route), ["direct", "jupyter", "jupyter"]);
    assert.deepEqual(planRoutes({ ...LOOP, route: "jupyter" }, LOCAL_PAGE).map((c) => c.route), ["jupyter", "jupyter"]);
    assert.deepEqual(planRoutes({ ...LOOP, route: "direct" }, REMOTE_PAGE).map((c) => c.route), ["direct"]);
    assert.deepEqual(planRoutes({ ...LOOP, route: "relay" }, LOCAL_PAGE), []);
    assert.equal(isLoopback("localhost"), true);
    assert.equal(isLoopback("[::1]"), true);
    assert.equal(isLoopback("127.0.0.53"), true);
    assert.equal(isLoopback("lab.test"), false);
  });

  test("the base URL comes from #jupyter-config-data", () => {
    assert.equal(jupyterBaseUrl(configDoc({ baseUrl: "/user/alice/" })), "/user/alice/");
    assert.equal(jupyterBaseUrl(configDoc({ baseUrl: "/user/bob" })), "/user/bob/");
    assert.equal(jupyterBaseUrl(configDoc({})), null);
    assert.equal(jupyterBaseUrl({ getElementById: () => null }), null);
  });

  test("jupyter route: checked by info, confirmed by the connection, reported to the kernel", async () => {
    const asked = [];
    const fetch = async (url, init) => {
      asked.push([url, init.credentials]);
      return jsonResponse(200, { server_id: LOOP.serverId, key: "k" });
    };
    const loc = { hostname: "lab.test", port: "8888", protocol: "http:" };
    const { conn, model } = openAt(loc, configDoc({ baseUrl: "/user/alice/" }), LOOP, { fetch });
    assert.equal(FakePusher.instances.length, 0, "no connection before the identity check");
    await settle();
    assert.deepEqual(asked, [["/user/alice/livewidget/0123456789abcdef0123/info", "same-origin"]]);
    const pusher = FakePusher.last();
    assert.equal(pusher.options.wsHost, "lab.test");
    assert.equal(pusher.options.wsPath, "/user/alice/livewidget/0123456789abcdef0123");
    assert.equal(conn.route, "", "not counted before the server confirms");
    assert.equal(model.get("route"), "");
    pusher.connect();
    assert.equal(conn.route, "jupyter");
    assert.equal(conn.via, "livewidget extension");
    assert.equal(model.get("route"), "jupyter");
    assert.equal(model.saved, 1);
    conn.close();
  });

  test("an info answer naming another server skips the extension for the proxy route", async () => {
    const fetch = async () => jsonResponse(200, { server_id: "ffffffffffffffffffff", key: "k" });
    const loc = { hostname: "lab.test", port: "", protocol: "https:" };
    const { conn } = openAt(loc, configDoc({ baseUrl: "/" }), LOOP, { fetch });
    await settle();
    assert.equal(FakePusher.instances.length, 1);
    const o = FakePusher.last().options;
    assert.equal(o.wsPath, "/proxy/6001");
    assert.equal(o.wsPort, 443);
    assert.equal(o.forceTLS, true);
    FakePusher.last().connect();
    assert.equal(conn.route, "jupyter");
    assert.equal(conn.via, "jupyter-server-proxy");
    conn.close();
  });

  test("a candidate not confirmed in time, or refused with 4001, gives way to the next", async () => {
    const loc = { hostname: "127.0.0.1", port: "8888", protocol: "http:" };
    const fetch = async () => jsonResponse(200, { server_id: LOOP.serverId, key: "k" });
    const { conn, timers } = openAt(loc, configDoc({ baseUrl: "/" }), LOOP, { fetch, routeTrialMs: 5000 });
    const direct = FakePusher.last();
    assert.equal(direct.options.wsHost, "127.0.0.1");
    assert.equal(direct.options.wsPath, undefined);
    timers.advance(5000);
    assert.equal(direct.disconnected, true);
    await settle();
    const viaExtension = FakePusher.last();
    assert.notEqual(viaExtension, direct);
    assert.equal(viaExtension.options.wsPath, "/livewidget/0123456789abcdef0123");
    const refusal = { type: "PusherError", data: { code: 4001, message: "App key k does not exist" } };
    viaExtension.connection.emit("error", refusal);
    assert.equal(viaExtension.disconnected, true);
    const viaProxy = FakePusher.last();
    assert.equal(viaProxy.options.wsPath, "/proxy/6001");
    viaProxy.connect();
    assert.equal(conn.route, "jupyter");
    conn.close();
  });

  test("forcing relay with a kernel that does not offer it fails with a reason instead of connecting", () => {
    const { conn } = openAt(null, null, { ...LOOP, route: "relay" });
    assert.equal(FakePusher.instances.length, 0);
    assert.equal(conn.state, "failed");
    assert.match(conn.error, /route relay forced, but this kernel's livewidget does not offer it/);
  });

  test("from a remote page the kernel's loopback auth endpoint is not fetched: the comm signs", async () => {
    const fetched = [];
    const fetch = async (url) => {
      fetched.push(url);
      return jsonResponse(200, { server_id: LOOP.serverId, key: "k" });
    };
    const loc = { hostname: "lab.test", port: "8888", protocol: "http:" };
    const { conn, model } = openAt(loc, configDoc({ baseUrl: "/" }), LOOP, { fetch });
    model.set("channels", ["private-ops"]);
    await settle();
    FakePusher.last().connect();
    await settle();
    assert.deepEqual(fetched, ["/livewidget/0123456789abcdef0123/info"]);
    assert.equal(model.sent.at(-1).type, "auth");
    assert.equal(model.sent.at(-1).channel_name, "private-ops");
    conn.close();
  });
});

describe("signing from a page that is not on loopback", () => {
  const AUTH = { url: "http://127.0.0.1:9999/auth", token: "tok-1", id: "abcdefabcdefabcdef01" };

  function remote(fetch) {
    const loc = { hostname: "lab.test", port: "8888", protocol: "http:" };
    const doc = { ...configDoc({ baseUrl: "/user/alice/" }), cookie: "a=b; _xsrf=2|x%3Dy|z; c=d" };
    return open(
      { _connection: LOOP, route: "", _auth: AUTH, channels: ["presence-room"] },
      { location: loc, document: doc, fetch },
    );
  }

  test("goes same-origin through the extension, with Jupyter's XSRF token", async () => {
    const calls = [];
    const fetch = async (url, init) => {
      calls.push([url, init]);
      if (url.endsWith("/info")) return jsonResponse(200, { server_id: LOOP.serverId, key: "k" });
      return jsonResponse(200, { auth: "k:sig", channel_data: '{"user_id":"u"}' });
    };
    const { conn, model } = remote(fetch);
    await settle();
    FakePusher.last().connect();
    await settle();
    const [url, init] = calls[1];
    assert.equal(url, "/user/alice/livewidget/auth/abcdefabcdefabcdef01");
    assert.equal(init.credentials, "same-origin");
    assert.equal(init.headers["X-XSRFToken"], "2|x=y|z");
    assert.deepEqual(JSON.parse(init.body), { token: "tok-1", socket_id: "1234.5678", channel_name: "presence-room" });
    assert.ok(!calls.some(([u]) => u.startsWith("http://127.0.0.1")), "never the kernel's loopback");
    assert.equal(conn.channels.get("presence-room").state, "subscribed");
    assert.equal(model.sent.length, 0, "no comm message needed");
    conn.close();
  });

  test("falls back to the comm when the extension does not know the kernel (404)", async () => {
    const fetch = async (url) =>
      url.endsWith("/info") ? jsonResponse(200, { server_id: LOOP.serverId, key: "k" }) : jsonResponse(404, {});
    const { conn, model } = remote(fetch);
    await settle();
    FakePusher.last().connect();
    await settle();
    assert.equal(model.sent.at(-1)?.type, "auth");
    conn.close();
  });

  test("a refusal from the kernel's endpoint is shown, not retried over the comm", async () => {
    const fetch = async (url) =>
      url.endsWith("/info")
        ? jsonResponse(200, { server_id: LOOP.serverId, key: "k" })
        : jsonResponse(403, { error: "this widget did not ask for presence-room" });
    const { conn, model } = remote(fetch);
    await settle();
    FakePusher.last().connect();
    await settle();
    assert.equal(model.sent.length, 0);
    assert.match(conn.channels.get("presence-room").error, /did not ask for/);
    conn.close();
  });
});

test("routes: when the only route's identity check fails, the widget says why instead of connecting", async () => {
  const fetch = async () => jsonResponse(404, {});
  const loc = { hostname: "lab.test", port: "8888", protocol: "http:" };
  const noPort = { ...LOOP, wsPort: undefined, wssPort: undefined };
  const { conn } = openAt(loc, configDoc({ baseUrl: "/" }), noPort, { fetch });
  await settle();
  assert.equal(FakePusher.instances.length, 0);
  assert.equal(conn.state, "failed");
  assert.match(conn.error, /does not know this kernel's Pusher server/);
});
