// Channel history in the browser (issue 13): rewind in pusher:subscribe, rows marked as history, resume
// from the last position after a reconnection, duplicates dropped by serial, servers without history.
import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import { Connection, initialRewind } from "../src/connection.js";
import { FeedStore } from "../src/feed.js";
import { FakeModel, FakePusher, historyBytes, ManualTimers } from "./helpers.js";

beforeEach(() => FakePusher.reset());

function open(overrides = {}) {
  const model = new FakeModel({ _rewind: { count: 100 }, ...overrides });
  const timers = new ManualTimers();
  const conn = new Connection(model, {
    Pusher: FakePusher,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
    now: () => 1_700_000_000_000 + timers.now,
  });
  const store = new FeedStore(model, conn, { now: () => 1_700_000_000_000 + timers.now }).start();
  conn.start();
  const rows = [];
  conn.on("event", (row) => rows.push(row));
  return { model, conn, store, timers, rows, pusher: FakePusher.last() };
}

const subscribes = (pusher) => pusher.sent.filter((f) => f.name === "pusher:subscribe").map((f) => f.data);
const pos = (serial) => ({ serial, stream_id: "s1" });

describe("rewind", () => {
  test("the first subscribe asks for the _rewind; replayed rows are marked, live ones not", () => {
    const { pusher, conn, store, rows } = open();
    pusher.connect();
    assert.deepEqual(subscribes(pusher), [{ auth: "", channel: "sensors", rewind: { count: 100 } }]);
    pusher.deliverRaw("sensors", "e", { n: 1 }, pos(1));
    pusher.deliverRaw("sensors", "e", { n: 2 }, pos(2));
    pusher.deliver("sensors", "pusher:rewind_complete", { complete: false, historical_count: 2, serial: 2, stream_id: "s1", reason: "truncated" });
    pusher.deliverRaw("sensors", "e", { n: 3 }, pos(3));
    assert.deepEqual(
      rows.map((r) => [r.data.n, r.serial, r.history === true]),
      [
        [1, 1, true],
        [2, 2, true],
        [3, 3, false],
      ],
    );
    assert.equal(conn.historyState(), "available");
    assert.equal(conn.channels.get("sensors").error, ""); // asking for more than exists is no problem
    const log = store.log.toArray();
    assert.deepEqual(log.map((r) => Boolean(r.liveStart)), [false, false, true]); // where live begins
  });

  test("after a reconnection: resume from the last position, drop what was heard already", () => {
    const { pusher, rows } = open();
    pusher.connect();
    pusher.deliverRaw("sensors", "e", { n: 1 }, pos(1));
    pusher.deliver("sensors", "pusher:rewind_complete", { complete: true, historical_count: 1, ...pos(1) });
    pusher.deliverRaw("sensors", "e", { n: 2 }, pos(2));
    pusher.connection.setState("unavailable");
    pusher.connect("2.2"); // pusher-js resubscribes by itself
    const again = subscribes(pusher)[1];
    assert.deepEqual(again.rewind, { count: 100, serial: 2, stream_id: "s1" });
    pusher.deliverRaw("sensors", "e", { n: 2 }, pos(2)); // a repeat: dropped
    pusher.deliverRaw("sensors", "e", { n: 3 }, pos(3)); // missed while away: recovered, not "history"
    pusher.deliver("sensors", "pusher:rewind_complete", { complete: true, historical_count: 1, ...pos(3) });
    pusher.deliverRaw("sensors", "e", { n: 4 }, pos(4));
    assert.deepEqual(rows.map((r) => r.data.n), [1, 2, 3, 4]); // no gap, no duplicate
    assert.deepEqual(rows.map((r) => r.history === true), [true, false, false, false]);
  });

  test("history lost while away is said on the channel", () => {
    const { pusher, conn } = open();
    pusher.connect();
    pusher.deliver("sensors", "pusher:rewind_complete", { complete: true, historical_count: 0, ...pos(5) });
    pusher.connection.setState("unavailable");
    pusher.connect("2.2");
    assert.deepEqual(subscribes(pusher)[1].rewind, { count: 100, serial: 5, stream_id: "s1" });
    pusher.deliver("sensors", "pusher:rewind_complete", {
      complete: false,
      historical_count: 0,
      serial: 0,
      stream_id: "s2",
      reason: "stream_reset",
    });
    assert.match(conn.channels.get("sensors").error, /may be missing \(stream_reset\)/);
    assert.deepEqual(conn.channels.get("sensors").position, { serial: 0, stream_id: "s2" });
  });

  test("a server without history (hosted Pusher, Soketi): works as before, and says so", () => {
    const { pusher, conn, rows, timers } = open();
    pusher.connect();
    pusher.deliverRaw("sensors", "e", { n: 1 });
    pusher.deliverRaw("sensors", "e", { n: 1 }); // no positions: nothing is deduplicated
    assert.deepEqual(rows.map((r) => [r.data.n, r.history === true]), [
      [1, false],
      [1, false],
    ]);
    assert.equal(conn.historyState(), "unavailable");
    pusher.connection.setState("unavailable");
    pusher.connect("2.2");
    assert.equal(subscribes(pusher)[1].rewind, undefined); // stock Pusher gets a stock subscribe

    // no event at all: no pusher:rewind_complete within a few seconds says the same
    const quiet = open();
    quiet.pusher.connect();
    assert.equal(quiet.conn.historyState(), "");
    quiet.timers.advance(3_000);
    assert.equal(quiet.conn.historyState(), "unavailable");
    void timers;
  });

  test("rows without a raw frame (another transport) still arrive", () => {
    const { pusher, rows } = open();
    pusher.connect();
    pusher.connection.connection = { transport: null }; // not the transport whose frames are read
    pusher.deliver("sensors", "e", { n: 1 });
    pusher.deliver("sensors", "e", { n: 2 });
    assert.deepEqual(rows.map((r) => r.data.n), [1, 2]);
  });

  test("history=0 asks only for the position; bad _rewind values send none", () => {
    assert.deepEqual(initialRewind({ count: 0 }), { count: 0 });
    assert.deepEqual(initialRewind({ seconds: 30 }), { seconds: 30 });
    assert.equal(initialRewind({ count: -1 }), null);
    assert.equal(initialRewind("10"), null);
    const { pusher } = open({ _rewind: {} });
    pusher.connect();
    assert.equal(subscribes(pusher)[0].rewind, undefined);
  });
});

describe("the kernel's _history with the server's rewind", () => {
  test("rows both sent are shown once (same position)", () => {
    const { pusher, model, store } = open();
    pusher.connect();
    pusher.deliverRaw("sensors", "e", { n: 1 }, pos(1));
    pusher.deliverRaw("sensors", "e", { n: 2 }, pos(2));
    pusher.deliver("sensors", "pusher:rewind_complete", { complete: true, historical_count: 2, ...pos(2) });
    const t = 1_700_000_000_000;
    model.set(
      "_history",
      historyBytes([
        { t: t - 50, channel: "sensors", event: "e", data: { n: 0 }, serial: 0, stream_id: "s0" },
        { t: t - 20, channel: "sensors", event: "e", data: { n: 1 }, serial: 1, stream_id: "s1", history: true },
        { t: t - 10, channel: "sensors", event: "e", data: { n: 2 }, serial: 2, stream_id: "s1", history: true },
      ]),
    );
    assert.deepEqual(store.log.toArray().map((r) => r.data.n), [0, 1, 2]);
  });
});

describe("stores take rewound rows", () => {
  test("ProgressStore shows replayed states without notifying; ChatStore marks replayed messages", async () => {
    const { ProgressStore } = await import("../src/progress.js");
    const { ChatStore } = await import("../src/chat.js");
    const model = new FakeModel({ _kind: "progress", jobs: {}, _groups: {}, notify: true });
    const conn = { on: () => () => {}, channels: new Map() };
    const board = new ProgressBoardProbe(ProgressStore, model, conn);
    board.store.add({ event: "progress", channel: "p", history: true, data: { job: "a", n: 2, total: 2, status: "done", t: 1 } });
    board.store.add({ event: "progress", channel: "p", data: { job: "b", n: 2, total: 2, status: "done", t: 2 } });
    assert.deepEqual([...board.store.jobs.keys()], ["a", "b"]);
    assert.equal(board.store.jobs.get("a")._history, true);
    assert.deepEqual([...board.store._notified], ["b"]); // the replayed job is not announced again
    void ChatStore;
  });
});

class ProgressBoardProbe {
  constructor(Store, model, conn) {
    this.store = new Store(model, conn, { setTimeout: () => 0 });
  }
}
