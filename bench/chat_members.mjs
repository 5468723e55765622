// Chat room members for bench/bench_chat.py: N pusher-js clients (Node) on one presence channel.
//
// Every member joins `presence-chat-<room>` as its own user; messages are client events
// (`client-chat-message`, the Chat wire format, ~200-byte text) sent round-robin by the members, each
// member sending at most 1 a second (Pusher allows 10), and every other member records when it got
// each one. All clients are in this process, so send and receive times are on one clock
// (performance.now()). Prints one JSON object: {members, messages, samples, latencies_ms: [...]}.
//
// Environment: LW_HOST, LW_PORT, LW_KEY, LW_SECRET (signs the presence channel here, as an app
// server would; never sent), LW_MEMBERS (50), LW_MESSAGES (500), LW_RATE (messages/s, 40).

import { createHmac } from "node:crypto";
import { createRequire } from "node:module";

const require = createRequire(new URL("../js/package.json", import.meta.url));
const Pusher = require("pusher-js");

const env = process.env;
const N = Number(env.LW_MEMBERS || 50);
const MESSAGES = Number(env.LW_MESSAGES || 500);
const RATE = Number(env.LW_RATE || 40);
const WARMUP = 20;
const channelName = `presence-chat-bench-${process.pid}`;
const sign = (text) => `${env.LW_KEY}:${createHmac("sha256", env.LW_SECRET).update(text).digest("hex")}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function member(i) {
  const user = { id: `user${i}`, info: { name: `User ${i}`, color: "#0090ff" } };
  const pusher = new Pusher(env.LW_KEY, {
    cluster: "mt1",
    wsHost: env.LW_HOST,
    wsPort: Number(env.LW_PORT),
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName: name }, cb) => {
        const data = JSON.stringify({ user_id: user.id, user_info: user.info });
        cb(null, { auth: sign(`${socketId}:${name}:${data}`), channel_data: data });
      },
    },
  });
  const channel = pusher.subscribe(channelName);
  return { i, user, pusher, channel };
}

const deadline = setTimeout(() => {
  process.stderr.write("chat_members: deadline\n");
  process.exit(2);
}, 120_000);

const members = Array.from({ length: N }, (_, i) => member(i));
await Promise.all(
  members.map(
    (m) =>
      new Promise((resolve, reject) => {
        m.channel.bind("pusher:subscription_succeeded", resolve);
        m.channel.bind("pusher:subscription_error", reject);
      }),
  ),
);
// everyone sees everyone
while (members.some((m) => m.channel.members.count !== N)) await sleep(20);

const sentAt = new Map(); // message id -> performance.now() at trigger
const latencies = [];
const expected = new Map(); // id -> receivers still to hear it
let errors = 0;
for (const m of members) {
  m.pusher.connection.bind("error", () => errors++);
  m.channel.bind("client-chat-message", (data) => {
    const t = performance.now();
    const start = sentAt.get(data.id);
    if (start === undefined) return;
    if (!data.warmup) latencies.push(t - start);
    expected.set(data.id, expected.get(data.id) - 1);
  });
}

const text = "Training run 42 finished: loss 0.0213, accuracy 98.7 %. **Nice** — see the dashboard for the curves. ".repeat(2);
const total = WARMUP + MESSAGES;
for (let k = 0; k < total; k++) {
  const sender = members[k % N];
  const id = `m${k}`;
  expected.set(id, N - 1);
  sentAt.set(id, performance.now());
  sender.channel.trigger("client-chat-message", {
    id,
    t: Date.now(),
    text,
    user: { id: sender.user.id, name: sender.user.info.name },
    warmup: k < WARMUP || undefined,
  });
  await sleep(1000 / RATE);
}
const waitUntil = performance.now() + 10_000;
while ([...expected.values()].some((n) => n > 0) && performance.now() < waitUntil) await sleep(20);
const missing = [...expected.values()].reduce((a, n) => a + n, 0);
clearTimeout(deadline);
process.stdout.write(
  `${JSON.stringify({ members: N, messages: MESSAGES, rate: RATE, samples: latencies.length, missing, errors, latencies_ms: latencies })}\n`,
  () => {
    for (const m of members) m.pusher.disconnect();
    process.exit(0);
  },
);
