// (c) Client events (reference §1.6): delivered to the other subscribers, never echoed; on presence the
// receiver gets the sender's user_id as metadata; refused on public channels.
import { channelName, client, main, obs, once, recordErrors, sleep, step, subscribed } from './lib.mjs';

const QUIET_MS = Number(process.env.LW_QUIET_MS || 500);

function recorder(channel, event, into) {
  channel.bind(event, (data, metadata) => into.push({ data, metadata: metadata ?? '<undefined>' }));
}

main(async () => {
  // -- private channel
  const a = client({ id: 'ann', info: { name: 'Ann' } });
  const b = client({ id: 'ben', info: { name: 'Ben' } });
  recordErrors(a, 'a');
  recordErrors(b, 'b');
  const priv = channelName('private-', 'lw-chat');
  const pa = a.subscribe(priv);
  const pb = b.subscribe(priv);
  await Promise.all([subscribed(pa), subscribed(pb)]);
  step('private subscribed');
  obs.private = { a_got: [], b_got: [] };
  recorder(pa, 'client-x', obs.private.a_got);
  recorder(pb, 'client-x', obs.private.b_got);
  const bGot = once(pb, 'client-x');
  obs.private.trigger_returned = pa.trigger('client-x', { text: 'hi', n: 1 });
  await bGot;
  step('private delivered');
  const aGot = once(pa, 'client-x');
  pb.trigger('client-x', 'plain text');
  await aGot;
  step('private reply delivered');
  await sleep(QUIET_MS);

  // -- presence channel
  const pres = channelName('presence-', 'lw-chat');
  const qa = a.subscribe(pres);
  const qb = b.subscribe(pres);
  await Promise.all([subscribed(qa), subscribed(qb)]);
  step('presence subscribed');
  obs.presence = { a_got: [], b_got: [] };
  recorder(qa, 'client-typing', obs.presence.a_got);
  recorder(qb, 'client-typing', obs.presence.b_got);
  const typing = once(qb, 'client-typing');
  obs.presence.trigger_returned = qa.trigger('client-typing', { typing: true });
  await typing;
  step('presence delivered');
  await sleep(QUIET_MS);

  // -- public channel: the server must refuse (pusher:error), nothing delivered
  const pub = channelName('', 'lw-chat');
  const ra = a.subscribe(pub);
  const rb = b.subscribe(pub);
  await Promise.all([subscribed(ra), subscribed(rb)]);
  step('public subscribed');
  obs.public = { b_got: [], errors_before: obs.errors.length };
  recorder(rb, 'client-nope', obs.public.b_got);
  ra.trigger('client-nope', { should: 'not arrive' });
  await sleep(QUIET_MS);
  obs.public.sender_errors = obs.errors.slice(obs.public.errors_before).filter((e) => e.client === 'a');
  step('public done');
});
