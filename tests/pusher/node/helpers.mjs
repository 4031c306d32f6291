// What the Node tests of pusher-js and Laravel Echo share: where Switchboard and the application
// back end are (from tests/pusher/test_node_libraries.py), a client configured as docs/pusher.md
// says, and small promises around events. No sleeps: every wait is for an event, with a deadline.
import Pusher from 'pusher-js';
import WebSocket from 'ws';

export const KEY = process.env.PUSHER_KEY;
export const OTHER_KEY = process.env.PUSHER_OTHER_KEY;
export const BACKEND = process.env.PUSHER_BACKEND_URL;
export const SERVER = process.env.SWITCHBOARD_URL;
const PORT = Number(new URL(SERVER).port);

// The options an existing pusher-js application changes to point at Switchboard.
export function options(user, extra = {}) {
  return {
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: PORT,
    forceTLS: false,
    enabledTransports: ['ws'],
    channelAuthorization: { endpoint: `${BACKEND}/pusher/auth`, transport: 'ajax', params: { user } },
    ...extra,
  };
}

export function client(user, key = KEY, extra = {}) {
  return new Pusher(key, options(user, extra));
}

export function within(promise, what, ms = 10000) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

// The arguments of the next `event` on a pusher-js channel or connection (anything with bind/unbind):
// a channel event's are (data, metadata).
export function nextWith(target, event, what = event) {
  return within(
    new Promise((resolve) => {
      const once = (...args) => {
        target.unbind(event, once);
        resolve(args);
      };
      target.bind(event, once);
    }),
    what,
  );
}

// The data of the next `event`.
export async function next(target, event, what = event) {
  return (await nextWith(target, event, what))[0];
}

export function connected(pusher) {
  return pusher.connection.state === 'connected' ? Promise.resolve() : next(pusher.connection, 'connected');
}

// The application back end triggers with the `pusher` Python library.
export async function trigger(channels, event, data, socketId) {
  const response = await fetch(`${BACKEND}/trigger`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ channels, event, data, socket_id: socketId }),
  });
  if (!response.ok) throw new Error(`trigger failed: ${response.status} ${await response.text()}`);
}

// A native /ws client of the same hub, with a token from the HTTP API.
export async function native(user) {
  const response = await fetch(`${SERVER}/api/tokens`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${process.env.SWITCHBOARD_API_KEY}` },
    body: JSON.stringify({ user, info: { name: user }, channels: ['presence-*'], publish: true }),
  });
  const { token } = await response.json();
  const ws = new WebSocket(`${SERVER.replace('http', 'ws')}/ws?token=${token}`);
  const received = [];
  const waiters = [];
  ws.on('message', (raw) => {
    received.push(JSON.parse(raw));
    for (const waiter of waiters.splice(0)) waiter();
  });
  await within(new Promise((resolve) => ws.once('open', resolve)), 'the native socket');
  return {
    send: (command) => ws.send(JSON.stringify(command)),
    // The first received message matching `test`, waiting for it if need be.
    async next(test, what) {
      return within(
        (async () => {
          for (;;) {
            const index = received.findIndex(test);
            if (index >= 0) return received.splice(index, 1)[0];
            await new Promise((resolve) => waiters.push(resolve));
          }
        })(),
        what,
      );
    },
    close: () => ws.close(),
  };
}
