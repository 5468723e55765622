// (d) User authentication (reference §1.7): pusher.signin(), then a server send_to_user reaches
// pusher.user.bind(). The Python side triggers it after "@ready signed_in".
import { client, main, obs, once, ready, recordErrors, step, target } from './lib.mjs';

main(async () => {
  const id = `lw-user-${target.run}`;
  const pusher = client({ id, info: { name: 'Carol' } });
  recordErrors(pusher, 'carol');
  const userChannel = `#server-to-user-${id}`;
  obs.signin_errors = [];
  pusher.user.bind('pusher:signin_error', (e) => obs.signin_errors.push(e));
  const userSubscribed = once(
    pusher.connection,
    'message',
    (m) => m.event === 'pusher_internal:subscription_succeeded' && m.channel === userChannel,
  );
  const greeted = once(pusher.user, 'greet');
  pusher.signin();
  await pusher.user.signinDonePromise;
  step('signin done');
  obs.user_data = pusher.user.user_data;
  await userSubscribed;
  step('user channel subscribed');
  ready('signed_in', { user_id: id });
  obs.greet = await greeted;
  step('greeted');
});
