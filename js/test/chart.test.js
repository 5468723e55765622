import assert from "node:assert/strict";
import { after, beforeEach, describe, test } from "node:test";

import {
  bisect,
  ChartStore,
  ChartView,
  decodeColumns,
  field,
  MAX_POINTS,
  toNumber,
  toTime,
} from "../src/chart.js";
import { Connection } from "../src/connection.js";
import { createWidget } from "../src/kinds.js";
import { FakeModel, FakePusher, makeDom, ManualFrames, ManualTimers } from "./helpers.js";

const T0 = 1_700_000_000_000;
const dom = makeDom();
after(() => dom.close());
beforeEach(() => FakePusher.reset());

/** Chart traits (livewidget/widgets/chart.py) over the base ones. */
function chartTraits(overrides = {}) {
  return {
    _kind: "chart",
    x: "step",
    y: ["loss"],
    by: null,
    kind: "line",
    window_points: 0,
    window_span: 0,
    max_points: MAX_POINTS,
    x_type: "auto",
    x_label: "",
    y_label: "",
    log_x: false,
    log_y: false,
    xlim: null,
    ylim: null,
    missing: "gap",
    height: 320,
    colors: [],
    _backfill: new DataView(new ArrayBuffer(0)),
    title: "loss",
    ...overrides,
  };
}

/** A store on a fake model without a connection (the parsing, buffering and windowing alone). */
function bare(overrides = {}) {
  const model = new FakeModel(chartTraits(overrides));
  const clock = { now: T0 };
  const store = new ChartStore(model, null, { now: () => clock.now }).start();
  return { model, store, clock };
}

/** The binary columns chart.py's encode_columns writes (the same layout, built here). */
function encodeColumns({
  t, x, ys, fields, groups = null, g = null, xKind = "number", skipped = 0, bad = 0, extends: ext = 0,
}) {
  const n = x.length;
  const header = new TextEncoder().encode(
    JSON.stringify({ n, fields, groups, x_kind: xKind, skipped, bad, extends: ext }),
  );
  const start = Math.ceil((8 + header.length) / 8) * 8;
  const size = start + 8 * n * (2 + fields.length) + (groups ? 4 * n : 0);
  const buf = new ArrayBuffer(size);
  const bytes = new Uint8Array(buf);
  bytes.set([76, 87, 67, 49]); // "LWC1"
  new DataView(buf).setUint32(4, header.length, true);
  bytes.set(header, 8);
  let off = start;
  for (const col of [t, x, ...ys]) {
    new Float64Array(buf, off, n).set(col);
    off += 8 * n;
  }
  if (groups) new Int32Array(buf, off, n).set(g);
  return new DataView(buf);
}

describe("parsing", () => {
  test("toNumber takes finite numbers and numeric strings only", () => {
    assert.equal(toNumber(3), 3);
    assert.equal(toNumber("2.5"), 2.5);
    for (const bad of [null, undefined, NaN, Infinity, "", " ", "abc", true, {}, []]) {
      assert.equal(toNumber(bad), null, String(bad));
    }
  });

  test("toTime reads ISO strings, seconds and milliseconds as seconds", () => {
    assert.equal(toTime("2024-01-01T00:00:00Z"), 1704067200);
    assert.equal(toTime(1704067200), 1704067200);
    assert.equal(toTime(1704067200500), 1704067200.5);
    assert.equal(toTime("not a date"), null);
    assert.equal(toTime(null), null);
  });

  test("field reads dotted paths into nested objects, flat names first", () => {
    assert.equal(field({ m: { loss: 1 } }, "m.loss"), 1);
    assert.equal(field({ "m.loss": 2, m: { loss: 1 } }, "m.loss"), 2);
    assert.equal(field({ m: 3 }, "m.loss"), undefined);
  });

  test("bisect finds insertion points", () => {
    assert.equal(bisect([1, 2, 2, 3], 2), 3);
    assert.equal(bisect([1, 2, 2, 3], 2, false), 1);
    assert.equal(bisect([], 5), 0);
  });
});

describe("ChartStore buffering", () => {
  test("buffers points and merges them into aligned columns on flush", () => {
    const { store } = bare({ y: ["loss", "acc"] });
    store.addEvent({ t: T0, channel: "c", event: "point", data: { step: 1, loss: 0.5, acc: 0.1 } });
    store.addEvent({ t: T0, channel: "c", event: "point", data: [{ step: 2, loss: 0.4 }, { step: 3, acc: 0.3 }] });
    assert.equal(store.size, 0, "nothing merged before flush");
    assert.equal(store.pending.length, 3);
    assert.equal(store.flush(), true);
    assert.deepEqual(store.data(), [
      [1, 2, 3],
      [0.5, 0.4, undefined],
      [0.1, undefined, 0.3],
    ]);
    assert.equal(store.received, 3);
    assert.equal(store.flush(), false, "a flush with nothing new changes nothing");
    assert.equal(store.xKind, "number");
  });

  test("out-of-order x is merged in place, equal x keep arrival order", () => {
    const { store } = bare();
    for (const step of [1, 5, 9]) store.addPoint({ step, loss: step }, T0);
    store.flush();
    store.addPoint({ step: 4, loss: 40 }, T0);
    store.addPoint({ step: 10, loss: 100 }, T0);
    store.addPoint({ step: 0, loss: 0 }, T0);
    store.addPoint({ step: 5, loss: 50 }, T0);
    store.flush();
    const [xs, ys] = store.data();
    assert.deepEqual(xs, [0, 1, 4, 5, 5, 9, 10]);
    assert.deepEqual(ys, [0, 1, 40, 5, 50, 9, 100]);
    assert.equal(store.latestX, 10);
  });

  test("by= splits each y into one series per value, created as they appear", () => {
    const { store } = bare({ by: "run", y: ["loss"] });
    store.addPoint({ step: 1, loss: 1, run: "a" }, T0);
    store.addPoint({ step: 1, loss: 2, run: "b" }, T0);
    store.flush();
    const structure = store.structure;
    store.addPoint({ step: 2, loss: 3, run: "a" }, T0);
    store.addPoint({ step: 2, loss: 4 }, T0); // no run: its own series
    store.flush();
    assert.deepEqual(
      store.series.map((s) => s.label),
      ["a", "b", "(none)"],
    );
    assert.ok(store.structure > structure);
    assert.deepEqual(store.data(), [
      [1, 1, 2, 2],
      [1, undefined, 3, undefined],
      [undefined, 2, undefined, undefined],
      [undefined, undefined, undefined, 4],
    ]);
  });

  test("several y with by= are labelled 'run · field'", () => {
    const { store } = bare({ by: "run", y: ["loss", "acc"] });
    store.addPoint({ step: 1, loss: 1, acc: 2, run: "r1" }, T0);
    store.flush();
    assert.deepEqual(
      store.series.map((s) => s.label),
      ["r1 · loss", "r1 · acc"],
    );
  });

  test("x defaults to the receive time (a time axis, seconds)", () => {
    const { store } = bare({ x: null });
    store.addEvent({ t: T0 + 1500, channel: "c", event: "point", data: { loss: 1 } });
    store.flush();
    assert.equal(store.xKind, "time");
    assert.deepEqual(store.xs, [(T0 + 1500) / 1000]);
  });

  test("date strings make a time axis", () => {
    const { store } = bare({ x: "ts" });
    store.addPoint({ ts: "2024-01-01T00:00:01Z", loss: 1 }, T0);
    store.addPoint({ ts: 1704067202, loss: 2 }, T0);
    store.flush();
    assert.equal(store.xKind, "time");
    assert.deepEqual(store.xs, [1704067201, 1704067202]);
  });

  test("event_filter limits which events carry points", () => {
    const { store, model } = bare({ event_filter: ["point"] });
    store.addEvent({ t: T0, channel: "c", event: "other", data: { step: 1, loss: 1 } });
    store.addEvent({ t: T0, channel: "c", event: "pusher:ping", data: { step: 1, loss: 1 } });
    store.addEvent({ t: T0, channel: "c", event: "point", data: { step: 2, loss: 1 } });
    store.flush();
    assert.deepEqual(store.xs, [2]);
    model.set("event_filter", []);
    store.addEvent({ t: T0, channel: "c", event: "other", data: { step: 3, loss: 1 } });
    store.flush();
    assert.deepEqual(store.xs, [2, 3]);
  });
});

describe("ChartStore bad input", () => {
  test("points without usable x or y are skipped and counted; bad y values are gaps", () => {
    const { store } = bare({ y: ["loss", "acc"] });
    const bad = [
      "a string",
      42,
      null,
      [1, 2],
      { loss: 1 }, // no x
      { step: "abc", loss: 1 }, // x not a number
      { step: 3 }, // no y at all
    ];
    for (const point of bad) store.addPoint(point, T0);
    store.addPoint({ step: 1, loss: "oops", acc: 0.5 }, T0); // one bad value: a gap
    store.addPoint({ step: 2, loss: null, acc: 0.6 }, T0); // null: a gap
    store.addPoint({ step: 4, loss: 1, acc: 0.7 }, T0);
    store.flush();
    assert.equal(store.skipped, 7);
    assert.equal(store.bad, 2);
    assert.equal(store.problems, 9);
    assert.deepEqual(store.data(), [
      [1, 2, 4],
      [null, null, 1],
      [0.5, 0.6, 0.7],
    ]);
  });

  test("a point whose only values are bad still breaks the line (gap), and is counted as skipped", () => {
    const { store } = bare();
    store.addPoint({ step: 1, loss: 1 }, T0);
    store.addPoint({ step: 2, loss: "NaN" }, T0);
    store.addPoint({ step: 3, loss: 3 }, T0);
    store.flush();
    assert.deepEqual(store.data()[1], [1, null, 3]);
    assert.equal(store.skipped, 1);
  });

  test('missing="skip" joins over bad values (undefined) instead of a gap', () => {
    const { store } = bare({ y: ["loss", "acc"], missing: "skip" });
    store.addPoint({ step: 1, loss: "x", acc: 1 }, T0);
    store.addPoint({ step: 2, loss: "x" }, T0);
    store.flush();
    assert.deepEqual(store.data(), [[1], [undefined], [1]]);
    assert.equal(store.bad, 1);
    assert.equal(store.skipped, 1);
  });

  test("values that are not positive are bad on a log axis", () => {
    const { store } = bare({ log_y: true });
    store.addPoint({ step: 1, loss: 0 }, T0);
    store.addPoint({ step: 2, loss: -1 }, T0);
    store.addPoint({ step: 3, loss: 10 }, T0);
    store.flush();
    assert.deepEqual(store.data()[1], [null, null, 10]);
    assert.equal(store.skipped, 2);
  });
});

describe("ChartStore windowing", () => {
  test("window_points keeps the points with the largest x", () => {
    const { store } = bare({ window_points: 5 });
    for (let i = 0; i < 12; i++) store.addPoint({ step: i, loss: i * 10 }, T0);
    store.flush();
    assert.deepEqual(store.xs, [7, 8, 9, 10, 11]);
    assert.deepEqual(store.data()[1], [70, 80, 90, 100, 110]);
    assert.equal(store.trimmed, 7);
    store.addPoint({ step: 3, loss: 30 }, T0); // older than the window: in, then out again
    store.addPoint({ step: 12, loss: 120 }, T0);
    store.flush();
    assert.deepEqual(store.xs, [8, 9, 10, 11, 12]);
  });

  test("window_span keeps the points within the span of the largest x", () => {
    const { store } = bare({ window_span: 10 });
    for (const step of [0, 5, 10, 15, 20]) store.addPoint({ step, loss: 1 }, T0);
    store.flush();
    assert.deepEqual(store.xs, [10, 15, 20]);
    store.addPoint({ step: 26, loss: 1 }, T0);
    store.flush();
    assert.deepEqual(store.xs, [20, 26]);
  });

  test("a span on the receive-time axis is in seconds", () => {
    const { store } = bare({ x: null, window_span: 60 });
    for (let s = 0; s <= 120; s += 30) store.addEvent({ t: T0 + s * 1000, channel: "c", event: "p", data: { loss: s } });
    store.flush();
    assert.deepEqual(store.data()[1], [60, 90, 120]);
  });

  test("the window follows changes of window_points, by-series keep their alignment", () => {
    const { store, model } = bare({ by: "run" });
    for (let i = 0; i < 10; i++) store.addPoint({ step: i, loss: i, run: i % 2 ? "odd" : "even" }, T0);
    store.flush();
    model.set("window_points", 4);
    store.flush();
    assert.deepEqual(store.data(), [
      [6, 7, 8, 9],
      [6, undefined, 8, undefined],
      [undefined, 7, undefined, 9],
    ]);
  });

  test("max_points bounds memory even when no view flushes", () => {
    const { store } = bare({ max_points: 100 });
    for (let i = 0; i < 1000; i++) store.addPoint({ step: i, loss: i }, T0);
    assert.ok(store.pending.length <= 100, `pending ${store.pending.length}`);
    store.flush();
    assert.equal(store.size, 100);
    assert.equal(store.xs[99], 999);
  });

  test("100,000 points stream in at 1,000 per frame with little work per frame", () => {
    const { store } = bare({ window_points: 100_000 });
    let step = 0;
    const started = performance.now();
    for (let frame = 0; frame < 200; frame++) {
      for (let i = 0; i < 1000; i++) {
        step += 1;
        store.addPoint({ step, loss: Math.sin(step / 100) }, T0);
      }
      store.flush();
    }
    const ms = performance.now() - started;
    assert.equal(store.size, 100_000);
    assert.equal(store.xs[0], 100_001);
    assert.ok(ms < 5000, `200 frames of 1,000 points took ${ms.toFixed(0)} ms`);
  });
});

describe("ChartStore seeding", () => {
  test("decodeColumns reads the kernel's binary columns (aligned or not)", () => {
    const view = encodeColumns({
      t: [T0, T0 + 1],
      x: [1, 2],
      ys: [[0.5, Number.NaN]],
      fields: ["loss"],
      groups: ["a", "b"],
      g: [0, 1],
    });
    const cols = decodeColumns(view);
    assert.equal(cols.n, 2);
    assert.deepEqual([...cols.x], [1, 2]);
    assert.deepEqual([...cols.g], [0, 1]);
    const shifted = new Uint8Array(view.byteLength + 3);
    shifted.set(new Uint8Array(view.buffer), 3);
    const again = decodeColumns(new DataView(shifted.buffer, 3, view.byteLength));
    assert.deepEqual([...again.ys[0]].map(String), ["0.5", "NaN"]);
    assert.equal(decodeColumns(new DataView(new ArrayBuffer(0))), null);
    assert.equal(decodeColumns(new TextEncoder().encode("garbage bytes here")), null);
  });

  test("the kernel's record (_backfill) is drawn first; NaN is a gap, -Infinity absent", () => {
    const backfill = encodeColumns({
      t: [T0 - 3000, T0 - 2000, T0 - 1000],
      x: [1, 2, 3],
      ys: [
        [1, Number.NaN, 3],
        [10, -Infinity, 30],
      ],
      fields: ["loss", "acc"],
      skipped: 4,
      bad: 1,
    });
    const { store } = bare({ y: ["loss", "acc"], _backfill: backfill });
    store.flush();
    assert.deepEqual(store.data(), [
      [1, 2, 3],
      [1, null, 3],
      [10, undefined, 30],
    ]);
    assert.equal(store.seeded, 3);
    assert.equal(store.problems, 5);
    assert.equal(store.received, 0);
  });

  test("a refreshed record adds only what is newer than the last one and older than the live start", () => {
    const { store, model, clock } = bare();
    const record = (ts) =>
      encodeColumns({ t: ts, x: ts.map((t) => (t - T0) / 1000), ys: [ts.map(() => 1)], fields: ["loss"] });
    model.set("_backfill", record([T0 - 5000, T0 - 4000]));
    store.addEvent({ t: T0, channel: "c", event: "p", data: { step: 10, loss: 2 } }); // live from T0
    clock.now = T0 + 3000;
    model.set("_backfill", record([T0 - 5000, T0 - 4000, T0 - 2000, T0 + 1000]));
    store.flush();
    assert.deepEqual(store.xs, [-5, -4, -2, 10]);
  });

  test("points sent while this browser subscribed are drawn once: the record fills exactly the gap", () => {
    const { store, model } = bare();
    const record = (ts, xs) => encodeColumns({ t: ts, x: xs, ys: [xs.map((x) => x * 10)], fields: ["loss"] });
    // The kernel heard x = 0..9; this browser went live at T0 with x = 8 (what it missed: 0..7, the
    // last three of them in the 250 ms before T0, which a time bound alone would lose).
    const ts = [T0 - 5000, T0 - 4000, T0 - 3000, T0 - 2000, T0 - 1000, T0 - 200, T0 - 100, T0 - 50, T0 - 20, T0 + 5];
    const xs = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    store.addEvent({ t: T0, channel: "c", event: "p", data: { step: 8, loss: 80 } });
    store.addEvent({ t: T0 + 30, channel: "c", event: "p", data: { step: 9, loss: 90 } });
    model.set("_backfill", record(ts, xs));
    store.flush();
    assert.deepEqual(store.xs, xs);
    assert.deepEqual(store.series[0].values, xs.map((x) => x * 10));
    assert.equal(store.seeded, 8);
    // a refreshed record later adds nothing that arrived live
    model.set("_backfill", record([...ts, T0 + 40], [...xs, 10]));
    store.addEvent({ t: T0 + 41, channel: "c", event: "p", data: { step: 10, loss: 100 } });
    store.flush();
    assert.deepEqual(store.xs, [...xs, 10]);
  });

  test("points the server's rewind replayed are not taken again from the kernel's record (issue 13)", () => {
    const { store, model } = bare();
    // The kernel subscribed long ago (rewound 1..3 then heard 4); this browser rewound 2..4 now.
    for (const step of [2, 3, 4]) {
      store.addEvent({ t: T0, channel: "c", event: "p", data: { step, loss: step * 10 }, history: true, rewound: true });
    }
    const ts = [T0 - 60_000, T0 - 60_000, T0 - 60_000, T0 - 50_000];
    const xs = [1, 2, 3, 4];
    model.set("_backfill", encodeColumns({ t: ts, x: xs, ys: [xs.map((x) => x * 10)], fields: ["loss"] }));
    store.flush();
    assert.deepEqual(store.xs, [1, 2, 3, 4]); // 1 from the record, each of 2..4 once

    // the other order: the record first; the rewind replays what the kernel rewound too (its record has
    // it, or its next refresh will): nothing is added twice, skipped points are not counted twice
    const later = bare();
    const record = (n) => encodeColumns({ t: ts.slice(0, n), x: xs.slice(0, n), ys: [xs.slice(0, n).map((x) => x * 10)], fields: ["loss"] });
    later.model.set("_backfill", record(3));
    for (const data of [{ step: 3, loss: 30 }, { nostep: 1 }, { step: 4, loss: 40 }]) {
      later.store.addEvent({ t: T0, channel: "c", event: "p", data, history: true, rewound: true });
    }
    later.model.set("_backfill", record(4));
    later.store.flush();
    assert.deepEqual(later.store.xs, [1, 2, 3, 4]);
    assert.equal(later.store.problems, 0);
  });

  test("live points the kernel recorded well before this browser's clock says live are not doubled", () => {
    const { store, model } = bare();
    const ts = [T0 - 3000, T0 - 2500, T0 - 2000, T0 - 1500]; // a slow page: far more than the margin
    const xs = [1, 2, 3, 4];
    store.addEvent({ t: T0, channel: "c", event: "p", data: { step: 3, loss: 30 } });
    store.addEvent({ t: T0 + 1, channel: "c", event: "p", data: { step: 4, loss: 40 } });
    model.set("_backfill", encodeColumns({ t: ts, x: xs, ys: [xs.map((x) => x * 10)], fields: ["loss"] }));
    store.flush();
    assert.deepEqual(store.xs, [1, 2, 3, 4]);
    assert.equal(store.seeded, 2);
    assert.equal(store.received, 2);
  });

  test("extend() arrives as a 'points' message with a buffer; reset starts over", () => {
    const { store, model } = bare();
    store.addPoint({ step: 100, loss: 1 }, T0);
    const buf = encodeColumns({ t: [T0, T0], x: [1, 2], ys: [[5, 6]], fields: ["loss"] });
    model.receive({ type: "points" }, [buf]);
    store.flush();
    assert.deepEqual(store.xs, [1, 2, 100]);
    model.receive({ type: "points", reset: true }, [buf]);
    store.flush();
    assert.deepEqual(store.xs, [1, 2]);
  });
});

// ------------------------------------------------------------------------------------------ view

/** A uPlot stand-in recording what the view asks of it. */
class FakeUPlot {
  static instances = [];
  static paths = { bars: () => "bars", stepped: () => "stepped" };
  static rangeNum = (min, max) => [min, max];
  static rangeLog = (min, max) => [min, max];

  constructor(opts, data, el) {
    this.opts = opts;
    this.data = data;
    this.el = el;
    this.setDataCalls = 0;
    this.sizes = [];
    this.destroyed = false;
    this.over = el.ownerDocument.createElement("div");
    el.append(this.over);
    this.select = { left: 0, width: 0 };
    this.scales = { x: { min: 0, max: 10 } };
    this.bbox = { width: 1000 };
    FakeUPlot.instances.push(this);
  }

  setData(data) {
    this.data = data;
    this.setDataCalls += 1;
  }

  setSize(size) {
    this.sizes.push(size);
  }

  setScale(key, range) {
    this.scales[key] = range;
  }

  destroy() {
    this.destroyed = true;
    this.over.remove();
  }

  static last() {
    return FakeUPlot.instances[FakeUPlot.instances.length - 1];
  }
}

function liveSession(overrides = {}) {
  FakeUPlot.instances = [];
  const model = new FakeModel(chartTraits(overrides));
  const clock = { now: T0 };
  const timers = new ManualTimers();
  const deps = { Pusher: FakePusher, now: () => clock.now, setTimeout: timers.setTimeout, clearTimeout: timers.clearTimeout };
  const conn = new Connection(model, deps);
  const store = new ChartStore(model, conn, deps).start();
  conn.start();
  const pusher = FakePusher.last();
  pusher.connect();
  return { model, conn, store, pusher, clock, deps };
}

function chartView(s, extra = {}) {
  const frames = new ManualFrames();
  const el = dom.container();
  const observers = [];
  class FakeResizeObserver {
    constructor(fn) {
      this.fn = fn;
      observers.push(this);
    }
    observe() {}
    disconnect() {
      this.disconnected = true;
    }
  }
  const v = new ChartView(s.model, el, s, {
    ...s.deps,
    uPlot: FakeUPlot,
    requestAnimationFrame: frames.requestAnimationFrame,
    cancelAnimationFrame: frames.cancelAnimationFrame,
    setInterval: () => 1,
    clearInterval: () => {},
    ResizeObserver: FakeResizeObserver,
    MutationObserver: null,
    ...extra,
  }).mount();
  return { v, el, frames, observers, root: el.querySelector(".lw-chart") };
}

describe("ChartView", () => {
  test("waits for points, then draws them with one setData per animation frame", () => {
    const s = liveSession();
    const { v, frames, root } = chartView(s);
    assert.match(root.querySelector(".lw-chart-empty").textContent, /Waiting for points on sensors/);
    assert.equal(FakeUPlot.instances.length, 0);
    for (let i = 0; i < 500; i++) s.pusher.deliver("sensors", "point", { step: i, loss: i / 10 });
    assert.equal(frames.queue.size, 1, "500 events, one frame requested");
    frames.frame();
    const plot = FakeUPlot.last();
    assert.ok(plot, "uPlot created with the first points");
    assert.equal(plot.data[0].length, 500);
    assert.equal(root.dataset.points, "500");
    assert.equal(root.dataset.received, "500");
    assert.equal(root.querySelector(".lw-chart-points").textContent, "500");
    assert.equal(root.querySelector(".lw-chart-empty").hidden, true);
    for (let i = 500; i < 600; i++) s.pusher.deliver("sensors", "point", [{ step: i, loss: 1 }]);
    frames.frame();
    assert.equal(plot.setDataCalls, 1);
    assert.equal(root.dataset.points, "600");
    assert.equal(FakeUPlot.instances.length, 1, "same plot, new data");
    v.destroy();
  });

  test("kinds, labels, log scale and limits shape uPlot's options; a change rebuilds the plot", () => {
    const s = liveSession({ kind: "bar", x_label: "step", y_label: "loss", log_y: true, ylim: [1, null] });
    const { v, frames } = chartView(s);
    s.pusher.deliver("sensors", "point", { step: 1, loss: 5 });
    frames.frame();
    const plot = FakeUPlot.last();
    assert.equal(plot.opts.series[1].paths, "bars");
    assert.equal(plot.opts.axes[0].label, "step");
    assert.equal(plot.opts.axes[1].label, "loss");
    assert.equal(plot.opts.scales.y.distr, 3);
    assert.deepEqual(plot.opts.scales.y.range(plot, 2, 10), [1, 10], "fixed lower limit, automatic upper");
    assert.equal(plot.opts.scales.x.time, false);
    s.model.set("kind", "scatter");
    frames.frame();
    assert.equal(plot.destroyed, true);
    const next = FakeUPlot.last();
    assert.notEqual(next, plot);
    assert.equal(next.opts.series[1].points.show, true);
    s.model.set("kind", "step");
    frames.frame();
    assert.equal(FakeUPlot.last().opts.series[1].paths, "stepped");
    s.model.set("kind", "area");
    frames.frame();
    assert.ok(FakeUPlot.last().opts.series[1].fill);
    v.destroy();
  });

  test("a time x makes a time axis", () => {
    const s = liveSession({ x: null });
    const { v, frames } = chartView(s);
    s.pusher.deliver("sensors", "point", { loss: 1 });
    frames.frame();
    assert.equal(FakeUPlot.last().opts.scales.x.time, true);
    v.destroy();
  });

  test("a zoom pauses the live view (data keeps coming), a click resumes it", () => {
    const s = liveSession();
    const { v, frames, root } = chartView(s);
    s.pusher.deliver("sensors", "point", { step: 1, loss: 1 });
    frames.frame();
    const plot = FakeUPlot.last();
    plot.select.width = 50;
    for (const hook of plot.opts.hooks.setSelect) hook(plot);
    assert.equal(v.paused, true);
    const calls = plot.setDataCalls;
    s.pusher.deliver("sensors", "point", { step: 2, loss: 2 });
    frames.frame();
    assert.equal(plot.setDataCalls, calls, "paused: no redraw with new data");
    assert.equal(root.dataset.paused, "true");
    const resume = root.querySelector(".lw-chart-resume");
    assert.equal(resume.hidden, false);
    assert.match(resume.textContent, /paused · 1 new/);
    // the click that ends the drag does not resume; the next one does
    plot.over.dispatchEvent(new dom.window.MouseEvent("click"));
    assert.equal(v.paused, true);
    plot.over.dispatchEvent(new dom.window.MouseEvent("click"));
    assert.equal(v.paused, false);
    frames.frame();
    assert.equal(plot.data[0].length, 2);
    assert.equal(root.dataset.paused, "false");
    v.destroy();
  });

  test("shift+drag pans (and pauses); the resume button resumes", () => {
    const s = liveSession();
    const { v, frames, root } = chartView(s);
    s.pusher.deliver("sensors", "point", { step: 1, loss: 1 });
    frames.frame();
    const plot = FakeUPlot.last();
    const down = plot.opts.cursor.bind.mousedown(plot, plot.over, () => assert.fail("not a zoom"));
    down(new dom.window.MouseEvent("mousedown", { button: 0, shiftKey: true, clientX: 100 }));
    dom.document.dispatchEvent(new dom.window.MouseEvent("mousemove", { clientX: 200 }));
    dom.document.dispatchEvent(new dom.window.MouseEvent("mouseup", {}));
    assert.equal(v.paused, true);
    assert.deepEqual(plot.scales.x, { min: -1, max: 9 });
    frames.frame();
    root.querySelector(".lw-chart-resume").click();
    assert.equal(v.paused, false);
    let zoomed = false;
    const plain = plot.opts.cursor.bind.mousedown(plot, plot.over, () => {
      zoomed = true;
    });
    plain(new dom.window.MouseEvent("mousedown", { button: 0 }));
    assert.equal(zoomed, true, "a plain drag is uPlot's zoom");
    v.destroy();
  });

  test("bad points show a visible skipped count and do not stop the chart", () => {
    const s = liveSession();
    const { v, frames, root } = chartView(s);
    s.pusher.deliver("sensors", "point", { step: 1, loss: 1 });
    s.pusher.deliver("sensors", "point", "not a point");
    s.pusher.deliver("sensors", "point", { step: 2, loss: "NaN" });
    s.pusher.deliver("sensors", "point", { loss: 3 });
    s.pusher.deliver("sensors", "point", { step: 3, loss: 3 });
    frames.frame();
    const badge = root.querySelector(".lw-chart-skipped");
    assert.equal(badge.hidden, false);
    assert.equal(badge.textContent, "3 skipped");
    assert.match(badge.title, /3 points skipped: 1 without field 'step'; 1 with no numeric 'loss'; 1 not an object/);
    assert.equal(root.dataset.skipped, "3");
    assert.deepEqual(FakeUPlot.last().data, [
      [1, 2, 3],
      [1, null, 3],
    ]);
    v.destroy();
  });

  test("points that all lack the x field: says why nothing is drawn, not 'Waiting for points'", () => {
    const s = liveSession();
    const { v, frames, root } = chartView(s);
    for (let i = 0; i < 5; i++) s.pusher.deliver("sensors", "point", { a: i, b: 2 * i });
    frames.frame();
    const empty = root.querySelector(".lw-chart-empty");
    assert.equal(empty.hidden, false);
    assert.equal(empty.textContent, "Nothing to draw yet: 5 points skipped: 5 without field 'step'; fields seen: a, b.");
    assert.doesNotMatch(empty.textContent, /Waiting/);
    assert.equal(root.querySelector(".lw-chart-skipped").textContent, "5 skipped");
    // an x that is there but not a number, and no y: both named
    s.pusher.deliver("sensors", "point", { step: "soon", loss: 1 });
    s.pusher.deliver("sensors", "point", { step: 1, other: 1 });
    frames.frame();
    assert.match(empty.textContent, /7 points skipped: 5 without field 'step'; 1 whose 'step' is not a number; 1 with no numeric 'loss'/);
    assert.match(empty.textContent, /fields seen: a, b, loss, other, step/);
    // once points can be drawn the chart shows them and the message goes
    s.pusher.deliver("sensors", "point", { step: 2, loss: 1 });
    frames.frame();
    assert.equal(empty.hidden, true);
    assert.equal(FakeUPlot.last().data[0].length, 1);
    assert.equal(root.querySelector(".lw-chart-points").nextSibling.textContent, "point", "1 point, not 1 points");
    v.destroy();
  });

  test("a `by` value nested 5,000 deep or very long names a series, bounded, and more than 200 groups are refused", () => {
    const s = liveSession({ by: "run" });
    const { v, frames, root } = chartView(s);
    const deep = JSON.parse(`${"[".repeat(5000)}${"]".repeat(5000)}`);
    s.pusher.deliver("sensors", "point", { step: 1, loss: 1, run: deep });
    s.pusher.deliver("sensors", "point", { step: 1, loss: 1, run: "x".repeat(100_000) });
    frames.frame();
    const labels = s.store.series.map((x) => x.label);
    assert.equal(labels.length, 2);
    for (const label of labels) assert.ok(label.length <= 120, label.length);
    for (let i = 0; i < 300; i++) s.pusher.deliver("sensors", "point", { step: 2, loss: 1, run: `r${i}` });
    frames.frame();
    assert.equal(s.store.series.length, 200);
    assert.match(root.querySelector(".lw-chart-skipped").title, /102 beyond 200 series of 'run'/);
    v.destroy();
  });

  test("resizes follow the container; destroy removes listeners, observers and the plot", () => {
    const s = liveSession();
    const before = s.model.listenerCount();
    const { v, frames, observers, el } = chartView(s);
    s.pusher.deliver("sensors", "point", { step: 1, loss: 1 });
    frames.frame();
    const plot = FakeUPlot.last();
    Object.defineProperty(v.plotEl, "clientWidth", { value: 777, configurable: true });
    observers[0].fn();
    frames.frame();
    assert.deepEqual(plot.sizes.at(-1), { width: 777, height: 320 });
    v.destroy();
    assert.equal(plot.destroyed, true);
    assert.equal(observers[0].disconnected, true);
    assert.equal(s.model.listenerCount(), before);
    assert.equal(el.querySelector(".lw-chart"), null);
    assert.equal(frames.queue.size, 0);
  });

  test("two views of one model share the store; a later view starts from what it holds", () => {
    const s = liveSession();
    const a = chartView(s);
    for (let i = 0; i < 10; i++) s.pusher.deliver("sensors", "point", { step: i, loss: i });
    a.frames.frame();
    const b = chartView(s);
    assert.equal(b.root.dataset.points, "10");
    a.v.destroy();
    b.v.destroy();
  });
});

describe("createWidget", () => {
  test("the 'chart' kind initializes a store and renders a chart", () => {
    FakeUPlot.instances = [];
    const model = new FakeModel(chartTraits());
    const frames = new ManualFrames();
    const widget = createWidget({
      Pusher: FakePusher,
      uPlot: FakeUPlot,
      requestAnimationFrame: frames.requestAnimationFrame,
      cancelAnimationFrame: frames.cancelAnimationFrame,
      setInterval: () => 1,
      clearInterval: () => {},
      ResizeObserver: null,
      MutationObserver: null,
    });
    const cleanup = widget.initialize({ model: model.proxy() });
    const el = dom.container();
    const unrender = widget.render({ model: model.proxy(), el });
    FakePusher.last().connect();
    FakePusher.last().deliver("sensors", "point", { step: 1, loss: 2 });
    frames.frame();
    assert.equal(el.querySelector(".lw-chart").dataset.points, "1");
    assert.equal(FakeUPlot.instances.length, 1);
    unrender();
    cleanup();
    assert.equal(FakePusher.last().disconnected, true);
    assert.equal(model.listenerCount(), 0);
  });
});

describe("extend() racing the record", () => {
  test("a points message the record already includes is not drawn twice, in either order", () => {
    const cols = (extendsN) =>
      encodeColumns({ t: [T0 - 10, T0 - 10], x: [1, 2], ys: [[5, 6]], fields: ["loss"], extends: extendsN });
    // the record first, then the (late) message of the same extend() call
    const a = bare();
    a.model.set("_backfill", cols(1));
    a.model.trigger("msg:custom", { type: "points", seq: 1 }, [cols(0)]);
    a.store.flush();
    assert.equal(a.store.size, 2);
    // the message first, then the record
    const b = bare();
    b.model.trigger("msg:custom", { type: "points", seq: 1 }, [cols(0)]);
    b.model.set("_backfill", cols(1));
    b.store.flush();
    assert.equal(b.store.size, 2);
    // a newer extend() is drawn
    b.model.trigger("msg:custom", { type: "points", seq: 2 }, [
      encodeColumns({ t: [T0 - 5], x: [3], ys: [[7]], fields: ["loss"] }),
    ]);
    b.store.flush();
    assert.equal(b.store.size, 3);
  });
});
