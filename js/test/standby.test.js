// The standby relay with the real pusher-js (issue 12): a confirmed direct route fails while the kernel is
// busy; the view shows the kept standby rows pusher-js missed, then the live relay, and goes back to its
// route when it returns, with no event twice. The server is a minimal Pusher-protocol endpoint on
// 127.0.0.1 (the `ws` package): just enough to establish, subscribe, send positioned events and break.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import Pusher from "pusher-js";
import { WebSocketServer } from "ws";

import { Connection, relayHub } from "../src/connection.js";
import { FakeModel } from "./helpers.js";

/** A Pusher-protocol endpoint: every socket subscribes to what it asks; `refuse` drops new ones. */
class MiniServer {
  constructor() {
    this.sockets = new Set();
    this.refuse = false;
    this.subscribes = 0;
    this.wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    this.wss.on("connection", (socket) => {
      if (this.refuse) {
        socket.terminate();
        return;
      }
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
      socket.on("message", (raw) => {
        const msg = JSON.parse(String(raw));
        if (msg.event === "pusher:subscribe") {
          this.subscribes += 1;
          socket.send(JSON.stringify({ event: "pusher_internal:subscription_succeeded", channel: msg.data.channel, data: "{}" }));
        } else if (msg.event === "pusher:ping") {
          socket.send(JSON.stringify({ event: "pusher:pong", data: "{}" }));
        }
      });
      const data = JSON.stringify({ socket_id: "123.456", activity_timeout: 120 });
      socket.send(JSON.stringify({ event: "pusher:connection_established", data }));
    });
  }

  get port() {
    return this.wss.address().port;
  }

  /** An event with its position, as the embedded server frames it (position last). */
  send(n) {
    const frame = JSON.stringify({ event: "tick", channel: "news", data: JSON.stringify({ n }), serial: n, stream_id: "s1" });
    for (const socket of this.sockets) socket.send(frame);
  }

  /** The route fails: every socket dropped, every new one refused. */
  break() {
    this.refuse = true;
    for (const socket of this.sockets) socket.terminate();
  }

  close() {
    for (const socket of this.sockets) socket.terminate();
    return new Promise((resolve) => this.wss.close(resolve));
  }
}

/** Wait (real time) until `predicate()`; fail after `ms`. */
async function until(predicate, ms, what) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A relay message as the kernel sends it (livewidget/_relay.py): the parts in one binary buffer. */
function relayMessage(seq, parts) {
  const bytes = new TextEncoder().encode(JSON.stringify(parts));
  return [{ type: "relay", seq, ids: parts.map((p) => p.id) }, [new DataView(bytes.buffer)]];
}

const rowsOf = (...ns) => ns.map((n) => [1000 + n, "news", "tick", JSON.stringify({ n }), null, n, "s1"]);
const CONNECTED = { status: "connected", error: "", channels: { news: true }, members: {} };

describe("standby relay with the real pusher-js", () => {
  let server;
  before(async () => {
    server = new MiniServer();
    await new Promise((resolve) => server.wss.on("listening", resolve));
  });
  after(() => server.close());

  test("direct fails during a cell: kept rows, then live relay; back on direct; every event once", async () => {
    const scope = {};
    const model = new FakeModel({
      route: "",
      channels: ["news"],
      _connection: {
        key: "k",
        cluster: "mt1",
        forceTLS: false,
        wsHost: "127.0.0.1",
        wsPort: server.port,
        enabledTransports: ["ws"],
        route: "auto",
        relayId: "r1",
      },
    });
    const conn = new Connection(model, {
      Pusher,
      scope,
      location: { hostname: "127.0.0.1", port: "8888", protocol: "http:" },
      document: null,
      fallbackAfterMs: 300,
    }).start();
    const shown = [];
    conn.on("event", (row) => shown.push(row.data.n));
    try {
      await until(() => conn.route === "direct" && conn.channels.get("news")?.state === "subscribed", 5000, "direct");
      server.send(1);
      server.send(2);
      await until(() => shown.length === 2, 3000, "events through pusher-js");
      // the kernel is busy: it relays on standby what pusher-js shows too; kept only if not shown yet
      model.receive(...relayMessage(1, [{ id: "r1", rows: rowsOf(1, 2, 3), standby: true, state: CONNECTED }]));
      assert.deepEqual(shown, [1, 2]);
      assert.equal(conn.standbyRows, 1);

      server.break();
      await until(() => conn.pusher.connection.state !== "connected", 3000, "pusher-js to lose its socket");
      model.receive(...relayMessage(2, [{ id: "r1", rows: rowsOf(4, 5), standby: true }]));
      assert.equal(conn.route, "direct", "not yet: a short drop is no failure");
      await until(() => conn.route === "relay", 3000, "the fallback");
      assert.deepEqual(shown, [1, 2, 3, 4, 5], "the kept rows pusher-js did not show");
      assert.equal(conn.state, "connected");
      assert.deepEqual(model.sent, [{ type: "relay", on: true }]);
      model.receive(...relayMessage(3, [{ id: "r1", rows: rowsOf(6), standby: true }]));
      assert.deepEqual(shown, [1, 2, 3, 4, 5, 6], "live on the relay");

      server.refuse = false; // the route is back: pusher-js reconnects and resubscribes by itself
      await until(() => conn.route === "direct", 20_000, "the route back");
      assert.equal(relayHub(scope).listeners.get("r1").size, 1, "the relay dropped, standby kept");
      server.send(6); // shown from the relay already
      server.send(7);
      await until(() => shown.length >= 7, 3000, "events through pusher-js again");
      assert.deepEqual(shown, [1, 2, 3, 4, 5, 6, 7]);
    } finally {
      conn.close();
    }
    assert.equal(relayHub(scope).listeners.size, 0);
  });
});
