import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  dataText,
  decodeJsonLines,
  Emitter,
  formatJson,
  formatRate,
  formatTime,
  labelText,
  RateMeter,
  RingBuffer,
  truncate,
} from "../src/util.js";

describe("RingBuffer", () => {
  test("keeps the newest `capacity` items, in order", () => {
    const ring = new RingBuffer(3);
    for (let i = 1; i <= 7; i++) ring.push(i);
    assert.equal(ring.size, 3);
    assert.deepEqual(ring.toArray(), [5, 6, 7]);
    assert.equal(ring.newest(0), 7);
    assert.equal(ring.newest(2), 5);
    assert.equal(ring.newest(3), undefined);
  });

  test("reset to another capacity keeps the newest; retain filters in order", () => {
    const ring = new RingBuffer(5);
    for (let i = 1; i <= 5; i++) ring.push(i);
    ring.reset(ring.toArray(), 2);
    assert.deepEqual(ring.toArray(), [4, 5]);
    ring.reset([1, 2, 3, 4, 5, 6], 6);
    ring.retain((x) => x % 2 === 0);
    assert.deepEqual(ring.toArray(), [2, 4, 6]);
    assert.equal(ring.capacity, 6);
  });
});

describe("RateMeter", () => {
  test("a steady rate is measured over the window", () => {
    const meter = new RateMeter(5000, 250);
    const t0 = 1_000_000;
    for (let ms = 0; ms < 10_000; ms += 20) meter.add(t0 + ms); // 50 events/s for 10 s
    assert.ok(Math.abs(meter.rate(t0 + 10_000) - 50) < 2.5, `rate ${meter.rate(t0 + 10_000)}`);
  });

  test("a young meter divides by its age (at least 1 s), and decays to 0", () => {
    const meter = new RateMeter(5000, 250);
    assert.equal(meter.rate(0), 0);
    for (let ms = 0; ms < 2000; ms += 10) meter.add(10_000 + ms); // 100/s for 2 s
    assert.ok(Math.abs(meter.rate(12_000) - 100) < 5, `rate ${meter.rate(12_000)}`);
    assert.equal(meter.rate(20_000), 0, "nothing in the last 5 s");
    const young = new RateMeter(5000, 250);
    young.add(50_000, 3);
    assert.equal(young.rate(50_100), 3, "3 events in the first 100 ms count over 1 s, not 0.1 s");
  });
});

describe("decodeJsonLines", () => {
  const text = '{"t":1,"event":"a"}\n\nnot json\n{"t":2,"event":"b"}\n';
  const bytes = new TextEncoder().encode(text);

  test("reads DataView, ArrayBuffer, typed arrays and strings; skips bad lines", () => {
    const want = [
      { t: 1, event: "a" },
      { t: 2, event: "b" },
    ];
    assert.deepEqual(decodeJsonLines(new DataView(bytes.buffer)), want);
    assert.deepEqual(decodeJsonLines(bytes.buffer), want);
    assert.deepEqual(decodeJsonLines(bytes), want);
    assert.deepEqual(decodeJsonLines(text), want);
  });

  test("a DataView over part of a buffer reads only that part", () => {
    const padded = new Uint8Array(bytes.length + 4);
    padded.set(bytes, 2);
    assert.equal(decodeJsonLines(new DataView(padded.buffer, 2, bytes.length)).length, 2);
  });

  test("empty and missing values give no rows", () => {
    assert.deepEqual(decodeJsonLines(null), []);
    assert.deepEqual(decodeJsonLines(new DataView(new ArrayBuffer(0))), []);
  });
});

describe("formatting", () => {
  test("time is local HH:MM:SS.mmm", () => {
    const t = new Date(2026, 0, 2, 3, 4, 5, 67).getTime();
    assert.equal(formatTime(t), "03:04:05.067");
  });

  test("data text, truncation, rate", () => {
    assert.equal(dataText({ a: [1, 2] }), '{"a":[1,2]}');
    assert.equal(dataText("plain"), "plain");
    assert.equal(dataText(null), "null");
    assert.equal(truncate("abcdef", 4), "abc…");
    assert.equal(truncate("abc", 4), "abc");
    assert.equal(formatRate(0), "0.0");
    assert.equal(formatRate(12.345), "12.3");
    assert.equal(formatRate(1234.5), "1235");
  });
});

test("Emitter: on returns its off; a failing listener does not stop the others", () => {
  const e = new Emitter();
  const seen = [];
  const original = console.error;
  console.error = () => {};
  try {
    e.on("x", () => {
      throw new Error("listener bug");
    });
    const off = e.on("x", (v) => seen.push(v));
    e.emit("x", 1);
    off();
    e.emit("x", 2);
  } finally {
    console.error = original;
  }
  assert.deepEqual(seen, [1]);
});

describe("formatJson / dataText / labelText", () => {
  test("is JSON.stringify for ordinary data, compact or indented", () => {
    const value = { a: [1, 2.5, { b: null, c: "x\"y" }], d: true, e: [], f: {}, g: "é" };
    assert.equal(formatJson(value), JSON.stringify(value));
    assert.equal(formatJson(value, { indent: 2 }), JSON.stringify(value, null, 2));
    assert.equal(dataText(value), JSON.stringify(value));
    assert.equal(dataText("plain"), "plain");
  });

  test("never throws: 5,000 levels, cycles, BigInt, non-finite numbers", () => {
    const deep = JSON.parse(`${"[".repeat(5000)}${"]".repeat(5000)}`);
    assert.throws(() => String(deep), RangeError, "what broke the Feed before");
    const text = dataText(deep);
    assert.ok(text.startsWith("[[[") && text.includes("[…]"));
    const cyclic = { a: 1 };
    cyclic.self = cyclic;
    assert.equal(formatJson(cyclic), '{"a":1,"self":{…}}');
    assert.equal(formatJson({ n: 10n, x: Number.NaN, y: Infinity }), '{"n":10,"x":null,"y":null}');
  });

  test("stops after maxChars, in time bounded by maxChars, with an ellipsis", () => {
    const big = Array.from({ length: 1_000_000 }, (_, i) => i);
    const started = performance.now();
    const text = formatJson(big, { maxChars: 100 });
    assert.ok(performance.now() - started < 50);
    assert.equal(text.length, 100);
    assert.ok(text.endsWith("…"));
    assert.equal(dataText("z".repeat(10), 5), "zzzz…");
  });

  test("labelText: any value as a short line", () => {
    assert.equal(labelText("abc"), "abc");
    assert.equal(labelText(null), "");
    assert.equal(labelText(42), "42");
    assert.equal(labelText(["a", 1]), '["a",1]');
    assert.equal(labelText("x".repeat(500), 10).length, 10);
    assert.ok(labelText(JSON.parse(`${"[".repeat(5000)}${"]".repeat(5000)}`)).length < 40);
  });
});
