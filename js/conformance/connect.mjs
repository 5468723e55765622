// (a) Connect: the handshake pusher-js accepts, the socket_id it gets, a public subscription, a clean close.
import { channelName, client, finish, main, obs, recordErrors, step, subscribed, whenState } from './lib.mjs';

main(async () => {
  const started = Date.now();
  const pusher = client();
  recordErrors(pusher, 'a');
  obs.states = [pusher.connection.state];
  pusher.connection.bind('state_change', ({ current }) => obs.states.push(current));
  await whenState(pusher, 'connected');
  step('connected');
  obs.connect_ms = Date.now() - started;
  obs.state = pusher.connection.state;
  obs.socket_id = pusher.connection.socket_id;
  obs.socket_id_ok = /^\d+\.\d+$/.test(obs.socket_id);
  obs.activity_timeout_ms = pusher.connection.activityTimeout;

  const name = channelName('', 'lw-connect');
  const channel = pusher.subscribe(name);
  const data = await subscribed(channel);
  step('subscribed');
  obs.public_channel = name;
  obs.public_subscribed = channel.subscribed;
  obs.public_succeeded_data = data === undefined ? '<undefined>' : data;

  pusher.disconnect();
  await whenState(pusher, 'disconnected');
  step('disconnected');
  obs.final_state = pusher.connection.state;
  finish();
});
