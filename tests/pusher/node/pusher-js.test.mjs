// pusher-js 8.6.0, unchanged, in Node against Switchboard: run by tests/pusher/test_node_libraries.py.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { client, native, next, nextWith, trigger, within } from './helpers.mjs';

const opened = [];
function open(user, ...rest) {
  const pusher = client(user, ...rest);
  opened.push(pusher);
  return pusher;
}
after(() => opened.forEach((pusher) => pusher.disconnect()));

test('a public channel hears what the pusher server library triggers, data parsed', async () => {
  const pusher = open('ann');
  const channel = pusher.subscribe('node-news');
  await next(channel, 'pusher:subscription_succeeded');
  const heard = next(channel, 'headline');
  await trigger(['node-news'], 'headline', { title: 'Hello', n: 1 });
  assert.deepEqual(await heard, { title: 'Hello', n: 1 });
  assert.match(pusher.connection.socket_id, /^\d+\.\d+$/);
});

test('a private channel: signed by the auth endpoint; client events reach others, not the sender', async () => {
  const [ann, ben] = [open('ann'), open('ben')];
  const [a, b] = [ann.subscribe('private-node-doc'), ben.subscribe('private-node-doc')];
  await Promise.all([next(a, 'pusher:subscription_succeeded'), next(b, 'pusher:subscription_succeeded')]);
  let echoed = false;
  a.bind('client-edit', () => (echoed = true));
  const heard = nextWith(b, 'client-edit');
  assert.equal(a.trigger('client-edit', { line: 3 }), true);
  assert.deepEqual(await heard, [{ line: 3 }, {}]);
  // The sender's own copy would have come before this server event, which both get.
  const done = next(a, 'done');
  await trigger(['private-node-doc'], 'done', {});
  await done;
  assert.equal(echoed, false);
});

test('presence: the member list, members added and removed, client events with user_id', async () => {
  const ann = open('ann');
  const room = ann.subscribe('presence-node-room');
  const members = await next(room, 'pusher:subscription_succeeded');
  assert.equal(members.count, 1);
  assert.deepEqual(members.me, { id: 'ann', info: { name: 'Ann' } });

  const added = next(room, 'pusher:member_added');
  const ben = open('ben');
  const benRoom = ben.subscribe('presence-node-room');
  const benMembers = await next(benRoom, 'pusher:subscription_succeeded');
  assert.deepEqual(await added, { id: 'ben', info: { name: 'Ben' } });
  assert.deepEqual(Object.keys(benMembers.members).sort(), ['ann', 'ben']);

  const whispered = nextWith(room, 'client-typing');
  benRoom.trigger('client-typing', { typing: true });
  assert.deepEqual(await whispered, [{ typing: true }, { user_id: 'ben' }]);

  const removed = next(room, 'pusher:member_removed');
  ben.disconnect();
  assert.deepEqual(await removed, { id: 'ben', info: { name: 'Ben' } });
  assert.equal(room.members.count, 1);
});

test('a refused signature: the channel is told, the connection and its other channels carry on', async () => {
  const mallory = open('forger');
  const publicChannel = mallory.subscribe('node-open');
  await next(publicChannel, 'pusher:subscription_succeeded');
  const errors = [];
  mallory.connection.bind('error', (error) => errors.push(error));
  const refused = next(mallory.subscribe('private-node-vault'), 'pusher:subscription_error');
  const status = await refused;
  assert.equal(status.type, 'AuthError');
  assert.equal(status.status, 401);
  assert.match(status.error, /Invalid signature/);
  const heard = next(publicChannel, 'still-here');
  await trigger(['node-open', 'private-node-vault'], 'still-here', 'yes');
  assert.equal(await heard, 'yes');
  assert.equal(mallory.connection.state, 'connected');
  assert.equal(errors[0]?.data?.code, 4009);
  assert.equal(mallory.channel('private-node-vault').subscribed, false);
});

test('one hub: a native client and pusher-js share a channel, its messages and its presence', async () => {
  const pusher = open('pat');
  const room = pusher.subscribe('presence-node-mixed');
  await next(room, 'pusher:subscription_succeeded');
  const nat = await native('nat');
  try {
    const joined = next(room, 'pusher:member_added');
    nat.send({ type: 'subscribe', channel: 'presence-node-mixed', id: 1 });
    await nat.next((m) => m.type === 'reply' && m.id === 1, 'the native subscription');
    assert.deepEqual(await joined, { id: 'nat', info: { name: 'nat' } });

    const fromNative = next(room, 'native-says');
    nat.send({ type: 'publish', channel: 'presence-node-mixed', event: 'native-says', data: { hi: 'pusher' } });
    assert.deepEqual(await fromNative, { hi: 'pusher' });

    room.trigger('client-hello', { hi: 'native' });
    const message = await nat.next((m) => m.type === 'message' && m.event === 'client-hello', 'the client event');
    assert.deepEqual([message.data, message.from], [{ hi: 'native' }, 'pat']);

    nat.send({ type: 'presence', channel: 'presence-node-mixed', id: 2 });
    const presence = await nat.next((m) => m.id === 2, 'the presence reply');
    assert.deepEqual(presence.result.members.map((m) => m.user).sort(), ['nat', 'pat']);

    const left = next(room, 'pusher:member_removed');
    nat.close();
    assert.equal((await left).id, 'nat');
  } finally {
    nat.close();
  }
});

test('an unknown app key is refused with 4001 and pusher-js does not retry', async () => {
  const stranger = open('ann', 'no-such-key');
  const error = await next(stranger.connection, 'error', 'the refusal');
  assert.deepEqual(error.error.data, { code: 4001, message: 'App key no-such-key does not exist' });
  await within(
    new Promise((resolve) => {
      const check = () => stranger.connection.state === 'disconnected' && resolve();
      check();
      stranger.connection.bind('state_change', check);
    }),
    'the disconnected state',
  );
});
