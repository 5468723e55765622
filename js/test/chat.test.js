import assert from "node:assert/strict";
import { after, beforeEach, describe, test } from "node:test";

import { ChatStore, ChatView, colorFor, EVENTS, initials, LIMITS, splitText } from "../src/chat.js";
import { Connection } from "../src/connection.js";
import { LINK_REL, renderMarkdown, safeHref } from "../src/markdown.js";
import { createWidget } from "../src/kinds.js";
import { FakeModel, FakePusher, historyBytes, jsonResponse, makeDom, ManualFrames, ManualTimers, settle } from "./helpers.js";

const T0 = 1_700_000_000_000;
const ROOM = "presence-chat-team";
const dom = makeDom();
after(() => dom.close());
beforeEach(() => FakePusher.reset());

const ALLOWED_TAGS = new Set(["DIV", "P", "STRONG", "EM", "DEL", "CODE", "PRE", "BLOCKQUOTE", "UL", "OL", "LI", "A"]);

/** pusher-js's presence Members, enough for the store: each(), count, me. */
class FakeMembers {
  constructor(list, me) {
    this.list = list; // [{id, info}]
    this.me = me;
  }

  get count() {
    return this.list.length;
  }

  set count(_) {} // FakeChannel.succeed() writes it

  each(fn) {
    for (const m of this.list) fn(m);
  }
}

const ALICE = { id: "alice", name: "Alice Liddell", color: "#e5484d" };
const BOB = { id: "bob", info: { name: "Bob", color: "#0090ff" } };
const KERNEL = { id: "alice:kernel", info: { name: "Alice Liddell", color: "#e5484d", livewidget_kernel: true } };

/** A Chat model subscribed to its room through a fake pusher-js, with manual clock, timers and microtasks. */
async function session({ members = [{ id: "alice", info: ALICE }, KERNEL, BOB], history } = {}) {
  const model = new FakeModel({
    _kind: "chat",
    channels: [ROOM],
    room: "team",
    me: ALICE,
    title: "# team",
    _rewind: { count: 50 }, // as Chat's default history=50
    ...(history ? { _history: history } : {}),
  });
  const timers = new ManualTimers();
  const clock = { now: T0 };
  const deferred = [];
  const deps = {
    Pusher: FakePusher,
    now: () => clock.now + timers.now,
    random: () => 0.5,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
    defer: (fn) => deferred.push(fn),
    fetch: async (_url, init) => {
      const body = JSON.parse(init.body);
      return jsonResponse(200, { auth: "key:sig", channel_data: JSON.stringify({ user_id: "alice", body }) });
    },
  };
  const conn = new Connection(model, deps);
  const store = new ChatStore(model, conn, deps).start();
  conn.start();
  const pusher = FakePusher.last();
  const channel = pusher.channels.get(ROOM);
  channel.members = new FakeMembers(members, { id: "alice", info: ALICE });
  const sent = [];
  channel.trigger = (event, data) => {
    sent.push({ event, data: JSON.parse(JSON.stringify(data)) });
    return true;
  };
  pusher.connect();
  await settle();
  const run = () => {
    while (deferred.length) deferred.shift()();
  };
  /** An event from the server, as pusher-js delivers it, then the deferred handling. */
  const deliver = (event, data, userId) => {
    pusher.deliver(ROOM, event, data, userId);
    run();
  };
  return { model, conn, store, pusher, channel, sent, timers, deliver, run, deps };
}

function view(s) {
  const frames = new ManualFrames();
  const el = dom.container();
  const v = new ChatView(s.model, el, s, {
    requestAnimationFrame: frames.requestAnimationFrame,
    eager: false, // frames run by hand; the eager path has its own test
    cancelAnimationFrame: frames.cancelAnimationFrame,
  }).mount();
  return { v, el, frames, root: el.querySelector(".lw-chat") };
}

function piece(id, text, user = { id: "bob", name: "Bob" }, t = T0 + 1) {
  return { id, t, text, user };
}

/** Every element and attribute under `root` is one markdown.js may make; no handler, no unsafe link. */
function assertInert(root) {
  for (const el of [root, ...root.querySelectorAll("*")]) {
    assert.ok(ALLOWED_TAGS.has(el.tagName), `unexpected <${el.tagName.toLowerCase()}>`);
    for (const attr of el.getAttributeNames()) {
      assert.ok(!attr.toLowerCase().startsWith("on"), `event handler attribute ${attr}`);
      assert.ok(["class", "href", "target", "rel", "title", "start"].includes(attr), `attribute ${attr}`);
    }
    if (el.tagName === "A") {
      assert.match(el.getAttribute("href"), /^(https?:\/\/|mailto:)/);
      assert.equal(el.getAttribute("rel"), LINK_REL);
      assert.equal(el.getAttribute("target"), "_blank");
    }
  }
}

describe("markdown: no HTML from a message ever runs", () => {
  const XSS = [
    "<script>window.__lw_xss = 1</script>",
    '<img src=x onerror="window.__lw_xss = 1">',
    "<svg onload=window.__lw_xss=1>",
    "<svg><script>window.__lw_xss=1</script></svg>",
    '<iframe src="javascript:window.__lw_xss=1"></iframe>',
    '<a href="javascript:window.__lw_xss=1">click</a>',
    "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#60;b&#62;",
    '<div style="background:url(javascript:alert(1))">x</div>',
    "<math><mi xlink:href=\"javascript:alert(1)\">x</mi></math>",
    "\"><script>alert(1)</script>",
    "<<script>script>alert(1)<</script>/script>",
  ];
  for (const payload of XSS) {
    test(`shown as text: ${payload}`, () => {
      const root = renderMarkdown(dom.document, payload);
      assertInert(root);
      assert.equal(root.querySelectorAll("script, img, svg, iframe, math, style").length, 0);
      assert.equal(root.textContent, payload);
    });
  }

  const LINKS = [
    "[click me](javascript:window.__lw_xss=1)",
    "[click me](JaVaScRiPt:alert(1))",
    "[click me]( javascript:alert(1))",
    "[click me](java\tscript:alert(1))",
    "[click me](javascript&colon;alert(1))",
    "[click me](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click me](vbscript:msgbox(1))",
    "[click me](//evil.example/x)",
    "[click me](/relative/path)",
    "[click me](file:///etc/passwd)",
  ];
  for (const payload of LINKS) {
    test(`no link is made of ${JSON.stringify(payload)}`, () => {
      const root = renderMarkdown(dom.document, payload);
      assertInert(root);
      assert.equal(root.querySelectorAll("a").length, 0);
      assert.equal(root.textContent, payload);
    });
  }

  test("bare javascript: and data: URLs stay text", () => {
    const root = renderMarkdown(dom.document, "javascript:alert(1) data:text/html,<b>x</b>");
    assertInert(root);
    assert.equal(root.querySelectorAll("a").length, 0);
  });

  test("safeHref keeps http, https and mailto only", () => {
    assert.equal(safeHref("https://example.com/a?b=1#c"), "https://example.com/a?b=1#c");
    assert.equal(safeHref("http://127.0.0.1:8888/lab"), "http://127.0.0.1:8888/lab");
    assert.equal(safeHref("mailto:ann@example.com"), "mailto:ann@example.com");
    for (const bad of ["javascript:alert(1)", " javascript:x", "data:,x", "ftp://x", "/x", "x", "https://", "http://a b"]) {
      assert.equal(safeHref(bad), null, bad);
    }
  });
});

describe("markdown: the subset", () => {
  test("emphasis, code, strike, escapes", () => {
    const root = renderMarkdown(dom.document, "**bold** *it* _it2_ ~~gone~~ `a<b>` \\*not\\* snake_case_name");
    assertInert(root);
    assert.equal(root.querySelector("strong").textContent, "bold");
    assert.deepEqual([...root.querySelectorAll("em")].map((e) => e.textContent), ["it", "it2"]);
    assert.equal(root.querySelector("del").textContent, "gone");
    assert.equal(root.querySelector("code").textContent, "a<b>");
    assert.ok(root.textContent.includes("*not*"));
    assert.ok(root.textContent.includes("snake_case_name"));
  });

  test("links open in a new tab, safely; bare URLs become links without trailing punctuation", () => {
    const root = renderMarkdown(dom.document, "see [the **docs**](https://example.com/docs) or https://example.org/x.");
    assertInert(root);
    const links = [...root.querySelectorAll("a")];
    assert.deepEqual(
      links.map((a) => [a.getAttribute("href"), a.textContent]),
      [
        ["https://example.com/docs", "the docs"],
        ["https://example.org/x", "https://example.org/x"],
      ],
    );
    assert.ok(links[0].querySelector("strong"));
    assert.ok(root.textContent.endsWith("x."));
  });

  test("blocks: paragraphs, fenced code, quotes, lists, headings", () => {
    const text = "# Title\nline one\nline two\n\n```\n<script>x</script>\n**not bold**\n```\n> quoted\n- a\n- b\n3. c\n4. d";
    const root = renderMarkdown(dom.document, text);
    assertInert(root);
    assert.equal(root.querySelector(".lw-md-heading strong").textContent, "Title");
    assert.equal(root.querySelector("p:not(.lw-md-heading)").textContent, "line one\nline two");
    assert.equal(root.querySelector("pre code").textContent, "<script>x</script>\n**not bold**");
    assert.equal(root.querySelector("blockquote").textContent, "quoted");
    assert.deepEqual([...root.querySelectorAll("ul li")].map((li) => li.textContent), ["a", "b"]);
    assert.equal(root.querySelector("ol").getAttribute("start"), "3");
  });

  test("pathological input stays linear", () => {
    const text = `${"*".repeat(20_000)}${"_a".repeat(20_000)}${"[".repeat(10_000)}`;
    const start = performance.now();
    const root = renderMarkdown(dom.document, text);
    assert.ok(performance.now() - start < 2000);
    assert.equal(root.textContent.length, text.length);
  });
});

describe("helpers", () => {
  test("colorFor matches Python's color_for", () => {
    // from livewidget.widgets.chat.color_for
    assert.equal(colorFor("alice"), "#12a594");
    assert.equal(colorFor("bob"), "#46a758");
    assert.equal(colorFor("Zoë 🚀"), "#e5484d");
  });

  test("splitText keeps every chunk under the budget, on code points, losslessly", () => {
    const text = `${"é😀\"\\\n<".repeat(4000)}end`;
    const chunks = splitText(text, 1000);
    assert.ok(chunks.length > 5);
    assert.equal(chunks.join(""), text);
    for (const c of chunks) assert.ok(new TextEncoder().encode(JSON.stringify(c)).length - 2 <= 1000);
    assert.deepEqual(splitText("short"), ["short"]);
  });

  test("initials", () => {
    assert.equal(initials("Alice Liddell"), "AL");
    assert.equal(initials("bob"), "B");
    assert.equal(initials("jean-luc.picard"), "JP");
  });
});

describe("ChatStore", () => {
  test("members: kernels hidden, one entry per person, me first; joins and leaves update it", async () => {
    const s = await session();
    assert.deepEqual(
      s.store.members.map((m) => [m.id, m.name]),
      [
        ["alice", "Alice Liddell"],
        ["bob", "Bob"],
      ],
    );
    assert.equal(s.store.online, 2);
    s.channel.members.list.push({ id: "carol", info: { name: "Carol" } }, { id: "carol:kernel", info: { livewidget_kernel: true } });
    s.channel.emit("pusher:member_added", {});
    assert.equal(s.store.online, 3);
    s.channel.members.list = s.channel.members.list.filter((m) => m.id !== "bob");
    s.channel.emit("pusher:member_removed", {});
    assert.deepEqual(s.store.members.map((m) => m.id), ["alice", "carol"]);
  });

  test("own message shows at once, then is sent as a client event", async () => {
    const s = await session();
    s.sent.length = 0;
    const result = s.store.send("hello **world**");
    assert.equal(result.ok, true);
    const msg = s.store.messages.get(result.id);
    assert.equal(msg.text, "hello **world**");
    assert.equal(msg.state, "sent");
    assert.equal(s.sent.length, 1);
    assert.equal(s.sent[0].event, EVENTS.message);
    assert.deepEqual(s.sent[0].data.user, ALICE);
    assert.equal(s.sent[0].data.id, result.id);
    assert.deepEqual(s.store.send("   "), { ok: false, error: "empty message" });
  });

  test("a message sent while disconnected waits (with a note) and goes when connected", async () => {
    const s = await session();
    s.pusher.connection.setState("connecting");
    s.sent.length = 0;
    const { id } = s.store.send("later");
    assert.equal(s.store.messages.get(id).state, "queued");
    assert.equal(s.sent.length, 0);
    assert.match([...s.store.notes.values()][0].text, /1 message\(s\) will be sent/);
    s.pusher.connect();
    await settle();
    assert.equal(s.store.messages.get(id).state, "sent");
    assert.ok(s.sent.some((e) => e.data.id === id));
    assert.equal(s.store.notes.has("offline"), false);
  });

  test("the sender is who the server says (user_id), named from the signed presence info", async () => {
    const s = await session();
    s.deliver(EVENTS.message, piece("m1", "hi", { id: "alice", name: "Impostor", color: "#000000" }), "bob");
    const msg = s.store.messages.get("m1");
    assert.deepEqual([msg.userId, msg.name, msg.color, msg.via], ["bob", "Bob", "#0090ff", "browser"]);
  });

  test("a claimed name or id nested 5,000 deep does not lose the message or later ones", async () => {
    const s = await session();
    const deep = JSON.parse(`${"[".repeat(5000)}${"]".repeat(5000)}`);
    s.deliver(EVENTS.serverMessage, piece("p1", "deep name", { id: deep, name: deep }));
    s.deliver(EVENTS.message, piece("m1", "after", { id: "x", name: deep }), "bob");
    const p1 = s.store.messages.get("p1");
    assert.ok(p1, "the message is kept");
    assert.ok(p1.name.length <= 80 && p1.userId.length <= 128);
    assert.equal(s.store.messages.get("m1").name, "Bob");
  });

  test("messages from Python (REST chat-message) are shown the same, marked via python", async () => {
    const s = await session();
    s.deliver(EVENTS.serverMessage, piece("p1", "job **done**", { id: "ci", name: "CI bot", color: "#46a758" }));
    const msg = s.store.messages.get("p1");
    assert.deepEqual([msg.userId, msg.name, msg.via, msg.history], ["ci", "CI bot", "python", false]);
    s.deliver(EVENTS.serverMessage, piece("p1", "duplicate"));
    assert.equal(s.store.messages.get("p1").text, "job **done**");
    assert.equal(s.store.sorted.length, 1);
  });

  test("over the rate limit, messages queue (visible note) and all go out, none dropped", async () => {
    const s = await session();
    s.sent.length = 0;
    s.store.tokens = LIMITS.burst; // (the history request on joining took one)
    const ids = Array.from({ length: 25 }, (_, i) => s.store.send(`msg ${i}`).id);
    assert.equal(s.sent.length, LIMITS.burst);
    assert.match(s.store.notes.get("queue").text, /17 message parts queued: Pusher allows 10 client events a second/);
    assert.equal(ids.filter((id) => s.store.messages.get(id).state === "queued").length, 17);
    for (let i = 0; i < 40 && s.sent.length < 25; i++) s.timers.advance(130);
    assert.deepEqual(
      s.sent.map((e) => e.data.text),
      ids.map((_, i) => `msg ${i}`),
    );
    assert.equal(s.store.notes.has("queue"), false);
    assert.ok(ids.every((id) => s.store.messages.get(id).state === "sent"));
    // never more than `rate` a second after the burst, so never over Pusher's 10
    assert.ok(s.timers.now >= ((25 - LIMITS.burst) / LIMITS.rate) * 1000 - 200);
  });

  test("a 4301 rate-limit error from Pusher resends what was just sent, with a note", async () => {
    const s = await session();
    s.sent.length = 0;
    const { id } = s.store.send("one");
    s.store.notifyTyping();
    s.pusher.connection.emit("error", { type: "PusherError", data: { code: 4301, message: "Client event rejected" } });
    assert.equal(s.conn.error, "");
    assert.match(s.store.notes.get("limit").text, /limit of 10 client events a second was reached: sending 2 again/); // the message and the history request (not the typing)
    assert.equal(s.store.messages.get(id).state, "queued");
    s.timers.advance(1100);
    assert.equal(s.sent.filter((e) => e.data.id === id).length, 2);
    assert.equal(s.store.messages.get(id).state, "sent");
  });

  test("long messages go in parts under 10 KB each and are joined by the receiver", async () => {
    const s = await session();
    s.sent.length = 0;
    const text = `${"ü".repeat(15_000)} end`;
    const { id } = s.store.send(text);
    const parts = s.sent.filter((e) => e.data.id === id);
    assert.ok(parts.length >= 3);
    for (const p of parts) assert.ok(new TextEncoder().encode(JSON.stringify(p.data)).length < 10 * 1024);
    assert.match(s.store.notes.get("size").text, /sent in \d parts/);

    const r = await session();
    for (const p of [...parts].reverse()) r.deliver(EVENTS.message, { ...p.data, id: "big" }, "alice");
    assert.equal(r.store.messages.get("big").text, text);
  });

  test("a message too long even in parts is refused with a note, not dropped silently", async () => {
    const s = await session();
    const result = s.store.send("x".repeat(200_000));
    assert.equal(result.ok, false);
    assert.match(result.error, /too long to send/);
    assert.match(s.store.notes.get("size").text, /still in the box/);
    assert.equal(s.store.sorted.length, 0);
  });

  test("typing: throttled out, shown in, cleared by a message or after a while", async () => {
    const s = await session();
    s.sent.length = 0;
    s.store.notifyTyping();
    s.store.notifyTyping();
    assert.equal(s.sent.filter((e) => e.event === EVENTS.typing).length, 1);
    s.timers.advance(LIMITS.typingEveryMs);
    s.store.notifyTyping();
    assert.equal(s.sent.filter((e) => e.event === EVENTS.typing).length, 2);

    s.deliver(EVENTS.typing, { user: { id: "bob", name: "Bob" } }, "bob");
    assert.deepEqual(s.store.typingNames(), ["Bob"]);
    s.deliver(EVENTS.message, piece("m2", "done typing"), "bob");
    assert.deepEqual(s.store.typingNames(), []);
    s.deliver(EVENTS.typing, { user: { id: "bob" } }, "bob");
    s.timers.advance(LIMITS.typingShowMs + 50);
    assert.deepEqual(s.store.typingNames(), []);
  });

  test("history: asks on join; an answer from another member fills the log", async () => {
    const s = await session();
    const request = s.sent.find((e) => e.event === EVENTS.historyRequest);
    assert.ok(request, "a history request on joining a room with others in it");
    assert.deepEqual([request.data.since, request.data.limit], [0, LIMITS.historyLimit]);
    const pieces = Array.from({ length: 150 }, (_, i) => ({ ...piece(`h${i}`, `old ${i}`), t: T0 - 1e6 + i, via: "browser" }));
    s.deliver(EVENTS.history, { req: request.data.req, horizon: T0 - 2e6, seq: 0, done: false, pieces: pieces.slice(0, 100) }, "bob:kernel");
    s.deliver(EVENTS.history, { req: request.data.req, horizon: T0 - 2e6, seq: 1, done: true, pieces: pieces.slice(100) }, "bob:kernel");
    assert.equal(s.store.sorted.length, 150);
    assert.equal(s.store.sorted[0].text, "old 0");
    assert.ok(s.store.sorted.every((m) => m.history));
    assert.equal(s.store.horizon, T0 - 2e6);
    // answers to someone else's request are not taken
    s.deliver(EVENTS.history, { req: "other", horizon: 0, done: true, pieces: [piece("x", "not for us")] }, "bob");
    assert.equal(s.store.messages.has("x"), false);
  });

  test("history: answers a newcomer in chunks under 10 KB, unless someone who knows more answered", async () => {
    const s = await session();
    for (let i = 0; i < 120; i++) s.deliver(EVENTS.message, piece(`m${i}`, `message ${i} ${"x".repeat(100)}`, undefined, T0 + i), "bob");
    s.sent.length = 0;
    s.deliver(EVENTS.historyRequest, { req: "r1", since: 0, limit: 100 }, "carol");
    assert.equal(s.sent.length, 0, "browsers wait: kernels answer first");
    s.timers.advance(LIMITS.answerMinMs + LIMITS.answerSpreadMs);
    for (let i = 0; i < 10; i++) s.timers.advance(200);
    const answers = s.sent.filter((e) => e.event === EVENTS.history);
    assert.ok(answers.length >= 2);
    for (const a of answers) assert.ok(new TextEncoder().encode(JSON.stringify(a.data)).length < 10 * 1024);
    const ids = answers.flatMap((a) => a.data.pieces.map((p) => p.id));
    assert.equal(ids.length, 100);
    assert.equal(ids[0], "m20");
    assert.equal(answers.at(-1).data.done, true);

    // suppressed: a kernel that has been there longer answered first
    s.sent.length = 0;
    s.deliver(EVENTS.historyRequest, { req: "r2", since: 0 }, "dave");
    s.deliver(EVENTS.history, { req: "r2", horizon: T0 - 1e9, seq: 0, done: true, pieces: [] }, "bob:kernel");
    s.timers.advance(5000);
    assert.equal(s.sent.filter((e) => e.event === EVENTS.history).length, 0);
  });

  test("history cannot forge authorship: messages of others are shown as relayed by the answering member", async () => {
    const s = await session();
    const request = s.sent.find((e) => e.event === EVENTS.historyRequest);
    const forged = { ...piece("f1", "I resign", { id: "carol", name: "Carol" }), via: "browser" };
    const own = { ...piece("b1", "my own words"), via: "browser" };
    const byKernel = { ...piece("k1", "bob's, from his kernel"), via: "python" };
    const laundered = { ...piece("l1", "told to bob's kernel, claims bob"), via: "browser", relayed_by: "mallory" };
    s.deliver(EVENTS.history, { req: request.data.req, horizon: 0, seq: 0, done: false, pieces: [forged, own] }, "bob");
    s.deliver(EVENTS.history, { req: request.data.req, horizon: 0, seq: 1, done: true, pieces: [byKernel, laundered] }, "bob:kernel");
    const by = Object.fromEntries(s.store.sorted.map((m) => [m.id, [m.userId, m.relayedBy]]));
    assert.deepEqual(by, { f1: ["carol", "bob"], b1: ["bob", null], k1: ["bob", null], l1: ["bob", "bob:kernel"] });
    // passed on to a newcomer, relayed messages say so
    s.sent.length = 0;
    s.deliver(EVENTS.historyRequest, { req: "later", since: 0 }, "dave");
    s.timers.advance(LIMITS.answerMinMs + LIMITS.answerSpreadMs + 50);
    const given = s.sent.filter((e) => e.event === EVENTS.history).flatMap((e) => e.data.pieces);
    assert.deepEqual(Object.fromEntries(given.map((p) => [p.id, p.relayed_by ?? null])), { f1: "bob", b1: null, k1: null, l1: "bob:kernel" });
    const { root, frames } = view(s);
    frames.frame();
    const shown = root.querySelector('.lw-msg[data-id="f1"]');
    assert.equal(shown.getAttribute("data-relayed-by"), "bob");
    assert.match(shown.querySelector(".lw-msg-relayed").textContent, /relayed by Bob/);
    assert.equal(root.querySelector('.lw-msg[data-id="b1"] .lw-msg-relayed'), null);
    // a live client event without the stamped sender is not taken as anyone's
    s.deliver(EVENTS.message, piece("nouser", "who?"), undefined);
    assert.equal(s.store.messages.has("nouser"), false);
  });

  test("typing is shown for the stamped sender only, never for a claimed user", async () => {
    const s = await session();
    s.deliver(EVENTS.typing, { user: { id: "carol", name: "Carol" } }, undefined);
    assert.deepEqual(s.store.typingNames(), []);
    s.deliver(EVENTS.typing, { user: { id: "carol", name: "Carol" } }, "bob");
    assert.deepEqual(s.store.typingNames(), ["Bob"]);
  });

  test("multi-part messages are joined per sender: another member cannot complete or hijack them", async () => {
    const s = await session();
    const part = (i, text, user) => ({ ...piece("long", text, user), part: i, parts: 2 });
    s.deliver(EVENTS.message, part(0, "hello ", { id: "bob", name: "Bob" }), "bob");
    s.deliver(EVENTS.message, part(1, "FORGED", { id: "bob", name: "Bob" }), "mallory");
    assert.equal(s.store.messages.has("long"), false);
    s.deliver(EVENTS.message, part(1, "world", { id: "bob", name: "Bob" }), "bob");
    assert.equal(s.store.messages.get("long").text, "hello world");
    assert.equal(s.store.messages.get("long").userId, "bob");
  });

  test("incomplete multi-part messages expire and are capped per sender and in all", async () => {
    const s = await session();
    const first = (id, sender) => s.deliver(EVENTS.message, { ...piece(id, "x".repeat(100)), part: 0, parts: 12 }, sender);
    for (let i = 0; i < 50; i++) first(`m${i}`, "mallory");
    assert.equal(s.store.parts.size, LIMITS.pendingPerSender);
    for (let i = 0; i < 200; i++) first(`p${i}`, `member${i}`);
    assert.equal(s.store.parts.size, LIMITS.pendingTotal);
    s.timers.advance(LIMITS.partsTtlMs + 1000);
    first("late", "bob");
    assert.equal(s.store.parts.size, 1, "the expired ones are gone");
  });

  test("seeded from the kernel's _history; live duplicates are ignored", async () => {
    const line = (id, text, t, via = "browser") => ({
      t,
      channel: ROOM,
      event: "chat-message",
      data: { id, t, text, user: { id: "bob", name: "Bob" }, via },
      user_id: "bob",
    });
    const s = await session({ history: historyBytes([line("a", "first", T0 - 20), line("b", "from python", T0 - 10, "python")]) });
    assert.deepEqual(s.store.sorted.map((m) => [m.id, m.via, m.history]), [
      ["a", "browser", true],
      ["b", "python", true],
    ]);
    s.deliver(EVENTS.message, piece("a", "first"), "bob");
    assert.equal(s.store.sorted.length, 2);
  });
});

describe("ChatView", () => {
  test("paints members, count, messages (Markdown, never HTML), typing and notes", async () => {
    const s = await session();
    const { root, frames, v } = view(s);
    assert.equal(root.querySelector(".lw-member-count").textContent, "2");
    assert.deepEqual(
      [...root.querySelectorAll(".lw-member")].map((m) => m.getAttribute("data-user-id")),
      ["alice", "bob"],
    );
    assert.ok(root.querySelector('.lw-member[data-user-id="alice"] .lw-you'));
    assert.equal(root.querySelector(".lw-chat-title").textContent, "# team");

    const payload = '<img src=x onerror="window.__lw_xss=1"> [x](javascript:alert(1)) **ok**';
    s.deliver(EVENTS.message, piece("m1", payload), "bob");
    s.deliver(EVENTS.message, piece("m2", "second", undefined, T0 + 2), "bob");
    s.deliver(EVENTS.typing, { user: { id: "bob" } }, "bob");
    frames.frame();
    const msgs = [...root.querySelectorAll(".lw-msg")];
    assert.deepEqual(msgs.map((m) => m.getAttribute("data-id")), ["m1", "m2"]);
    assert.equal(msgs[0].querySelector(".lw-msg-name").textContent, "Bob");
    assert.match(msgs[0].querySelector(".lw-msg-time").textContent, /^\d\d:\d\d$/);
    assert.ok(msgs[1].classList.contains("lw-cont"), "grouped with the previous one");
    const text = msgs[0].querySelector(".lw-msg-text");
    assertInert(text);
    assert.equal(text.querySelectorAll("img, a").length, 0);
    assert.equal(text.querySelector("strong").textContent, "ok");
    assert.ok(text.textContent.includes('<img src=x onerror="window.__lw_xss=1">'));
    assert.equal(root.querySelector(".lw-typing").textContent, "Bob is typing…");
    assert.equal(root.querySelector(".lw-chat-empty").hidden, true);

    // the composer: Enter sends, the text shows at once; shortcuts do not reach the notebook
    const input = root.querySelector(".lw-chat-input");
    let reachedNotebook = false;
    root.parentElement.addEventListener("keydown", () => {
      reachedNotebook = true;
    });
    input.value = "from the box";
    input.dispatchEvent(new dom.window.KeyboardEvent("keydown", { key: "Enter", bubbles: true, cancelable: true }));
    assert.equal(reachedNotebook, false);
    assert.equal(input.value, "");
    frames.frame();
    const own = root.querySelector(".lw-msg.lw-own");
    assert.equal(own.querySelector(".lw-msg-text").textContent, "from the box");
    assert.equal(own.getAttribute("data-state"), "sent");

    s.store.send("x".repeat(200_000));
    frames.frame();
    assert.equal(root.querySelector(".lw-chat-note").hidden, false);
    assert.match(root.querySelector(".lw-chat-note").textContent, /too long/);
    v.destroy();
    assert.equal(s.model.listenerCount() > 0, true); // the store's own listeners stay
    assert.equal(root.isConnected, false);
  });

  test("createWidget dispatches _kind chat; cleanup disconnects", async () => {
    const model = new FakeModel({ _kind: "chat", channels: [ROOM], room: "team", me: ALICE, _auth: {} });
    const widget = createWidget({ Pusher: FakePusher, fetch: async () => jsonResponse(500, {}) });
    const cleanup = widget.initialize({ model: model.proxy() });
    const el = dom.container();
    const unrender = widget.render({ model: model.proxy(), el });
    assert.ok(el.querySelector(".lw-chat .lw-chat-input"));
    unrender();
    assert.equal(el.querySelector(".lw-chat"), null);
    cleanup();
    assert.equal(FakePusher.last().disconnected, true);
  });
});

describe("channel history (issue 13)", () => {
  test("messages replayed by the server's rewind are marked history; past requests are not answered", async () => {
    const s = await session();
    const pos = (serial) => ({ serial, stream_id: "s1" });
    s.pusher.deliverRaw(ROOM, EVENTS.message, piece("old", "before"), { user_id: "bob", ...pos(1) });
    s.pusher.deliverRaw(ROOM, EVENTS.historyRequest, { req: "r-old", since: 0, limit: 10 }, { user_id: "bob", ...pos(2) });
    s.pusher.deliver(ROOM, "pusher:rewind_complete", { complete: true, historical_count: 2, ...pos(2) });
    s.pusher.deliverRaw(ROOM, EVENTS.message, piece("new", "now"), { user_id: "bob", ...pos(3) });
    s.run();
    s.timers.advance(5_000);
    s.run();
    assert.equal(s.store.messages.get("old").history, true);
    assert.equal(s.store.messages.get("new").history, false);
    assert.equal(s.sent.filter((m) => m.event === EVENTS.history && m.data.req === "r-old").length, 0);
  });
});
