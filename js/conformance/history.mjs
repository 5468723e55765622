// (h) Channel history with stock pusher-js plus a ten-line resume shim (what livewidget's own front end
// does): positions on delivered events ("serial", "stream_id"), rewind on first subscribe, and recovery
// from the last position when pusher-js resubscribes by itself after the server restarts, and after
// an explicit disconnect/connect. pusher-js itself is unmodified; the shim only adds the optional
// `rewind` field to the pusher:subscribe it sends.
//
// Python side: after "@ready channel" publishes 5 events, then writes "go" on stdin; after
// "@ready rewound" 2 more (live); after "@ready live" restarts the server (same port and history folder)
// and publishes 2 more; after "@ready recovered" (the client is offline) 3 more, then "go" again.
import { channelName, client, main, obs, once, ready, recordErrors, step } from './lib.mjs';

// pusher-js decodes each frame into {event, channel, data, user_id} before its listeners see it, so the
// position fields ("serial", "stream_id") are invisible to stock code; the shim reads the raw frames.
function rawFrames(pusher, onFrame) {
  let bound = null;
  const attach = () => {
    const transport = pusher.connection.connection && pusher.connection.connection.transport;
    if (transport && transport !== bound) {
      bound = transport;
      transport.bind('message', (ev) => onFrame(JSON.parse(ev.data)));
    }
  };
  pusher.connection.bind('connected', attach);
  attach();
}

const parse = (d) => (typeof d === 'string' ? JSON.parse(d) : d);

/** Remember each channel's last position; resubscribe from it (else rewind the last `initial`). */
function resumeShim(pusher, initial, onFrame) {
  const positions = {};
  rawFrames(pusher, (m) => {
    if (m.channel && typeof m.serial === 'number' && typeof m.stream_id === 'string') {
      positions[m.channel] = { serial: m.serial, stream_id: m.stream_id };
    } else if (m.event === 'pusher:rewind_complete') {
      const d = parse(m.data);
      const known = positions[m.channel];
      if (d.stream_id && (!known || known.stream_id !== d.stream_id)) {
        positions[m.channel] = { serial: d.serial, stream_id: d.stream_id }; // a new stream: go on from there
      }
    }
    onFrame(m);
  });
  const send = pusher.send_event.bind(pusher);
  pusher.send_event = (name, data, channel) => {
    if (name === 'pusher:subscribe' && data && data.channel) {
      data = { ...data, rewind: positions[data.channel] || initial };
    }
    return send(name, data, channel);
  };
  return positions;
}

/** The next line the Python side writes on stdin. */
const go = () => new Promise((resolve) => process.stdin.once('data', resolve));

main(async () => {
  const name = channelName('private-', 'lw-hist');
  obs.channel = name;
  const published = go();
  ready('channel', { channel: name });
  await published;
  const pusher = client(null, { activityTimeout: 60000 });
  recordErrors(pusher, 'client');
  obs.received = []; // [serial, stream_id, data] of every event of the channel, in order (raw frames)
  obs.rewinds = []; // data of each pusher:rewind_complete
  const frames = [];
  resumeShim(pusher, { count: 3 }, (m) => {
    if (m.channel !== name) return;
    if (m.event === 'e') obs.received.push([m.serial, m.stream_id, parse(m.data)]);
    if (m.event === 'pusher:rewind_complete') obs.rewinds.push(parse(m.data));
    [...frames].forEach((f) => f());
  });
  const whenRaw = (test) =>
    new Promise((resolve) => {
      const check = () => {
        if (test()) {
          frames.splice(frames.indexOf(check), 1);
          resolve();
        }
      };
      frames.push(check);
    });
  const seenRewinds = (n) => (obs.rewinds.length >= n ? Promise.resolve() : whenRaw(() => obs.rewinds.length >= n));
  const untilSerialCount = (n) =>
    obs.received.length >= n ? Promise.resolve() : whenRaw(() => obs.received.length >= n);
  // the channel's own binders see what stock pusher-js users would see
  const channel = pusher.subscribe(name);
  obs.bound = [];
  channel.bind('e', (data) => obs.bound.push(data));
  await once(channel, 'pusher:subscription_succeeded');
  await seenRewinds(1);
  step('rewound');
  ready('rewound', { channel: name });
  await untilSerialCount(5);
  ready('live');
  // The server restarts: pusher-js reconnects and resubscribes by itself; the shim adds the position.
  await once(pusher.connection, 'state_change', ({ current }) => current !== 'connected');
  step('connection lost');
  await seenRewinds(2);
  await untilSerialCount(7);
  step('recovered');
  pusher.disconnect();
  const missed = go();
  ready('recovered');
  await missed;
  pusher.connect();
  await seenRewinds(3);
  await untilSerialCount(10);
  obs.final_state = pusher.connection.state;
});
