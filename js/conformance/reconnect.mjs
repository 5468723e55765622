// (e) Automatic reconnection: the Python side restarts the server on the same port after
// "@ready subscribed"; pusher-js must reconnect by itself, re-authorize and resubscribe its private
// channel and sign in again; then events triggered after the restart ("@ready resubscribed") arrive.
import { channelName, client, main, obs, once, ready, recordErrors, step, target } from './lib.mjs';

main(async () => {
  const t0 = Date.now();
  const id = `lw-reco-${target.run}`;
  const pusher = client({ id, info: { name: 'Dan' } });
  recordErrors(pusher, 'dan');
  obs.states = [[pusher.connection.state, Date.now() - t0]];
  pusher.connection.bind('state_change', ({ current }) => obs.states.push([current, Date.now() - t0]));
  // what the server says before it goes (Soketi, Reverb and Sockudo send pusher:error 4200 first)
  obs.pusher_errors = [];
  pusher.connection.bind('message', (m) => m.event === 'pusher:error' && obs.pusher_errors.push(m.data));
  const name = channelName('private-', 'lw-reco');
  const userChannel = `#server-to-user-${id}`;
  const succeeded = (ch) => (m) => m.event === 'pusher_internal:subscription_succeeded' && m.channel === ch;

  const channel = pusher.subscribe(name);
  let userSub = once(pusher.connection, 'message', succeeded(userChannel));
  pusher.signin();
  await Promise.all([once(channel, 'pusher:subscription_succeeded'), userSub]);
  obs.first_socket_id = pusher.connection.socket_id;
  ready('subscribed', { socket_id: obs.first_socket_id });

  // The server goes away: pusher-js leaves 'connected' and comes back on its own.
  await once(pusher.connection, 'state_change', ({ current }) => current !== 'connected');
  const lost = Date.now();
  step('connection lost');
  userSub = once(pusher.connection, 'message', succeeded(userChannel));
  await Promise.all([once(channel, 'pusher:subscription_succeeded'), userSub]);
  obs.resubscribed_after_ms = Date.now() - lost;
  obs.second_socket_id = pusher.connection.socket_id;
  obs.channel_subscribed = channel.subscribed;
  const channelEvent = once(channel, 'after-restart');
  const userEvent = once(pusher.user, 'after-restart-user');
  ready('resubscribed', { socket_id: obs.second_socket_id, channel: name, user_id: id });

  obs.channel_event = await channelEvent;
  step('channel event');
  obs.user_event = await userEvent;
  step('user event');
  obs.final_state = pusher.connection.state;
});
