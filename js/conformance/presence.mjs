// (b) Presence: two users see each other through members; member_added / member_removed; a user with
// two connections counts once (reference §1.5).
import { channelName, client, main, obs, once, recordErrors, sleep, step, subscribed } from './lib.mjs';

const QUIET_MS = Number(process.env.LW_QUIET_MS || 500);

function view(channel) {
  const members = {};
  channel.members.each((m) => {
    members[m.id] = m.info === undefined ? '<undefined>' : m.info;
  });
  return { count: channel.members.count, me: channel.members.me, members };
}

main(async () => {
  const name = channelName('presence-', 'lw-room');
  const aliceInfo = { name: 'Alice', tags: ['x', 1] };
  const bobInfo = { name: 'Bob', n: 2 };

  const alice = client({ id: 'alice', info: aliceInfo });
  recordErrors(alice, 'alice');
  const pa = alice.subscribe(name);
  obs.alice_events = [];
  pa.bind('pusher:member_added', (m) => obs.alice_events.push(['added', m.id, m.info]));
  pa.bind('pusher:member_removed', (m) => obs.alice_events.push(['removed', m.id, m.info]));
  await subscribed(pa);
  step('alice subscribed');
  obs.alice_alone = view(pa);

  const bob = client({ id: 'bob', info: bobInfo });
  recordErrors(bob, 'bob');
  const added = once(pa, 'pusher:member_added');
  const pb = bob.subscribe(name);
  await subscribed(pb);
  step('bob subscribed');
  obs.bob_view = view(pb);
  obs.bob_sees_alice_info = pb.members.get('alice') && pb.members.get('alice').info;
  await added;
  step('alice saw bob');
  obs.alice_with_bob = view(pa);

  // A second connection of the same user: no member_added for it, members unchanged.
  const bob2 = client({ id: 'bob', info: bobInfo });
  recordErrors(bob2, 'bob2');
  const pb2 = bob2.subscribe(name);
  await subscribed(pb2);
  step('bob2 subscribed');
  obs.bob2_view = view(pb2);
  await sleep(QUIET_MS);
  obs.alice_events_after_bob2_joined = obs.alice_events.length;

  // bob's first connection goes away: bob is still a member through bob2.
  bob.disconnect();
  await sleep(QUIET_MS);
  step('bob disconnected');
  obs.alice_events_after_bob_left = obs.alice_events.length;
  obs.alice_count_after_bob_left = pa.members.count;

  // bob's last connection leaves the channel: member_removed.
  const removed = once(pa, 'pusher:member_removed');
  bob2.unsubscribe(name);
  await removed;
  step('alice saw bob leave');
  obs.alice_after_bob2_left = view(pa);
  obs.alice_events_final = obs.alice_events;
});
