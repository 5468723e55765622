// The relay route (issue 12): the kernel's one coalesced stream over a comm, fanned out to the models.

import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import { Connection, planRoutes, relayHub } from "../src/connection.js";
import { configDoc, FakeModel, FakePusher, jsonResponse, LOOP, ManualTimers, settle } from "./helpers.js";

const REMOTE = { hostname: "lab.test", port: "8888", protocol: "http:" };

let scope;
beforeEach(() => {
  FakePusher.reset();
  scope = {}; // a fresh page-wide hub per test
});

/** A model and its connection, relayed (route forced, or from a page where nothing else works). */
function open(relayId, overrides = {}, extra = {}) {
  const { _connection, ...rest } = overrides;
  const model = new FakeModel({ route: "", ...rest, _connection: { ...LOOP, relayId, ..._connection } });
  const timers = new ManualTimers();
  const conn = new Connection(model, {
    Pusher: FakePusher,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
    now: () => 1_700_000_000_000 + timers.now,
    scope,
    location: REMOTE,
    document: configDoc({ baseUrl: "/user/alice/" }),
    fetch: async () => jsonResponse(404, {}),
    ...extra,
  }).start();
  return { model, conn, timers };
}

/** A relay message as the kernel sends it (livewidget/_relay.py): the parts in one binary buffer. */
function relayMessage(seq, parts) {
  const bytes = new TextEncoder().encode(JSON.stringify(parts));
  return [{ type: "relay", seq, ids: parts.map((p) => p.id) }, [new DataView(bytes.buffer)]];
}

const CONNECTED = (channels, members = {}) => ({ status: "connected", error: "", channels, members });

describe("relay route", () => {
  test("planned last whenever the kernel offers it; forcing keeps only it", () => {
    const page = { hostname: "lab.test", port: 8888, https: false, baseUrl: "/user/alice/" };
    const conn = { ...LOOP, relayId: "r1" };
    assert.deepEqual(planRoutes(conn, page).map((c) => c.route), ["jupyter", "jupyter", "relay"]);
    assert.deepEqual(planRoutes({ ...conn, route: "relay" }, page).map((c) => c.route), ["relay"]);
    // a page with no Jupyter config (Colab, VS Code): only the relay can work
    assert.deepEqual(planRoutes(conn, { ...page, baseUrl: null }).map((c) => c.route), ["relay"]);
    // an older kernel without the relay: nothing to fall back to
    assert.deepEqual(planRoutes({ ...LOOP, route: "relay" }, page), []);
  });

  test("forced: no pusher-js, asks the kernel, confirmed by the first part, reported as the route", () => {
    const { model, conn } = open("r1", { _connection: { route: "relay" }, channels: ["news"] });
    assert.equal(FakePusher.instances.length, 0);
    assert.deepEqual(model.sent, [{ type: "relay", on: true }]);
    assert.equal(conn.route, "");
    assert.equal(conn.trying, "relay");
    assert.equal(conn.channels.get("news").state, "subscribing");
    model.receive(...relayMessage(1, [{ id: "r1", rows: [], state: CONNECTED({ news: true }) }]));
    assert.equal(conn.route, "relay");
    assert.equal(conn.via, "kernel");
    assert.equal(conn.state, "connected");
    assert.equal(conn.channels.get("news").state, "subscribed");
    assert.equal(model.get("route"), "relay");
    assert.ok(model.saved >= 1);
    conn.close();
  });

  test("one stream for many models: each part goes to its own model's connection, in order", () => {
    const a = open("ra", { _connection: { route: "relay" }, channels: ["a"] });
    const b = open("rb", { _connection: { route: "relay" }, channels: ["b"] });
    const seen = { a: [], b: [] };
    a.conn.on("event", (row) => seen.a.push(row));
    b.conn.on("event", (row) => seen.b.push(row));
    // the stream comes on one model's comm (the carrier): here b's, carrying both
    b.model.receive(
      ...relayMessage(1, [
        { id: "ra", rows: [[1000, "a", "tick", '{"i":0}', null], [1001, "a", "tick", '{"i":1}', null]] },
        { id: "rb", rows: [[1002, "b", "msg", "plain text", "bob"]] },
        { id: "r-other-kernel", rows: [[1003, "a", "tick", '{"i":99}', null]] },
      ]),
    );
    assert.deepEqual(seen.a.map((r) => r.data), [{ i: 0 }, { i: 1 }]);
    assert.deepEqual(seen.a[0], { t: 1000, channel: "a", event: "tick", data: { i: 0 }, user_id: null });
    assert.deepEqual(seen.b, [{ t: 1002, channel: "b", event: "msg", data: "plain text", user_id: "bob" }]);
    assert.equal(a.conn.route, "relay");
    // a model not relayed ignores nothing it is not named in; a closed one is forgotten by the hub
    a.conn.close();
    assert.equal(relayHub(scope).listeners.has("ra"), false);
    b.model.receive(...relayMessage(2, [{ id: "ra", rows: [[1004, "a", "tick", "{}", null]] }]));
    assert.equal(seen.a.length, 2);
    b.conn.close();
    assert.equal(relayHub(scope).listeners.size, 0);
  });

  test("automatic fallback: jupyter routes fail (no extension), the relay takes over", async () => {
    const { model, conn, timers } = open("r1", { channels: ["news"] }, { routeTrialMs: 5000 });
    await settle(); // the extension's info answers 404: next is jupyter-server-proxy
    const proxy = FakePusher.last();
    assert.equal(proxy.options.wsPath, "/user/alice/proxy/6001");
    assert.equal(conn.trying, "jupyter");
    timers.advance(5000); // not confirmed in time: the relay
    assert.equal(proxy.disconnected, true);
    assert.equal(conn.trying, "relay");
    assert.deepEqual(model.sent, [{ type: "relay", on: true }]);
    const rows = [];
    conn.on("event", (row) => rows.push(row));
    model.receive(...relayMessage(7, [{ id: "r1", rows: [[5, "news", "h", '"x"', null]], state: CONNECTED({ news: true }) }]));
    assert.equal(conn.route, "relay");
    assert.deepEqual(rows.map((r) => r.data), ["x"]);
    conn.close();
  });

  test("client events go through the kernel with a visible note until it has carried them out", () => {
    const { model, conn } = open("r1", { _connection: { route: "relay" }, channels: ["presence-room"] });
    const members = [
      { id: "ann", info: { name: "Ann" } },
      { id: "ann:kernel", info: { name: "Ann", livewidget_kernel: true } },
    ];
    model.receive(...relayMessage(1, [{ id: "r1", rows: [], state: CONNECTED({ "presence-room": true }, { "presence-room": members }) }]));
    const info = conn.channels.get("presence-room");
    assert.equal(info.members, 2);
    const each = [];
    info.channel.members.each((m) => each.push(m.id));
    assert.deepEqual(each, ["ann", "ann:kernel"]);
    assert.equal(info.channel.trigger("client-typing", { on: true }), true);
    assert.equal(info.channel.trigger("client-chat", { text: "hi" }), true);
    const sent = model.sent.filter((m) => m.type === "relay_trigger");
    assert.deepEqual(
      sent.map(({ channel, event, data }) => [channel, event, data]),
      [
        ["presence-room", "client-typing", { on: true }],
        ["presence-room", "client-chat", { text: "hi" }],
      ],
    );
    assert.match(conn.note, /2 sent through the kernel: done when it is idle/);
    model.receive(...relayMessage(2, [{ id: "r1", rows: [], acks: [[sent[0].id, ""]] }]));
    assert.match(conn.note, /^1 sent/);
    model.receive(...relayMessage(3, [{ id: "r1", rows: [], acks: [[sent[1].id, "cannot send"]] }]));
    assert.equal(conn.note, "");
    assert.match(conn.error, /kernel: cannot send/);
    conn.close();
  });

  test("kernel states and losses are shown; bad messages are ignored", () => {
    const { model, conn } = open("r1", { _connection: { route: "relay" }, channels: ["news"] });
    model.receive(...relayMessage(1, [{ id: "r1", rows: [], state: { status: "unavailable", detail: "cannot reach 127.0.0.1:6001", channels: {} } }]));
    assert.equal(conn.state, "unavailable");
    assert.match(conn.error, /kernel: cannot reach/);
    model.receive(...relayMessage(2, [{ id: "r1", rows: [], lost: 12, state: CONNECTED({ news: true }) }]));
    assert.equal(conn.state, "connected");
    assert.match(conn.error, /dropped 12 relayed events/);
    model.receive({ type: "relay", seq: 3 }, []);
    model.receive({ type: "relay", seq: 4 }, [new DataView(new TextEncoder().encode("{not json").buffer)]);
    model.receive(...relayMessage(5, [{ id: "r1", rows: [null, "x", [1, "elsewhere", "e", "{}", null], [2, "news", "pusher:ping", "{}", null]] }]));
    assert.equal(conn.state, "connected");
    conn.close();
  });
});

/** An event with its position, delivered as pusher-js does (channel first, then the raw "message"). */
function deliverAt(pusher, channel, event, data, serial, stream = "s1") {
  // as a server with channel history sends it: the position is on the raw frame only (helpers.js)
  pusher.deliverRaw(channel, event, data, { serial, stream_id: stream });
}

describe("falling back to the relay when a confirmed route fails", () => {
  test("relay meanwhile, back when pusher-js is subscribed again; no event twice or lost", () => {
    const local = { hostname: "127.0.0.1", port: "8888", protocol: "http:" };
    const { model, conn } = open("r1", { channels: ["news"] }, { location: local, document: null });
    const pusher = FakePusher.last();
    pusher.connect();
    assert.equal(conn.route, "direct");
    const rows = [];
    conn.on("event", (row) => rows.push(row.data.n));
    deliverAt(pusher, "news", "tick", { n: 1 }, 1);
    deliverAt(pusher, "news", "tick", { n: 2 }, 2);
    assert.deepEqual(rows, [1, 2]);

    pusher.connection.setState("unavailable"); // the confirmed route fails later
    assert.equal(conn.trying, "relay");
    assert.deepEqual(model.sent, [{ type: "relay", on: true }]);
    assert.equal(pusher.disconnected, false, "pusher-js keeps retrying in the background");
    const rowsOf = (...ns) => ns.map((n) => [1000 + n, "news", "tick", JSON.stringify({ n }), null, n, "s1"]);
    model.receive(...relayMessage(1, [{ id: "r1", rows: rowsOf(2, 3, 4), state: CONNECTED({ news: true }) }]));
    assert.equal(conn.route, "relay");
    assert.equal(model.get("route"), "relay");
    assert.equal(conn.state, "connected");
    assert.deepEqual(rows, [1, 2, 3, 4], "2 was shown by pusher-js already");

    pusher.connect(); // back: resubscribed, then the relay is dropped
    assert.equal(conn.route, "direct");
    assert.equal(model.get("route"), "direct");
    assert.equal(conn.channels.get("news").state, "subscribed");
    assert.equal(conn.relay, null);
    assert.equal(relayHub(scope).listeners.get("r1").size, 1, "only the standby listener is left");
    deliverAt(pusher, "news", "tick", { n: 4 }, 4); // the relay showed it
    deliverAt(pusher, "news", "tick", { n: 5 }, 5);
    model.receive(...relayMessage(2, [{ id: "r1", rows: rowsOf(5, 6) }])); // late relay traffic: ignored
    assert.deepEqual(rows, [1, 2, 3, 4, 5]);
    // a new stream (the server restarted): positions start again, nothing is taken for a duplicate
    deliverAt(pusher, "news", "tick", { n: 6 }, 1, "s2");
    assert.deepEqual(rows, [1, 2, 3, 4, 5, 6]);
    conn.close();
    assert.equal(pusher.disconnected, true);
    assert.equal(relayHub(scope).listeners.size, 0);
  });

  test("a route forced to direct or jupyter never falls back", () => {
    const local = { hostname: "127.0.0.1", port: "8888", protocol: "http:" };
    const { model, conn } = open("r1", { _connection: { route: "direct" } }, { location: local, document: null });
    const pusher = FakePusher.last();
    pusher.connect();
    pusher.connection.setState("unavailable");
    assert.equal(conn.route, "direct");
    assert.equal(conn.state, "unavailable");
    assert.deepEqual(model.sent, []);
    conn.close();
  });
});

describe("standby relay: falling back while a cell runs (the kernel cannot hear the browser)", () => {
  const local = { hostname: "127.0.0.1", port: "8888", protocol: "http:" };
  const rowsOf = (...ns) => ns.map((n) => [1000 + n, "news", "tick", JSON.stringify({ n }), null, n, "s1"]);
  const standby = (seq, ns, extra = {}) => relayMessage(seq, [{ id: "r1", rows: rowsOf(...ns), standby: true, ...extra }]);

  function onDirect() {
    const opened = open("r1", { channels: ["news"] }, { location: local, document: null });
    const pusher = FakePusher.last();
    pusher.connect();
    const shown = [];
    opened.conn.on("event", (row) => shown.push(row.data.n));
    return { ...opened, pusher, shown };
  }

  test("kept unseen while the route is healthy; on a fallback the rows pusher-js missed, then live ones, once", () => {
    const { model, conn, timers, pusher, shown } = onDirect();
    assert.equal(conn.route, "direct");
    deliverAt(pusher, "news", "tick", { n: 1 }, 1);
    deliverAt(pusher, "news", "tick", { n: 2 }, 2);
    // the kernel is busy: it relays this model on standby, while pusher-js's route is fine
    model.receive(...standby(1, [1, 2, 3], { state: CONNECTED({ news: true }) }));
    assert.deepEqual(shown, [1, 2], "standby rows are not shown while the route is healthy");
    assert.equal(conn.route, "direct");
    assert.equal(conn.standbyRows, 1, "what pusher-js showed already is not kept");
    deliverAt(pusher, "news", "tick", { n: 3 }, 3);
    pusher.connection.setState("connecting"); // the route's socket closed: pusher-js retries
    model.receive(...standby(2, [4, 5])); // pusher-js never gets these
    assert.deepEqual(shown, [1, 2, 3]);
    timers.advance(2999);
    assert.equal(conn.route, "direct", "a short drop is no failure");
    timers.advance(1); // FALLBACK_AFTER_MS away from connected: the relay stands in, at once
    assert.equal(conn.route, "relay");
    assert.equal(model.get("route"), "relay");
    assert.equal(conn.state, "connected", "the kept kernel state: no wait for the next one");
    assert.equal(conn.channels.get("news").state, "subscribed");
    assert.deepEqual(shown, [1, 2, 3, 4, 5], "kept rows pusher-js did not show: 3 was, 4 and 5 were not");
    assert.deepEqual(model.sent, [{ type: "relay", on: true }], "asked anyway (handled once the cell ends)");
    model.receive(...standby(3, [5, 6, 7])); // still standby for the kernel until it hears the browser
    model.receive(...relayMessage(4, [{ id: "r1", rows: rowsOf(8) }])); // relayed for good after the cell
    assert.deepEqual(shown, [1, 2, 3, 4, 5, 6, 7, 8]);
    pusher.connect(); // the route is back: the relay is dropped, nothing twice
    assert.equal(conn.route, "direct");
    deliverAt(pusher, "news", "tick", { n: 8 }, 8);
    deliverAt(pusher, "news", "tick", { n: 9 }, 9);
    assert.deepEqual(shown, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(conn.standbyRows, 0);
    conn.close();
    assert.equal(relayHub(scope).listeners.size, 0);
  });

  test("pusher-js's own 'unavailable' falls back too, with the kept rows", () => {
    const { model, conn, pusher, shown } = onDirect();
    deliverAt(pusher, "news", "tick", { n: 1 }, 1);
    model.receive(...standby(1, [1, 2]));
    pusher.connection.setState("unavailable");
    assert.equal(conn.route, "relay");
    assert.deepEqual(shown, [1, 2]);
    conn.close();
  });

  test("bounded: the newest STANDBY_KEEP rows, none older than STANDBY_MS; rows without positions only after the drop", () => {
    const { model, conn, timers, pusher, shown } = onDirect();
    const many = Array.from({ length: 1500 }, (_, i) => i + 10);
    model.receive(...standby(1, many));
    assert.equal(conn.standbyRows, 1000, "the newest 1,000");
    timers.advance(31_000); // all of them too old now
    model.receive(...standby(2, [2000]));
    assert.equal(conn.standbyRows, 1);
    // a row without a position (a server without history) cannot be matched against pusher-js's rows
    model.receive(...relayMessage(3, [{ id: "r1", rows: [[1, "news", "tick", '{"n":-1}', null]], standby: true }]));
    timers.advance(10);
    pusher.connection.setState("connecting");
    model.receive(...relayMessage(4, [{ id: "r1", rows: [[2, "news", "tick", '{"n":-2}', null]], standby: true }]));
    timers.advance(3000);
    assert.equal(conn.route, "relay");
    assert.deepEqual(shown, [2000, -2], "-1 came before pusher-js lost its connection: it may have shown it");
    conn.close();
  });

  test("huge payloads are bounded by size too; a forced route or no relay keeps nothing", () => {
    const { model, conn } = onDirect();
    const big = "x".repeat(400_000);
    const rows = [1, 2, 3].map((n) => [n, "news", "tick", big, null, 100 + n, "s1"]);
    model.receive(...relayMessage(1, [{ id: "r1", rows, standby: true }]));
    assert.equal(conn.standbyRows, 2, "1 MB of text at most");
    conn.close();
    // no route confirmed yet (still trying): nothing to fall back from, nothing kept
    const trying = open("r3", { channels: ["news"] }, { location: local, document: null });
    trying.model.receive(...relayMessage(1, [{ id: "r3", rows: rowsOf(1), standby: true }]));
    assert.equal(trying.conn.standbyRows, 0);
    trying.conn.close();
    const forced = open("r2", { _connection: { route: "direct" } }, { location: local, document: null });
    assert.equal(relayHub(scope).listeners.has("r2"), false);
    forced.conn.close();
  });
});
