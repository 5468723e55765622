import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, beforeEach, describe, test } from "node:test";

import { Connection } from "../src/connection.js";
import {
  aggregate,
  formatCounts,
  formatInterval,
  formatSizeof,
  formatTimes,
  ProgressStore,
  ProgressView,
} from "../src/progress.js";
import { createWidget, KINDS } from "../src/kinds.js";
import { FakeModel, FakePusher, makeDom, ManualFrames, ManualTimers } from "./helpers.js";

const T0 = 1_700_000_000_000;
const dom = makeDom();
after(() => dom.close());
beforeEach(() => FakePusher.reset());

/** A job's state as livewidget.progress() publishes it. */
function job(id, extra = {}) {
  return {
    job: id,
    parent: null,
    desc: `job ${id}`,
    n: 0,
    total: 10,
    unit: "it",
    unit_scale: false,
    unit_divisor: 1000,
    rate: null,
    elapsed: 0,
    remaining: null,
    postfix: null,
    host: "h1",
    pid: 1,
    status: "running",
    error: null,
    leave: true,
    t: T0 / 1000,
    ...extra,
  };
}

/** A fake Notification API: records what is shown; `permission` and the answer are set by the test. */
function fakeNotification(permission = "granted", answer = "granted") {
  const shown = [];
  class N {
    static permission = permission;
    static asked = 0;
    static async requestPermission() {
      N.asked += 1;
      N.permission = answer;
      return answer;
    }
    constructor(title, options) {
      shown.push({ title, ...options });
    }
  }
  N.shown = shown;
  return N;
}

function session(overrides = {}, extraDeps = {}) {
  const model = new FakeModel({ _kind: "progress", channels: ["progress"], jobs: {}, _groups: {}, notify: false, ...overrides });
  const clock = { now: T0 };
  const timers = new ManualTimers();
  const deps = {
    Pusher: FakePusher,
    now: () => clock.now,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
    Notification: null,
    ...extraDeps,
  };
  const conn = new Connection(model, deps);
  const store = new ProgressStore(model, conn, deps).start();
  conn.start();
  const pusher = FakePusher.last();
  pusher.connect();
  const send = (state) => pusher.deliver("progress", "progress", state);
  return { model, conn, store, pusher, clock, timers, deps, send };
}

function view(s) {
  const frames = new ManualFrames();
  const el = dom.container();
  const v = new ProgressView(s.model, el, s, {
    ...s.deps,
    requestAnimationFrame: frames.requestAnimationFrame,
    cancelAnimationFrame: frames.cancelAnimationFrame,
    setInterval: () => 1,
    clearInterval: () => {},
  }).mount();
  const q = (sel) => el.querySelector(sel);
  const jobEl = (id) => el.querySelector(`.lw-job[data-job="${id}"]`);
  return { v, el, frames, q, jobEl, root: q(".lw-board") };
}

describe("formatting (as tqdm)", () => {
  test("format_sizeof and format_interval", () => {
    assert.equal(formatSizeof(0), "0.00");
    assert.equal(formatSizeof(9.994), "9.99");
    assert.equal(formatSizeof(12.34), "12.3");
    assert.equal(formatSizeof(999), "999");
    assert.equal(formatSizeof(1500), "1.50k");
    assert.equal(formatSizeof(2_500_000), "2.50M");
    assert.equal(formatSizeof(1024 * 1024, 1024), "1.00M");
    assert.equal(formatInterval(0), "00:00");
    assert.equal(formatInterval(75.9), "01:15");
    assert.equal(formatInterval(3725), "1:02:05");
    assert.equal(formatInterval(null), "?");
  });

  test("n/total, rate and times, with unit, unit_scale and unit_divisor", () => {
    let f = formatCounts(job("a", { n: 3, total: 10, rate: 2.5 }));
    assert.deepEqual([f.counts, f.rate, f.fraction], ["3/10", "2.50it/s", 0.3]);
    f = formatCounts(job("a", { n: 3, total: null, rate: 0.5, unit: "file" }));
    assert.deepEqual([f.counts, f.rate, f.fraction], ["3/?", "2.00s/file", null]);
    f = formatCounts(job("a", { n: 1536, total: 1024 * 1024, rate: 2048, unit: "B", unit_scale: true, unit_divisor: 1024 }));
    assert.deepEqual([f.counts, f.rate], ["1.50k/1.00M", "2.00kB/s"]);
    f = formatCounts(job("a", { n: 4, total: 8, rate: 2, unit_scale: 0.5 }));
    assert.deepEqual([f.counts, f.rate, f.fraction], ["2/4", "1.00it/s", 0.5]);
    f = formatCounts(job("a", { rate: null }));
    assert.equal(f.rate, "?it/s");
    assert.equal(formatTimes({ elapsed: 12, remaining: 30 }), "00:12<00:30");
    assert.equal(formatTimes({ elapsed: 12, remaining: null }), "00:12<?");
    assert.equal(formatTimes({ elapsed: 6, remaining: null, status: "done" }), "00:06");
    assert.equal(formatCounts(job("a", { status: "done", n: 30, elapsed: 6, rate: null })).rate, "5.00it/s");
  });
});

describe("aggregate", () => {
  test("follows the kernel's rules", () => {
    const t = T0 / 1000;
    const jobs = new Map(
      [
        job("p", { desc: "outer", t }),
        job("a", { parent: "p", n: 5, total: 10, rate: 2, status: "running", elapsed: 5, t, host: "h2" }),
        job("b", { parent: "p", n: 10, total: 10, rate: 3, status: "done", elapsed: 4, t: t - 1, host: "h1" }),
        job("c", { parent: "p", n: 2, total: 10, status: "failed", error: "ValueError: x", elapsed: 2, t }),
      ].map((s) => [s.job, s]),
    );
    const g = aggregate(jobs).get("p");
    assert.equal(g.desc, "outer");
    assert.deepEqual([g.jobs, g.running, g.done, g.failed, g.cancelled], [3, 1, 1, 1, 0]);
    assert.deepEqual([g.n, g.total, g.rate, g.status], [17, 30, 2, "failed"]);
    assert.equal(g.elapsed, 5);
    assert.equal(g.remaining, 6.5);
    assert.deepEqual(g.hosts, ["h1", "h2"]);
    assert.deepEqual(g.errors, ["ValueError: x"]);
    assert.equal(aggregate(jobs).has("a"), false);
    jobs.set("d", job("d", { parent: "p", total: null }));
    assert.equal(aggregate(jobs).get("p").total, null);
  });
});

describe("ProgressStore", () => {
  test("is seeded from the jobs trait, then follows live events (the last received wins)", () => {
    const s = session({ jobs: { a: job("a", { n: 4 }), b: job("b", { status: "done", n: 10 }) } });
    assert.deepEqual([...s.store.jobs.keys()], ["a", "b"]);
    s.send(job("a", { n: 6, t: T0 / 1000 + 1 }));
    assert.equal(s.store.jobs.get("a").n, 6);
    assert.equal(s.store.received, 1);
    s.pusher.deliver("progress", "other", job("z"));
    s.send({ nope: 1 });
    s.send("not json");
    assert.equal(s.store.jobs.size, 2);
    // JSON text is accepted too
    s.send(JSON.stringify(job("c")));
    assert.equal(s.store.jobs.has("c"), true);
  });

  test("a newer jobs trait replaces the table, keeping newer live states and fresh live jobs", () => {
    const s = session({ jobs: { a: job("a", { n: 1 }) } });
    s.send(job("a", { n: 8, t: T0 / 1000 + 5 }));
    s.send(job("live", { t: T0 / 1000 + 5 }));
    s.model.set("jobs", { a: job("a", { n: 3, t: T0 / 1000 + 2 }), k: job("k") });
    assert.equal(s.store.jobs.get("a").n, 8, "the live state is newer");
    assert.equal(s.store.jobs.has("k"), true);
    assert.equal(s.store.jobs.has("live"), true, "received live just now: the kernel may lag");
    s.clock.now += 10_000;
    s.model.set("jobs", { a: job("a", { n: 9, t: T0 / 1000 + 9 }) });
    assert.deepEqual([...s.store.jobs.keys()], ["a"], "cleared by the kernel");
    assert.equal(s.store.jobs.get("a").n, 9);
  });

  test("done with leave=false removes the job", () => {
    const s = session();
    s.send(job("a"));
    s.send(job("a", { status: "done", leave: false, n: 10 }));
    assert.equal(s.store.jobs.has("a"), false);
  });

  test("clear finished: hidden at once, the message sent, and a stale trait does not bring them back", () => {
    const s = session({ jobs: { a: job("a"), b: job("b", { status: "done" }), c: job("c", { status: "failed" }) } });
    assert.equal(s.store.clearFinished(), 2);
    assert.deepEqual(s.model.sent, [{ type: "clear", finished: true }]);
    assert.deepEqual([...s.store.jobs.keys()], ["a"]);
    s.model.set("jobs", { a: job("a"), b: job("b", { status: "done" }), c: job("c", { status: "failed" }) });
    assert.deepEqual([...s.store.jobs.keys()], ["a"], "the kernel had not cleared yet");
    s.send(job("b", { status: "running", t: T0 / 1000 + 1 }));
    assert.equal(s.store.jobs.has("b"), true, "a job that publishes again comes back");
  });
});

describe("notifications", () => {
  test("once per job, only when notify is true and permitted, never for jobs already ended when seeded", () => {
    const N = fakeNotification("granted");
    const s = session({ notify: true, jobs: { old: job("old", { status: "done" }) } }, { Notification: N });
    s.send(job("old", { status: "done", t: T0 / 1000 + 1 }));
    s.send(job("a", { desc: "train" }));
    s.send(job("a", { desc: "train", status: "done", n: 10, elapsed: 3 }));
    s.send(job("a", { desc: "train", status: "done", n: 10, elapsed: 3.1 }));
    s.send(job("b", { desc: "load", status: "failed", error: "OSError: disk full" }));
    s.timers.advance(1000);
    assert.deepEqual(
      N.shown.map((n) => [n.title, n.body]),
      [
        ["train: done", "10/10 it in 00:03 on h1"],
        ["load: failed", "OSError: disk full"],
      ],
    );
    s.send(job("b", { desc: "load", status: "failed", error: "again" }));
    s.timers.advance(1000);
    assert.equal(N.shown.length, 2);
  });

  test("nothing when notify is false or permission is not granted", () => {
    const N = fakeNotification("granted");
    const s = session({ notify: false }, { Notification: N });
    s.send(job("a", { status: "done" }));
    s.timers.advance(1000);
    const D = fakeNotification("denied");
    const s2 = session({ notify: true }, { Notification: D });
    s2.send(job("a", { status: "done" }));
    s2.timers.advance(1000);
    assert.equal(N.shown.length + D.shown.length, 0);
  });

  test("a group notifies once when all its workers ended; failed workers each; many at once are merged", () => {
    const N = fakeNotification("granted");
    const s = session({ notify: true }, { Notification: N });
    for (const id of ["w1", "w2", "w3"]) s.send(job(id, { parent: "pool" }));
    s.send(job("w1", { parent: "pool", status: "done" }));
    s.send(job("w2", { parent: "pool", status: "failed", error: "ValueError: bad" }));
    s.timers.advance(1000);
    assert.deepEqual(N.shown.map((n) => n.title), ["job w2: failed"]);
    s.send(job("w3", { parent: "pool", status: "done" }));
    s.timers.advance(1000);
    assert.deepEqual(N.shown.map((n) => n.title), ["job w2: failed", "pool: finished with failures"]);
    assert.match(N.shown[1].body, /3 jobs: 2 done, 1 failed/);
    for (let i = 0; i < 6; i++) s.send(job(`x${i}`, { status: "done" }));
    s.timers.advance(1000);
    assert.equal(N.shown.length, 3);
    assert.equal(N.shown[2].title, "6 jobs ended");
  });

  test("the toggle asks permission on click and saves notify", async () => {
    const N = fakeNotification("default", "granted");
    const s = session({ notify: false }, { Notification: N });
    const { q, frames } = view(s);
    const button = q(".lw-notify");
    assert.equal(button.dataset.state, "off");
    button.click();
    await new Promise((r) => setImmediate(r));
    assert.equal(N.asked, 1);
    assert.equal(s.model.get("notify"), true);
    assert.equal(s.model.saved, 1);
    frames.frame();
    assert.equal(button.dataset.state, "on");
    button.click();
    await new Promise((r) => setImmediate(r));
    assert.equal(s.model.get("notify"), false);
    assert.equal(N.asked, 1);
  });
});

describe("ProgressView", () => {
  test("one row per job with description, bar, n/total, rate, times, status and host", () => {
    const s = session({ jobs: { a: job("a", { n: 3, rate: 1.5, elapsed: 2, remaining: 4.7, postfix: "loss=0.1" }) } });
    const { jobEl, root, q } = view(s);
    assert.ok(root);
    const row = jobEl("a");
    assert.equal(row.dataset.status, "running");
    assert.equal(row.querySelector(".lw-name").textContent, "job a");
    assert.equal(row.querySelector(".lw-postfix").textContent, "loss=0.1");
    assert.equal(row.querySelector(".lw-n").textContent, "3/10");
    assert.equal(row.querySelector(".lw-job-rate").textContent, "1.50it/s");
    assert.equal(row.querySelector(".lw-times").textContent, "00:02<00:04");
    assert.equal(row.querySelector(".lw-host").textContent, "h1");
    assert.equal(row.querySelector(".lw-fill").style.width, "30.00%");
    assert.equal(row.querySelector(".lw-pct").textContent, "30%");
    assert.equal(row.querySelector(".lw-detail").hidden, true);
    assert.equal(q(".lw-clear").disabled, true);
  });

  test("job text nested 5,000 deep or a megabyte long is shown bounded, and later updates still paint", () => {
    const s = session();
    const { jobEl, frames } = view(s);
    const deep = JSON.parse(`${"[".repeat(5000)}${"]".repeat(5000)}`);
    s.send(job("a", { desc: deep, postfix: deep, host: deep, unit: deep, parent: null }));
    s.send(job("b", { desc: "d".repeat(1_000_000), status: "failed", error: "e".repeat(1_000_000) }));
    frames.frame();
    assert.ok(jobEl("a"), "the job with deep fields is shown");
    assert.ok(jobEl("a").querySelector(".lw-name").textContent.length <= 300);
    assert.ok(jobEl("b").querySelector(".lw-name").textContent.length <= 300);
    assert.ok(jobEl("b").querySelector(".lw-detail").textContent.length <= 4000);
    s.send(job("a", { desc: "fine", n: 5 }));
    frames.frame();
    assert.equal(jobEl("a").querySelector(".lw-name").textContent, "fine");
    assert.equal(jobEl("a").querySelector(".lw-n").textContent, "5/10");
  });

  test("live events are coalesced into one paint per animation frame", () => {
    const s = session();
    const { jobEl, frames, v } = view(s);
    const before = v.paints;
    for (let i = 1; i <= 50; i++) s.send(job("a", { n: i % 11, t: T0 / 1000 + i }));
    assert.equal(jobEl("a"), null, "not painted before the frame");
    assert.equal(frames.frame(), 1);
    assert.equal(v.paints, before + 1);
    assert.equal(jobEl("a").querySelector(".lw-n").textContent, "6/10");
    const node = jobEl("a");
    s.send(job("a", { n: 7, t: T0 / 1000 + 99 }));
    frames.frame();
    assert.equal(jobEl("a"), node, "the row is updated in place");
    assert.equal(node.dataset.n, "7");
  });

  test("rows keep their place (first seen) while they update; workers are ordered by name", () => {
    const s = session({ jobs: { late: job("late", { elapsed: 1 }), early: job("early", { elapsed: 50 }) } });
    const { el, frames } = view(s);
    const order = () => [...el.querySelectorAll(".lw-job")].map((r) => r.dataset.job);
    assert.deepEqual(order(), ["early", "late"], "seeded by start time");
    s.send(job("new"));
    s.send(job("early", { elapsed: 0, t: T0 / 1000 + 9 }));
    for (const id of ["w10", "w2", "w1"]) s.send(job(id, { parent: "p", desc: `worker ${id.slice(1)}` }));
    frames.frame();
    assert.deepEqual(order(), ["early", "late", "new", "w1", "w2", "w10"]);
  });

  test("failed shows its error; statuses are data-status", () => {
    const s = session();
    const { jobEl, frames, root } = view(s);
    s.send(job("a", { status: "done", n: 10 }));
    s.send(job("b", { status: "failed", error: "ZeroDivisionError: division by zero" }));
    s.send(job("c", { status: "cancelled", error: "KeyboardInterrupt" }));
    frames.frame();
    assert.equal(jobEl("a").dataset.status, "done");
    assert.equal(jobEl("b").dataset.status, "failed");
    const detail = jobEl("b").querySelector(".lw-detail");
    assert.equal(detail.hidden, false);
    assert.equal(detail.textContent, "ZeroDivisionError: division by zero");
    assert.equal(jobEl("c").dataset.status, "cancelled");
    assert.deepEqual([root.dataset.done, root.dataset.failed, root.dataset.cancelled], ["1", "1", "1"]);
  });

  test("finished jobs and groups show their final rate and elapsed time, not ?it/s and 00:06<?", () => {
    const s = session();
    const { jobEl, frames, q } = view(s);
    s.send(job("a", { status: "done", n: 12, elapsed: 6, rate: null, remaining: null }));
    s.send(job("b", { status: "failed", n: 3, elapsed: 6, rate: null, remaining: null, error: "boom" }));
    s.send(job("w1", { parent: "pool", n: 10, elapsed: 4, status: "done", rate: null, t: T0 / 1000 }));
    s.send(job("w2", { parent: "pool", n: 8, elapsed: 6, status: "done", rate: null, t: T0 / 1000 }));
    frames.frame();
    assert.equal(jobEl("a").querySelector(".lw-job-rate").textContent, "2.00it/s");
    assert.equal(jobEl("a").querySelector(".lw-times").textContent, "00:06");
    assert.equal(jobEl("b").querySelector(".lw-job-rate").textContent, "2.00s/it");
    assert.equal(jobEl("b").querySelector(".lw-times").textContent, "00:06");
    const head = q('.lw-group[data-parent="pool"] .lw-group-head');
    assert.equal(head.querySelector(".lw-job-rate").textContent, "3.00it/s"); // 18 items in 6 s
    assert.equal(head.querySelector(".lw-times").textContent, "00:06");
    for (const el of [jobEl("a"), jobEl("b"), head]) {
      assert.doesNotMatch(el.textContent, /\?it\/s|<\?/);
    }
  });

  test("the percentage is drawn twice, the copy over the fill clipped to it, in a colour read at 4.5:1", () => {
    const s = session();
    const { jobEl, frames } = view(s);
    s.send(job("a", { n: 7, total: 10 }));
    frames.frame();
    const bar = jobEl("a").querySelector(".lw-bar");
    assert.equal(bar.style.getPropertyValue("--lw-frac"), "70.00%");
    const [under, over] = bar.querySelectorAll(".lw-pct");
    assert.equal(under.textContent, "70%");
    assert.equal(over.textContent, "70%");
    assert.ok(over.classList.contains("lw-pct-on"));
    assert.equal(over.getAttribute("aria-hidden"), "true");
  });

  test("workers of a parent show as one aggregate row that expands", () => {
    const s = session();
    const { el, frames, q, jobEl } = view(s);
    s.send(job("w1", { parent: "pool", n: 5, rate: 2 }));
    s.send(job("w2", { parent: "pool", n: 10, status: "done" }));
    s.send(job("solo"));
    frames.frame();
    const group = q('.lw-group[data-parent="pool"]');
    assert.ok(group);
    assert.equal(group.dataset.jobs, "2");
    assert.equal(group.dataset.status, "running");
    assert.equal(group.querySelector(".lw-group-head .lw-n").textContent, "15/20");
    assert.match(group.querySelector(".lw-badges").textContent, /2 jobs.*1 running.*1 done/);
    const children = group.querySelector(".lw-children");
    assert.equal(children.hidden, true);
    assert.equal(children.querySelectorAll(".lw-job").length, 2, "the workers are in the DOM, collapsed");
    assert.equal(jobEl("w1").parentElement, children);
    assert.equal(jobEl("solo").parentElement, q(".lw-jobs"));
    group.querySelector(".lw-group-head .lw-name").click();
    assert.equal(children.hidden, false);
    assert.equal(group.querySelector(".lw-group-head").getAttribute("aria-expanded"), "true");
    s.send(job("w1", { parent: "pool", n: 3, status: "failed", error: "ValueError: boom" }));
    frames.frame();
    assert.equal(group.dataset.status, "failed");
    assert.equal(group.querySelector(".lw-group-head + .lw-children"), children);
    assert.equal(group.querySelector(":scope > .lw-group-head > .lw-detail").textContent, "ValueError: boom");
    assert.equal(el.querySelectorAll(".lw-job").length, 3);
  });

  test("the clear button hides finished jobs at once and sends the clear message", () => {
    const s = session({ jobs: { a: job("a"), b: job("b", { status: "done" }) } });
    const { q, jobEl } = view(s);
    const clear = q(".lw-clear");
    assert.equal(clear.disabled, false);
    assert.match(clear.textContent, /\(1\)/);
    clear.click();
    assert.equal(jobEl("b"), null, "gone without waiting for the kernel");
    assert.ok(jobEl("a"));
    assert.deepEqual(s.model.sent, [{ type: "clear", finished: true }]);
    assert.equal(clear.disabled, true);
  });

  test("job text is never HTML; empty board says where to publish", () => {
    const s = session({ channels: ["ops"] });
    const { el, frames, q } = view(s);
    assert.match(q(".lw-empty").textContent, /ops/);
    s.pusher.deliver("ops", "progress", job("x", { desc: "<img src=x onerror=alert(1)>" }));
    frames.frame();
    assert.equal(el.querySelector("img"), null);
    assert.equal(q(".lw-name").textContent, "<img src=x onerror=alert(1)>");
    assert.equal(q(".lw-empty").hidden, true);
  });

  test("createWidget dispatches _kind progress; cleanup removes listeners and DOM", () => {
    assert.ok(KINDS.progress);
    const model = new FakeModel({ _kind: "progress", channels: ["progress"], jobs: { a: job("a") }, notify: false });
    const frames = new ManualFrames();
    const widget = createWidget({
      Pusher: FakePusher,
      requestAnimationFrame: frames.requestAnimationFrame,
      cancelAnimationFrame: frames.cancelAnimationFrame,
      Notification: null,
    });
    const cleanupModel = widget.initialize({ model: model.proxy() });
    const el = dom.container();
    const cleanupView = widget.render({ model: model.proxy(), el });
    assert.ok(el.querySelector('.lw-board .lw-job[data-job="a"][data-status="running"]'));
    cleanupView();
    assert.equal(el.querySelector(".lw-board"), null);
    cleanupModel();
    assert.equal(model.listenerCount(), 0);
  });
});

describe("progress.css: the percentage over each fill", () => {
  // WCAG 2 relative luminance and contrast ratio
  const lum = (hex) => {
    const c = [1, 3, 5].map((i) => Number.parseInt(hex.slice(i, i + 2), 16) / 255);
    const l = c.map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
    return 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2];
  };
  const ratio = (a, b) => {
    const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  };
  const css = readFileSync(new URL("../src/progress.css", import.meta.url), "utf8");
  const block = (selector) => css.slice(css.indexOf(`\n${selector} {\n  --lw-on-`)).split("}")[0];
  const onColor = (text, status) => new RegExp(`--lw-on-${status}: (#[0-9a-f]{6})`).exec(text)[1];
  // JupyterLab's fills (its theme-light / theme-dark variables): brand, success, error colour 1, and
  // ui-font-color2 (54 % black or white) over the layout colour.
  const FILLS = {
    light: { running: "#1976d2", done: "#388e3c", failed: "#d32f2f", cancelled: "#757575" },
    dark: { running: "#2196f3", done: "#4caf50", failed: "#f44336", cancelled: "#929292" },
  };

  test("every status reads at 4.5:1 or more in the light and the dark theme", () => {
    const light = block(".lw-board");
    const dark = block('body[data-jp-theme-light="false"] .lw-board');
    for (const [theme, text] of [
      ["light", light],
      ["dark", dark],
    ]) {
      for (const [status, fill] of Object.entries(FILLS[theme])) {
        const r = ratio(onColor(text, status), fill);
        assert.ok(r >= 4.5, `${theme} ${status}: ${r.toFixed(2)}:1`);
      }
    }
  });
});
