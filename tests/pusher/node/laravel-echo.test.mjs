// Laravel Echo 2.5.0 with its Pusher connector (pusher-js 8.6.0), unchanged, against Switchboard.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import Echo from 'laravel-echo';
import Pusher from 'pusher-js';

import { BACKEND, KEY, options, trigger, within } from './helpers.mjs';

const opened = [];
// Echo as a Laravel application configures it; only the host options point at Switchboard.
function echo(user) {
  const { cluster, wsHost, wsPort, forceTLS, enabledTransports } = options(user);
  const instance = new Echo({
    broadcaster: 'pusher',
    Pusher,
    key: KEY,
    cluster,
    wsHost,
    wsPort,
    forceTLS,
    enabledTransports,
    authEndpoint: `${BACKEND}/broadcasting/auth`,
    auth: { params: { user } },
  });
  opened.push(instance);
  return instance;
}
after(() => opened.forEach((instance) => instance.disconnect()));

const promised = (what, register) => within(new Promise(register), what);

test('Echo listens to a public channel: an event the server library triggers', async () => {
  const client = echo('ann');
  const channel = client.channel('echo-orders');
  await promised('the subscription', (resolve) => channel.subscribed(resolve));
  const shipped = promised('the event', (resolve) => channel.listen('.OrderShipped', resolve));
  await trigger(['echo-orders'], 'OrderShipped', { order: 42 });
  assert.deepEqual(await shipped, { order: 42 });
});

test('Echo whispers on a private channel and another client hears it', async () => {
  const [ann, ben] = [echo('ann'), echo('ben')];
  const [a, b] = [ann.private('echo-chat'), ben.private('echo-chat')];
  await Promise.all([
    promised('ann subscribed', (resolve) => a.subscribed(resolve)),
    promised('ben subscribed', (resolve) => b.subscribed(resolve)),
  ]);
  const heard = promised('the whisper', (resolve) => b.listenForWhisper('typing', resolve));
  a.whisper('typing', { name: 'Ann' });
  assert.deepEqual(await heard, { name: 'Ann' });
});

test('Echo joins a presence channel: here, joining, leaving', async () => {
  const ann = echo('ann');
  const here = promised('here', (resolve) => ann.join('echo-lobby').here(resolve));
  assert.deepEqual(await here, [{ name: 'Ann' }]);
  const joining = promised('joining', (resolve) => ann.join('echo-lobby').joining(resolve));
  const leaving = promised('leaving', (resolve) => ann.join('echo-lobby').leaving(resolve));
  const ben = echo('ben');
  const benHere = promised('ben here', (resolve) => ben.join('echo-lobby').here(resolve));
  assert.deepEqual(await joining, { name: 'Ben' });
  assert.deepEqual((await benHere).map((member) => member.name).sort(), ['Ann', 'Ben']);
  ben.leave('echo-lobby');
  assert.deepEqual(await leaving, { name: 'Ben' });
});

test("Echo's error callback hears a refused signature", async () => {
  const forger = echo('forger');
  const status = await promised('the error', (resolve) => forger.private('echo-vault').error(resolve));
  assert.equal(status.status, 401);
  assert.equal(status.type, 'AuthError');
});
