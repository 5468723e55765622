// Shared helpers for the pusher-js conformance scenarios (driven by tests/conformance/test_pusher_js.py).
//
// Configuration comes from the environment:
//   LW_HOST, LW_PORT, LW_KEY   where the server under test listens, and the app key
//   LW_SECRET                  the app secret: used here only to sign channel/user auth, as an app
//                              server would (reference §1.13), never sent to the server
//   LW_RUN                     a unique suffix for channel names (the target may be shared)
//   LW_TIMEOUT_MS              the scenario's own deadline (default 20000)
//   LW_DEBUG=1                 pusher-js logging on stderr
//
// Line protocol on stdout (one line each):
//   @ready <name> <json>       a point where the Python side acts (restart the server, trigger...)
//   <json object>              the observations, printed once, last; then the process exits
// Exit status: 0 when the scenario ran to its end, 2 on its own deadline, 1 on a crash; the
// observations are printed in every case, with "timed_out" or "crashed" set.

import { createHmac } from 'node:crypto';
import Pusher from 'pusher-js';

const env = process.env;

export const target = {
  host: env.LW_HOST || '127.0.0.1',
  port: Number(env.LW_PORT || 0),
  key: env.LW_KEY || '',
  secret: env.LW_SECRET || '',
  run: env.LW_RUN || String(process.pid),
  timeoutMs: Number(env.LW_TIMEOUT_MS || 20000),
};

if (!target.port || !target.key || !target.secret) {
  process.stderr.write('conformance: set LW_HOST, LW_PORT, LW_KEY and LW_SECRET\n');
  process.exit(64);
}

if (env.LW_DEBUG) {
  Pusher.log = (...args) => process.stderr.write(`[pusher-js] ${args.join(' ')}\n`);
}

/** A fresh channel name for this run: `${prefix}-${name}-${run}`. */
export function channelName(prefix, name) {
  return `${prefix}${name}-${target.run}`;
}

/** `<key>:<hex HMAC-SHA256(secret, text)>` (reference §1.13). */
export function sign(text) {
  return `${target.key}:${createHmac('sha256', target.secret).update(text).digest('hex')}`;
}

/**
 * A pusher-js client configured for a self-hosted server.
 * `user` ({id, info}) is used for presence channel_data and for signin user_data.
 */
export function client(user = null, extra = {}) {
  const channelAuthorization = {
    customHandler: ({ socketId, channelName: name }, callback) => {
      if (name.startsWith('presence-')) {
        if (!user) return callback(new Error('no user for a presence channel'), null);
        const channelData = JSON.stringify({ user_id: user.id, user_info: user.info });
        callback(null, { auth: sign(`${socketId}:${name}:${channelData}`), channel_data: channelData });
      } else {
        callback(null, { auth: sign(`${socketId}:${name}`) });
      }
    },
  };
  const userAuthentication = {
    customHandler: ({ socketId }, callback) => {
      if (!user) return callback(new Error('no user to sign in'), null);
      const userData = JSON.stringify({ id: user.id, user_info: user.info });
      callback(null, { auth: sign(`${socketId}::user::${userData}`), user_data: userData });
    },
  };
  const pusher = new Pusher(target.key, {
    cluster: 'mt1',
    wsHost: target.host,
    wsPort: target.port,
    wssPort: target.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization,
    userAuthentication,
    ...extra,
  });
  clients.push(pusher);
  return pusher;
}

const clients = [];

/** The observations object of this scenario; `steps` records how far it got. */
export const obs = { steps: [], errors: [] };

let finished = false;

function emit({ exit, ...extra }) {
  if (finished) return;
  finished = true;
  const text = JSON.stringify({ ...obs, ...extra }); // before disconnecting changes what is observed
  for (const p of clients) {
    try {
      p.disconnect();
    } catch {
      // already gone
    }
  }
  process.stdout.write(`${text}\n`, () => process.exit(exit));
}

/** Print the observations and exit 0. */
export function finish() {
  emit({ exit: 0 });
}

/** Record that a step was reached (shows where a timed-out scenario got stuck). */
export function step(name) {
  obs.steps.push(name);
}

/** Tell the Python side to act. */
export function ready(name, data = {}) {
  step(`ready:${name}`);
  process.stdout.write(`@ready ${name} ${JSON.stringify(data)}\n`);
}

/** Record connection errors of a client under `label`. */
export function recordErrors(pusher, label) {
  pusher.connection.bind('error', (err) => {
    obs.errors.push({ client: label, error: describe(err) });
  });
}

function describe(value) {
  try {
    return JSON.parse(JSON.stringify(value, (k, v) => (v instanceof Error ? String(v) : v)));
  } catch {
    return String(value);
  }
}

/** Resolve with the first `event` emitted by `emitter` (optionally matching `pred`). */
export function once(emitter, event, pred = () => true) {
  return new Promise((resolve) => {
    const handler = (...args) => {
      if (!pred(...args)) return;
      emitter.unbind(event, handler);
      resolve(args[0]);
    };
    emitter.bind(event, handler);
  });
}

/** Resolve once `pusher` has sent its own connection into the state `state`. */
export function whenState(pusher, state) {
  if (pusher.connection.state === state) return Promise.resolve();
  return once(pusher.connection, 'state_change', ({ current }) => current === state);
}

/** Resolve with the data of a channel's next `pusher:subscription_succeeded`. */
export function subscribed(channel) {
  return once(channel, 'pusher:subscription_succeeded');
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Run `scenario` under the deadline; always print observations and exit. */
export function main(scenario) {
  setTimeout(() => emit({ timed_out: true, exit: 2 }), target.timeoutMs);
  process.on('uncaughtException', (err) => {
    obs.crashed = String(err && err.stack ? err.stack : err);
    emit({ exit: 1 });
  });
  // If the Python side goes away, do not linger.
  process.stdin.on('end', () => emit({ stdin_closed: true, exit: 3 }));
  process.stdin.resume();
  Promise.resolve()
    .then(scenario)
    .then(finish, (err) => {
      obs.crashed = String(err && err.stack ? err.stack : err);
      emit({ exit: 1 });
    });
}
