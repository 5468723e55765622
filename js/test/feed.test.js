import assert from "node:assert/strict";
import { after, afterEach, beforeEach, describe, test } from "node:test";

import { Connection } from "../src/connection.js";
import { FeedStore, FeedView, MAX_DOM_ROWS } from "../src/feed.js";
import { EAGER_GAP_MS } from "../src/util.js";
import { createWidget } from "../src/kinds.js";
import { FakeModel, FakePusher, historyBytes, makeDom, ManualFrames, ManualTimers } from "./helpers.js";

const T0 = 1_700_000_000_000;
const dom = makeDom();
after(() => dom.close());

let realFetch;
beforeEach(() => {
  FakePusher.reset();
  realFetch = globalThis.fetch;
});
afterEach(() => {
  globalThis.fetch = realFetch;
});

/** A model, its connection (fake pusher-js) and its store, as initialize() makes them. */
function session(overrides = {}) {
  const model = new FakeModel(overrides);
  const clock = { now: T0 };
  const timers = new ManualTimers();
  const deps = {
    Pusher: FakePusher,
    now: () => clock.now,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
  };
  const conn = new Connection(model, deps);
  const store = new FeedStore(model, conn, deps).start();
  conn.start();
  const pusher = FakePusher.last();
  pusher.connect();
  return { model, conn, store, pusher, clock, deps };
}

function view(s) {
  const frames = new ManualFrames();
  const el = dom.container();
  const intervals = [];
  const v = new FeedView(s.model, el, s, {
    ...s.deps,
    requestAnimationFrame: frames.requestAnimationFrame,
    eager: false, // frames run by hand; the eager path has its own test
    cancelAnimationFrame: frames.cancelAnimationFrame,
    setInterval: (fn) => intervals.push(fn),
    clearInterval: () => intervals.pop(),
  }).mount();
  return { v, el, frames, intervals, root: el.querySelector(".lw-feed") };
}

describe("FeedStore", () => {
  test("is seeded from _history (bytes, JSON lines), then appends live events", () => {
    const s = session({
      channels: ["a"],
      _history: historyBytes([
        { t: T0 - 2000, channel: "a", event: "tick", data: { i: 0 } },
        { t: T0 - 1000, channel: "a", event: "tick", data: { i: 1 }, user_id: "u1" },
      ]),
    });
    assert.equal(s.store.log.size, 2);
    assert.equal(s.store.seeded, 2);
    assert.equal(s.store.received, 0);
    const first = s.store.log.newest(1);
    assert.deepEqual([first.t, first.channel, first.event, first.data], [T0 - 2000, "a", "tick", { i: 0 }]);
    assert.equal(s.store.log.newest(0).user_id, "u1");
    assert.equal(s.store.log.newest(0).history, true);
    s.pusher.deliver("a", "tick", { i: 2 });
    assert.equal(s.store.log.size, 3);
    assert.equal(s.store.received, 1);
    assert.deepEqual(s.store.log.newest(0).data, { i: 2 });
  });

  test("after the first live event a refreshed _history only fills in what this browser missed", () => {
    const s = session({ channels: ["a"] });
    s.model.set("_history", historyBytes([{ t: T0 - 500, channel: "a", event: "tick", data: { i: 0 } }]));
    // i = 1 and 2 were sent while this browser subscribed: the kernel heard them, the browser did not
    s.pusher.deliver("a", "tick", { i: 3 });
    s.pusher.deliver("a", "tick", { i: 4 });
    const history = (n) =>
      historyBytes(
        [...Array(n).keys()].map((i) => ({ t: T0 - 500 + i * 10, channel: "a", event: "tick", data: { i } })),
      );
    s.model.set("_history", history(4)); // the kernel has heard up to i = 3
    const order = () => s.store.log.toArray().map((r) => r.data.i);
    assert.deepEqual(order(), [0, 1, 2, 3, 4]);
    assert.deepEqual(
      s.store.log.toArray().map((r) => Boolean(r.history)),
      [true, true, true, false, false],
    );
    assert.equal(s.store.seeded, 3);
    assert.equal(s.store.received, 2);
    s.model.set("_history", history(6)); // refreshed again: nothing new is missing
    s.pusher.deliver("a", "tick", { i: 5 });
    assert.deepEqual(order(), [0, 1, 2, 3, 4, 5]);
    const seqs = s.store.log.toArray().map((r) => r.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "rows keep increasing seq numbers");
  });

  test("a refreshed _history replaces the seed until the first live event, then repeats nothing", () => {
    const s = session({ channels: ["a"] });
    assert.equal(s.store.log.size, 0);
    s.model.set("_history", historyBytes([{ t: T0 - 10, channel: "a", event: "old", data: 1 }]));
    assert.equal(s.store.log.size, 1);
    s.pusher.deliver("a", "live", 2);
    s.model.set(
      "_history",
      historyBytes([
        { t: T0 - 10, channel: "a", event: "old", data: 1 },
        { t: T0, channel: "a", event: "live", data: 2 },
      ]),
    );
    assert.deepEqual(
      s.store.log.toArray().map((r) => r.event),
      ["old", "live"],
    );
  });

  test("the log is a ring buffer of max_log rows, and follows change:max_log", () => {
    const s = session({ channels: ["a"], max_log: 5 });
    for (let i = 0; i < 12; i++) s.pusher.deliver("a", "tick", { i });
    assert.equal(s.store.log.size, 5);
    assert.deepEqual(
      s.store.log.toArray().map((r) => r.data.i),
      [7, 8, 9, 10, 11],
    );
    assert.equal(s.store.received, 12);
    s.model.set("max_log", 2);
    assert.deepEqual(
      s.store.log.toArray().map((r) => r.data.i),
      [10, 11],
    );
  });

  test("event_filter keeps only the named events, and follows change:event_filter", () => {
    const s = session({ channels: ["a"], event_filter: ["keep", "also"] });
    for (const e of ["keep", "drop", "also", "pusher:ping", "keep"]) s.pusher.deliver("a", e, {});
    assert.deepEqual(
      s.store.log.toArray().map((r) => r.event),
      ["keep", "also", "keep"],
    );
    assert.equal(s.store.received, 3);
    s.model.set("event_filter", ["also"]);
    assert.deepEqual(
      s.store.log.toArray().map((r) => r.event),
      ["also"],
    );
    s.pusher.deliver("a", "keep", {});
    s.pusher.deliver("a", "also", {});
    assert.equal(s.store.log.size, 2);
    s.model.set("event_filter", []);
    s.pusher.deliver("a", "anything", {});
    assert.equal(s.store.log.newest(0).event, "anything");
  });

  test("history rows pass through event_filter too", () => {
    const s = session({
      event_filter: ["a"],
      _history: historyBytes([
        { t: 1, channel: "c", event: "a", data: 1 },
        { t: 2, channel: "c", event: "b", data: 2 },
      ]),
    });
    assert.deepEqual(
      s.store.log.toArray().map((r) => r.event),
      ["a"],
    );
  });

  test("rate: live events per second over the last seconds", () => {
    const s = session({ channels: ["a"] });
    for (let i = 0; i < 300; i++) {
      s.clock.now = T0 + i * 10; // 100 events/s for 3 s
      s.pusher.deliver("a", "tick", i);
    }
    const rate = s.store.rate(T0 + 3000);
    assert.ok(Math.abs(rate - 100) < 5, `rate ${rate}`);
    assert.equal(s.store.rate(T0 + 20_000), 0);
  });
});

describe("FeedView", () => {
  test("paints the DOM hooks the end-to-end tests use", () => {
    const s = session({ channels: ["sensors", "private-jobs"], status: "connected", count: 7, dropped: 0 });
    const { root, frames, el } = view(s);
    assert.ok(root, ".lw-feed");
    assert.equal(root.querySelector(".lw-state").getAttribute("data-state"), "connected");
    assert.equal(root.querySelector(".lw-kernel-status").getAttribute("data-state"), "connected");
    const error = root.querySelector(".lw-error");
    assert.equal(error.textContent, "");
    assert.equal(error.hidden, true);
    assert.equal(root.querySelector(".lw-count").textContent, "0");
    assert.equal(root.querySelector(".lw-rate").textContent, "0.0");
    assert.equal(root.querySelector(".lw-kernel-count").textContent, "7");
    assert.equal(root.querySelector(".lw-filter").tagName, "INPUT");
    assert.ok(root.querySelector(".lw-log"));
    assert.equal(root.querySelectorAll(".lw-row").length, 0);
    assert.match(root.querySelector(".lw-empty").textContent, /Waiting for events on sensors, private-jobs/);

    s.clock.now = T0 + 1234;
    s.pusher.deliver("sensors", "reading", { temp: 21.5 });
    s.clock.now = T0 + 1300;
    s.pusher.deliver("private-jobs", "done", "plain text");
    frames.frame();
    const rows = root.querySelectorAll(".lw-log .lw-row");
    assert.equal(rows.length, 2);
    assert.equal(rows[0].getAttribute("data-channel"), "private-jobs", "newest first");
    assert.equal(rows[0].getAttribute("data-event"), "done");
    assert.equal(rows[0].querySelector(".lw-data").textContent, "plain text");
    assert.equal(rows[1].getAttribute("data-channel"), "sensors");
    assert.equal(rows[1].getAttribute("data-event"), "reading");
    assert.equal(rows[1].querySelector(".lw-data").textContent, '{"temp":21.5}');
    assert.match(rows[1].querySelector(".lw-time").textContent, /^\d\d:\d\d:\d\d\.\d{3}$/);
    assert.equal(root.querySelector(".lw-count").textContent, "2");
    assert.notEqual(root.querySelector(".lw-rate").textContent, "0.0");
    assert.equal(root.getAttribute("data-latest-t"), String(T0 + 1300));
    assert.equal(el.dataset.lwLatest, String(T0 + 1300));
    assert.equal(root.querySelector(".lw-empty").hidden, true);
  });

  test("shows the kernel status and errors, and clears them", () => {
    const s = session({ channels: ["a"] });
    const { root, frames } = view(s);
    s.model.set("status", "unavailable");
    s.model.set("error", "cannot reach 127.0.0.1:6001");
    s.pusher.connection.setState("unavailable");
    frames.frame();
    assert.equal(root.querySelector(".lw-kernel-status").getAttribute("data-state"), "unavailable");
    assert.equal(root.querySelector(".lw-state").getAttribute("data-state"), "unavailable");
    const error = root.querySelector(".lw-error");
    assert.equal(error.hidden, false);
    assert.match(error.textContent, /kernel: cannot reach 127\.0\.0\.1:6001/);
    assert.match(error.textContent, /browser: cannot reach/);
    s.model.set("status", "connected");
    s.model.set("error", "");
    s.pusher.connection.setState("connected");
    frames.frame();
    assert.equal(error.textContent, "");
    assert.equal(error.hidden, true);
  });

  test("shows a refused channel authorization", async () => {
    globalThis.fetch = async () => ({ ok: false, status: 403, json: async () => ({ error: "authorize= refused private-x" }) });
    const s = session({ channels: ["private-x"] });
    const { root, frames } = view(s);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    frames.frame();
    assert.match(root.querySelector(".lw-error").textContent, /private-x: authorization: authorize= refused private-x/);
    const chip = root.querySelector('.lw-chip[data-channel="private-x"]');
    assert.equal(chip.getAttribute("data-state"), "error");
  });

  test("coalesces: many events, one animation frame, at most MAX_DOM_ROWS rows", () => {
    const s = session({ channels: ["a"], max_log: 1000 });
    const { root, frames } = view(s);
    const before = frames.requested;
    for (let i = 0; i < 5000; i++) s.pusher.deliver("a", "tick", { i });
    assert.equal(frames.requested - before, 1, "one frame requested for 5000 events");
    frames.frame();
    const rows = root.querySelectorAll(".lw-row");
    assert.equal(rows.length, MAX_DOM_ROWS);
    assert.equal(rows[0].querySelector(".lw-data").textContent, '{"i":4999}');
    assert.equal(rows[MAX_DOM_ROWS - 1].querySelector(".lw-data").textContent, `{"i":${5000 - MAX_DOM_ROWS}}`);
    assert.equal(root.querySelector(".lw-count").textContent, "5000");
    // then incrementally: new rows on top, the oldest shown ones removed
    for (let i = 5000; i < 5003; i++) s.pusher.deliver("a", "tick", { i });
    const first = root.querySelector(".lw-row");
    frames.frame();
    const after = root.querySelectorAll(".lw-row");
    assert.equal(after.length, MAX_DOM_ROWS);
    assert.equal(after[0].querySelector(".lw-data").textContent, '{"i":5002}');
    assert.equal(after[3], first, "existing rows are kept, not rebuilt");
  });

  test("eager: an event after a quiet frame shows at once; a burst waits for the next frame", async () => {
    const s = session({ channels: ["a"], max_log: 100 });
    const frames = new ManualFrames();
    const v = new FeedView(s.model, dom.container(), s, {
      ...s.deps,
      requestAnimationFrame: frames.requestAnimationFrame,
      cancelAnimationFrame: frames.cancelAnimationFrame,
      setInterval: () => 0,
      clearInterval: () => {},
    }).mount();
    const rows = () => v.root.querySelectorAll(".lw-row").length;
    const requested = frames.requested;
    s.clock.now += 100;
    s.pusher.deliver("a", "tick", { i: 0 });
    assert.equal(rows(), 0, "painted in a microtask, not inside the message handler");
    await Promise.resolve();
    assert.equal(rows(), 1, "the first event after a quiet spell is shown without waiting for a frame");
    assert.equal(frames.requested, requested, "no animation frame was needed");
    for (let i = 1; i <= 50; i++) s.pusher.deliver("a", "tick", { i }); // the same instant: a burst
    await Promise.resolve();
    assert.equal(rows(), 1, "a burst right after a paint is coalesced");
    assert.equal(frames.requested - requested, 1, "into one animation frame");
    frames.frame();
    assert.equal(rows(), 51);
    s.clock.now += EAGER_GAP_MS;
    s.pusher.deliver("a", "tick", { i: 51 });
    await Promise.resolve();
    assert.equal(rows(), 52, "quiet again for a frame: eager again");
    v.destroy();
    s.pusher.deliver("a", "tick", { i: 52 });
    await Promise.resolve();
    assert.equal(frames.queue.size, 0, "a destroyed view schedules nothing");
  });

  test("never shows more rows than max_log", () => {
    const s = session({ channels: ["a"], max_log: 3 });
    const { root, frames } = view(s);
    for (let i = 0; i < 10; i++) s.pusher.deliver("a", "tick", i);
    frames.frame();
    s.pusher.deliver("a", "tick", 10);
    frames.frame();
    assert.deepEqual(
      [...root.querySelectorAll(".lw-data")].map((d) => d.textContent),
      ["10", "9", "8"],
    );
  });

  test("the text filter matches channel, event or data", () => {
    const s = session({ channels: ["a", "b"] });
    const { root, frames } = view(s);
    s.pusher.deliver("a", "temperature", { room: "kitchen" });
    s.pusher.deliver("b", "humidity", { room: "cellar" });
    s.pusher.deliver("a", "door", "Kitchen door opened");
    frames.frame();
    const input = root.querySelector(".lw-filter");
    const shown = () => [...root.querySelectorAll(".lw-row")].map((r) => r.getAttribute("data-event"));
    for (const [query, want] of [
      ["KITCHEN", ["door", "temperature"]],
      ["b", ["humidity"]],
      ["humid", ["humidity"]],
      ["", ["door", "humidity", "temperature"]],
    ]) {
      input.value = query;
      input.dispatchEvent(new dom.window.Event("input"));
      frames.frame();
      assert.deepEqual(shown(), want, `filter ${JSON.stringify(query)}`);
    }
    input.value = "nothing-like-this";
    input.dispatchEvent(new dom.window.Event("input"));
    frames.frame();
    assert.match(root.querySelector(".lw-empty").textContent, /No event in the log matches/);
    s.pusher.deliver("a", "nothing-like-this-either", {});
    frames.frame();
    assert.deepEqual(shown(), ["nothing-like-this-either"], "live rows are filtered too");
  });

  test("rows the server's rewind replayed are marked, and where live begins (issue 13)", () => {
    const s = session({ _rewind: { count: 100 } });
    const { root, frames } = view(s);
    s.pusher.deliverRaw("sensors", "old", { n: 1 }, { serial: 1, stream_id: "s" });
    s.pusher.deliver("sensors", "pusher:rewind_complete", { complete: true, historical_count: 1, serial: 1, stream_id: "s" });
    s.pusher.deliverRaw("sensors", "new", { n: 2 }, { serial: 2, stream_id: "s" });
    frames.frame();
    const [live, old] = root.querySelectorAll(".lw-row"); // newest first
    assert.equal(old.getAttribute("data-event"), "old");
    assert.ok(old.classList.contains("lw-history"));
    assert.match(old.querySelector(".lw-time").title, /channel's history/);
    assert.ok(live.classList.contains("lw-live-start") && !live.classList.contains("lw-history"));
    assert.equal(root.querySelector(".lw-state-text").textContent, "connected");
  });

  test("rows both in the kernel's _history and the rewind are shown once, whichever comes first", () => {
    const item = (n) => ({ t: T0 - 100 + n, channel: "sensors", event: "e", data: { n }, serial: n, stream_id: "s" });
    const s = session({ _rewind: { count: 100 }, _history: historyBytes([item(1), item(2)]) });
    for (const n of [1, 2, 3]) s.pusher.deliverRaw("sensors", "e", { n }, { serial: n, stream_id: "s" });
    assert.deepEqual(s.store.log.toArray().map((r) => r.data.n), [1, 2, 3]);
    assert.equal(s.store.received, 1);
  });

  test("a server without history: the header says so", () => {
    const s = session({ _rewind: { count: 100 } });
    const { root, frames } = view(s);
    s.pusher.deliverRaw("sensors", "e", { n: 1 }); // no position
    frames.frame();
    assert.equal(root.querySelector(".lw-state-text").textContent, "connected · no history");
    assert.match(root.querySelector(".lw-state").title, /keeps no channel history/);
  });

  test("paints the history rows it is seeded with", () => {
    const s = session({ _history: historyBytes([{ t: T0, channel: "sensors", event: "boot", data: { ok: true } }]) });
    const { root } = view(s);
    const row = root.querySelector(".lw-row");
    assert.equal(row.getAttribute("data-event"), "boot");
    assert.ok(row.classList.contains("lw-history"));
    assert.equal(root.querySelector(".lw-count").textContent, "1", "history rows are events of this view");
    assert.equal(root.querySelector(".lw-count").nextSibling.textContent, "event", "1 event, not 1 events");
  });

  test("the event count agrees with the rows shown: restored from history, gap filled, singular", () => {
    const rows = (from, n) =>
      [...Array(n).keys()].map((i) => ({ t: T0 - 5000 + (from + i) * 10, channel: "a", event: "tick", data: { i: from + i } }));
    const s = session({ channels: ["a"], _history: historyBytes(rows(0, 50)) });
    const { root, frames } = view(s);
    const count = () => root.querySelector(".lw-count").textContent;
    const label = () => root.querySelector(".lw-count").nextSibling.textContent;
    const shown = () => root.querySelectorAll(".lw-row").length;
    assert.equal(shown(), 50);
    assert.deepEqual([count(), label()], ["50", "events"], "a Feed restored from history: not 0 events");
    assert.match(root.querySelector(".lw-count").parentNode.title, /0 events received live by this browser, 50 from the kernel's history/);
    // live events, then the kernel's refreshed history fills in the one this browser missed
    for (const i of [51, 52]) s.pusher.deliver("a", "tick", { i });
    s.model.set("_history", historyBytes(rows(0, 52)));
    s.clock.now += 1000; // past the flood throttle (the rows were renumbered)
    frames.frame();
    assert.equal(shown(), 53);
    assert.equal(count(), String(shown()), "11 events above 12 rows, before");
    const one = session({ channels: ["b"] });
    const v1 = view(one);
    one.pusher.deliver("b", "x", {});
    v1.frames.frame();
    assert.deepEqual(
      [v1.root.querySelector(".lw-count").textContent, v1.root.querySelector(".lw-count").nextSibling.textContent],
      ["1", "event"],
    );
  });

  test("event data is text, never HTML", () => {
    const s = session({ channels: ["a"] });
    const { root, frames } = view(s);
    const evil = '<img src=x onerror="globalThis.pwned=1"><b>bold</b>';
    s.pusher.deliver("a", "<script>x</script>", evil);
    frames.frame();
    const row = root.querySelector(".lw-row");
    assert.equal(row.querySelector(".lw-data").textContent, evil);
    assert.equal(row.querySelector("img"), null);
    assert.equal(row.querySelector("b"), null);
    assert.equal(row.querySelector("script"), null);
    assert.equal(row.getAttribute("data-event"), "<script>x</script>");
  });

  test("long data is truncated in the row, complete in the title and when expanded", () => {
    const s = session({ channels: ["a"] });
    const { root, frames } = view(s);
    const data = { text: "x".repeat(1000) };
    s.pusher.deliver("a", "big", data);
    frames.frame();
    const row = root.querySelector(".lw-row");
    const cell = row.querySelector(".lw-data");
    assert.ok(cell.textContent.length < 300);
    assert.ok(cell.textContent.endsWith("…"));
    assert.equal(cell.getAttribute("title"), JSON.stringify(data));
    cell.dispatchEvent(new dom.window.MouseEvent("click", { bubbles: true }));
    assert.ok(row.classList.contains("lw-open"));
    assert.equal(cell.textContent, JSON.stringify(data, null, 2));
    cell.dispatchEvent(new dom.window.MouseEvent("click", { bubbles: true }));
    assert.ok(!row.classList.contains("lw-open"));
  });

  test("data nested 5,000 deep is shown truncated and later events still paint (live and from history)", () => {
    const deepText = `${"[".repeat(5000)}${"]".repeat(5000)}`;
    const deepObj = `${'{"a":'.repeat(5000)}1${"}".repeat(5000)}`;
    const s = session({
      channels: ["a"],
      _history: new TextEncoder().encode(`{"t": ${T0 - 1000}, "channel": "a", "event": "old", "data": ${deepObj}}\n`),
    });
    const { root, frames } = view(s);
    assert.equal(root.querySelectorAll(".lw-row").length, 1, "the deep history row is shown");
    s.pusher.deliver("a", "deep", JSON.parse(deepText));
    frames.frame();
    s.pusher.deliver("a", "deep", JSON.parse(deepObj));
    frames.frame();
    s.pusher.deliver("a", "after", { ok: 1 });
    frames.frame();
    const rows = [...root.querySelectorAll(".lw-row")];
    assert.deepEqual(
      rows.map((r) => r.dataset.event),
      ["after", "deep", "deep", "old"],
    );
    assert.equal(rows[0].querySelector(".lw-data").textContent, '{"ok":1}');
    assert.equal(root.querySelector(".lw-count").textContent, "4");
    for (const row of rows.slice(1)) {
      const cell = row.querySelector(".lw-data");
      assert.ok(cell.textContent.length <= 240, cell.textContent.length);
      assert.ok(cell.textContent.endsWith("…") || cell.textContent.includes("[…]"));
      assert.match(cell.getAttribute("title"), /[[{]…[\]}]/, "the nesting beyond the limit is marked");
      cell.dispatchEvent(new dom.window.MouseEvent("click", { bubbles: true }));
      assert.ok(row.classList.contains("lw-open"));
      assert.match(cell.textContent, /…/);
      assert.ok(cell.textContent.length < 100_000);
    }
    // the filter reads the rows' text too
    s.pusher.deliver("a", "later", { n: 2 });
    frames.frame();
    assert.equal(root.querySelector(".lw-row").dataset.event, "later");
  });

  test("a megabyte of data costs a bounded row: preview, title and expanded text are capped", () => {
    const s = session({ channels: ["a"] });
    const { root, frames } = view(s);
    s.pusher.deliver("a", "huge", { list: Array.from({ length: 200_000 }, (_, i) => i), text: "y".repeat(1_000_000) });
    frames.frame();
    const cell = root.querySelector(".lw-row .lw-data");
    assert.ok(cell.textContent.length <= 240);
    assert.ok(cell.getAttribute("title").length <= 4000);
    cell.dispatchEvent(new dom.window.MouseEvent("click", { bubbles: true }));
    assert.ok(cell.textContent.length <= 100_000, cell.textContent.length);
    assert.ok(cell.textContent.endsWith("…"));
  });

  test("cleanup removes every listener and the DOM", () => {
    const s = session({ channels: ["a"] });
    const modelListeners = s.model.listenerCount();
    const { v, el, frames, intervals } = view(s);
    assert.ok(s.model.listenerCount() > modelListeners);
    assert.equal(intervals.length, 1);
    s.pusher.deliver("a", "tick", 1); // a frame is pending
    v.destroy();
    assert.equal(s.model.listenerCount(), modelListeners);
    assert.equal(intervals.length, 0);
    assert.equal(frames.queue.size, 0, "the pending frame is cancelled");
    assert.equal(el.querySelector(".lw-feed"), null);
    s.pusher.deliver("a", "tick", 2); // no view left to schedule
    assert.equal(frames.queue.size, 0);
  });
});

describe("the anywidget module", () => {
  function host(model) {
    const frames = new ManualFrames();
    const widget = createWidget({
      Pusher: FakePusher,
      requestAnimationFrame: frames.requestAnimationFrame,
    eager: false, // frames run by hand; the eager path has its own test
      eager: false, // frames run by hand; the eager path has its own test
      cancelAnimationFrame: frames.cancelAnimationFrame,
      setInterval: () => 0,
      clearInterval: () => {},
    });
    return { widget, frames };
  }

  test("initialize owns one connection; each render paints it through its own model proxy", () => {
    const model = new FakeModel({ channels: ["a"] });
    const { widget, frames } = host(model);
    const stop = widget.initialize({ model: model.proxy() });
    assert.equal(FakePusher.instances.length, 1);
    const pusher = FakePusher.last();
    pusher.connect();
    pusher.deliver("a", "before-render", 1);
    const el1 = dom.container();
    const el2 = dom.container();
    const unrender1 = widget.render({ model: model.proxy(), el: el1 });
    const unrender2 = widget.render({ model: model.proxy(), el: el2 });
    assert.equal(FakePusher.instances.length, 1, "views share the model's connection");
    pusher.deliver("a", "after-render", 2);
    frames.frame();
    for (const el of [el1, el2]) {
      assert.deepEqual(
        [...el.querySelectorAll(".lw-row")].map((r) => r.getAttribute("data-event")),
        ["after-render", "before-render"],
      );
      assert.equal(el.querySelector(".lw-state").getAttribute("data-state"), "connected");
    }
    unrender1();
    assert.equal(el1.querySelector(".lw-feed"), null);
    assert.equal(pusher.disconnected, false, "closing a view keeps the connection");
    unrender2();
    stop();
    assert.equal(pusher.disconnected, true, "initialize's cleanup disconnects");
    assert.equal(model.listenerCount(), 0);
  });

  test("render without initialize makes (and then closes) its own connection", () => {
    const model = new FakeModel();
    const { widget } = host(model);
    const el = dom.container();
    const unrender = widget.render({ model: model.proxy(), el });
    assert.equal(FakePusher.instances.length, 1);
    assert.ok(el.querySelector(".lw-feed"));
    unrender();
    assert.equal(FakePusher.last().disconnected, true);
  });

  test("an unknown kind says so instead of a blank widget", () => {
    const model = new FakeModel({ _kind: "hologram" });
    const { widget } = host(model);
    assert.equal(widget.initialize({ model: model.proxy() }), undefined);
    const el = dom.container();
    widget.render({ model: model.proxy(), el });
    assert.match(el.querySelector(".lw-error").textContent, /no front end for widget kind "hologram"/);
    assert.equal(FakePusher.instances.length, 0);
  });
});

describe("FeedView under a flood", () => {
  test("repaints the log at most FLOOD_LOG_FPS times a second, and still shows the newest rows", async () => {
    const { FLOOD_LOG_FPS } = await import("../src/feed.js");
    const s = session({ channels: ["a"] });
    const { frames, root } = view(s);
    frames.frame();
    let repaints = 0;
    const log = root.querySelector(".lw-log");
    let last = log.firstChild;
    for (let f = 0; f < 60; f++) {
      // one second at 60 frames: 100 events per frame (6,000 events/s)
      for (let i = 0; i < 100; i++) s.pusher.deliver("a", "tick", { f, i });
      s.clock.now += 1000 / 60;
      frames.frame();
      if (log.firstChild !== last) repaints += 1;
      last = log.firstChild;
    }
    assert.ok(repaints <= FLOOD_LOG_FPS + 1, `${repaints} log repaints in one second`);
    assert.ok(repaints >= FLOOD_LOG_FPS - 1, `${repaints} log repaints in one second`);
    s.clock.now += 1000;
    frames.frame();
    assert.equal(root.querySelector(".lw-row .lw-data").textContent, '{"f":59,"i":99}');
    assert.equal(root.querySelector(".lw-count").textContent, "6000");
  });
});

describe("packed events and log levels (issue 16)", () => {
  test("an event whose data is an array of objects is one log row per object, as in the kernel", () => {
    const s = session({ channels: ["train"] });
    const { frames, root } = view(s);
    s.pusher.deliver("train", "point", [{ step: 1, loss: 0.9 }, { step: 2, loss: 0.8 }]);
    s.pusher.deliver("train", "point", [1, 2]); // not objects: one row, as before
    s.pusher.deliver("train", "point", []);
    frames.frame();
    const data = [...root.querySelectorAll(".lw-log .lw-row .lw-data")].map((el) => el.textContent);
    assert.deepEqual(data, ["[]", "[1,2]", '{"step":2,"loss":0.8}', '{"step":1,"loss":0.9}']);
    assert.equal(s.store.log.size, 4);
    assert.equal(root.querySelector(".lw-count").textContent, "3", "events received");
  });

  test("the history of packed rows (one line per row) joins the live rows without repeats", () => {
    const s = session({ channels: ["logs"] });
    s.pusher.deliver("logs", "log", [{ message: "a" }, { message: "b" }]);
    s.model.set("_history", historyBytes([
      { t: T0, channel: "logs", event: "log", data: { message: "0" } },
      { t: T0 + 1, channel: "logs", event: "log", data: { message: "a" } },
      { t: T0 + 1, channel: "logs", event: "log", data: { message: "b" } },
    ]));
    assert.deepEqual(s.store.log.toArray().map((r) => r.data.message), ["0", "a", "b"]);
  });

  test("rows of log records carry their level for the colours", () => {
    const s = session({ channels: ["logs"] });
    const { frames, root } = view(s);
    s.pusher.deliver("logs", "log", [{ level: "ERROR", message: "boom" }, { level: "INFO", message: "ok" }]);
    s.pusher.deliver("logs", "log", { level: 3 });
    frames.frame();
    const levels = [...root.querySelectorAll(".lw-log .lw-row")].map((el) => el.getAttribute("data-level"));
    assert.deepEqual(levels, [null, "info", "error"]);
  });
});
