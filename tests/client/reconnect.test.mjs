// The client's reconnect and recovery logic, against real servers started by test_node_client.py.
// A proxy between client and server plays the network: it cuts, refuses, goes silent, or puts
// the second server (a "restarted" one, with a new epoch) behind the same address.
import assert from "node:assert/strict";
import { test } from "node:test";

import WebSocket from "ws";

import { connect } from "../../static/switchboard.js";
import { Proxy } from "./proxy.mjs";

const SERVER = process.env.SWITCHBOARD_TEST_URL;
const RESTARTED = process.env.SWITCHBOARD_TEST_OTHER_URL;
if (!SERVER || !RESTARTED) {
  throw new Error("start these with `pytest tests/client`: it runs two servers and passes their URLs");
}
const wsUrl = (http) => http.replace(/^http/, "ws") + "/ws";

// Fast timings, so a test of several reconnects takes a fraction of a second.
const FAST = { WebSocket, minDelay: 20, maxDelay: 200, timeout: 5000 };
// A test waiting for something that never comes fails after this, instead of hanging the run.
const it = (name, body) => test(name, { timeout: 10000 }, body);

let channels = 0;
const channel = (name) => `${name}-${process.pid}-${++channels}`;

/** A client closed when the test ends. */
function open(t, url, options = {}) {
  const client = connect(url, { ...FAST, ...options });
  t.after(() => client.close());
  return client;
}

/** A proxy to the first server, closed when the test ends. */
async function proxy(t) {
  const instance = new Proxy(SERVER);
  await instance.accept();
  t.after(() => instance.close());
  return instance;
}

/** The next `type` event whose detail passes `filter`. */
function next(client, type, filter = () => true) {
  return new Promise((resolve) => {
    const off = client.on(type, (detail) => {
      if (!filter(detail)) return;
      off();
      resolve(detail);
    });
  });
}

/** Subscribe and keep what arrives; `upTo(n)` waits until n messages have. */
function inbox(client, name, options) {
  const received = [];
  const waiters = [];
  const subscription = client.subscribe(
    name,
    (data, message) => {
      received.push(message);
      for (const waiter of waiters.filter((w) => received.length >= w.count)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(received.map((m) => m.data));
      }
    },
    options,
  );
  const upTo = (count) =>
    received.length >= count
      ? Promise.resolve(received.map((m) => m.data))
      : new Promise((resolve) => waiters.push({ count, resolve }));
  return { subscription, received, upTo };
}

it("subscribes, publishes and gets its own message with offset and epoch", async (t) => {
  const client = open(t, wsUrl(SERVER));
  const name = channel("basic");
  const box = inbox(client, name);
  const ready = await box.subscription.ready;
  assert.equal(ready.recovered, true);
  const reply = await client.publish(name, { text: "hi" });
  await box.upTo(1);
  assert.deepEqual(box.received[0], {
    channel: name,
    offset: reply.offset,
    epoch: ready.epoch,
    from: client.user,
    data: { text: "hi" },
  });
});

it("a cut connection comes back and resumes from the last offset: nothing lost, nothing twice", async (t) => {
  const network = await proxy(t);
  const client = open(t, network.url);
  const publisher = open(t, wsUrl(SERVER));
  const name = channel("resume");
  const box = inbox(client, name);
  await box.subscription.ready;
  await publisher.publish(name, 1);
  await box.upTo(1);

  network.refuse();
  const lost = next(client, "disconnected");
  network.cut();
  assert.equal((await lost).code, 1006);
  for (const n of [2, 3, 4]) await publisher.publish(name, n);

  const resubscribed = next(client, "subscribed", (result) => result.channel === name);
  await network.accept();
  const { resumed, recovered } = await resubscribed;
  assert.deepEqual({ resumed, recovered }, { resumed: true, recovered: true });
  await publisher.publish(name, 5);
  assert.deepEqual(await box.upTo(5), [1, 2, 3, 4, 5]);
  // A duplicate would have arrived before the marker, which follows everything else.
  await publisher.publish(name, "marker");
  assert.deepEqual(await box.upTo(6), [1, 2, 3, 4, 5, "marker"]);
});

it("retries back off exponentially with jitter, up to maxDelay, and start over once connected", async (t) => {
  const network = await proxy(t);
  network.refuse();
  const client = open(t, network.url, { minDelay: 20, maxDelay: 80 });
  const delays = [];
  const attempts = [];
  client.on("connecting", ({ attempt }) => attempts.push(attempt));
  await new Promise((resolve) => {
    const off = client.on("disconnected", ({ retryIn }) => {
      delays.push(retryIn);
      if (delays.length === 5) resolve(off());
    });
  });
  [20, 40, 80, 80, 80].forEach((ceiling, i) => {
    assert.ok(delays[i] >= ceiling / 2 && delays[i] <= ceiling, `retry ${i + 1} waited ${delays[i]} ms`);
  });
  assert.deepEqual(attempts.slice(0, 5), [1, 2, 3, 4, 5]);

  const connected = next(client, "connected");
  await network.accept();
  await connected;
  const lost = next(client, "disconnected");
  network.cut();
  const { retryIn } = await lost;
  assert.ok(retryIn >= 10 && retryIn <= 20, `after a success the first retry waited ${retryIn} ms`);
});

it("a publish made while disconnected waits and goes out after the reconnect", async (t) => {
  const network = await proxy(t);
  const client = open(t, network.url);
  const name = channel("queued");
  const box = inbox(client, name);
  await box.subscription.ready;
  network.refuse();
  const lost = next(client, "disconnected");
  network.cut();
  await lost;

  const reply = client.publish(name, "typed while offline");
  await network.accept();
  assert.equal((await reply).channel, name);
  assert.deepEqual(await box.upTo(1), ["typed while offline"]);
});

it("commands fail clearly: in flight when the socket dies, queued too long, or after close()", async (t) => {
  const network = await proxy(t);
  const client = open(t, network.url, { timeout: 300 });
  await next(client, "connected");
  network.freeze();
  const inFlight = client.publish(channel("x"), "maybe");
  network.refuse();
  network.cut();
  await assert.rejects(inFlight, { name: "SwitchboardError", code: "disconnected" });

  // The proxy refuses now, so this one never leaves the queue.
  await assert.rejects(client.publish(channel("x"), "never sent"), {
    code: "timeout",
    message: /still waiting for a connection/,
  });

  const waiting = client.presence(channel("x"));
  client.close();
  await assert.rejects(waiting, { code: "closed" });
  await assert.rejects(client.publish(channel("x"), "after close"), { code: "closed" });
  assert.equal(client.state, "disconnected");
});

it("its own ping keeps a quiet connection up and finds a silent one dead", async (t) => {
  const network = await proxy(t);
  // A pong has 400 ms to come back: generous on a busy machine, quick for a test.
  const client = open(t, network.url, { pingInterval: 150, pingTimeout: 400 });
  const publisher = open(t, wsUrl(SERVER));
  const name = channel("ping");
  const box = inbox(client, name);
  await box.subscription.ready;
  const drops = [];
  client.on("disconnected", (detail) => drops.push(detail));
  // Several ping intervals of silence from the application: pongs keep it alive.
  await new Promise((resolve) => setTimeout(resolve, 800));
  assert.deepEqual(drops, []);

  const frozenAt = Date.now();
  const lost = next(client, "disconnected");
  network.freeze();
  const { code, reason } = await lost;
  assert.equal(code, 4000);
  assert.match(reason, /ping/);
  assert.ok(Date.now() - frozenAt < 2000);

  // The proxy still accepts, so it reconnects and resumes at once.
  await next(client, "subscribed", (result) => result.channel === name);
  await publisher.publish(name, "after");
  assert.deepEqual(await box.upTo(1), ["after"]);
});

it("after a server restart it re-subscribes with the epoch and reports recovered:false", async (t) => {
  const network = await proxy(t);
  const client = open(t, network.url);
  const name = channel("restart");
  const box = inbox(client, name);
  const first = await box.subscription.ready;
  await client.publish(name, "before");
  await box.upTo(1);

  network.refuse();
  network.retarget(RESTARTED);
  const lost = next(client, "disconnected");
  network.cut();
  await lost;
  // The new server's offsets start again at 1: without the epoch, offset 1 would pass for "up to date".
  const restarted = open(t, wsUrl(RESTARTED));
  assert.equal((await restarted.publish(name, "missed")).offset, first.offset + 1);
  const after = next(client, "subscribed", (result) => result.channel === name);
  await network.accept();
  const result = await after;
  assert.equal(result.resumed, true);
  assert.equal(result.recovered, false);
  assert.notEqual(result.epoch, first.epoch);

  // Offsets restarted with the new epoch: the next message carries it, and a later cut
  // resumes within the new epoch without a gap.
  const reply = await client.publish(name, "after");
  await box.upTo(2);
  const { data, epoch, offset } = box.received.at(-1);
  assert.deepEqual({ data, epoch, offset }, { data: "after", epoch: result.epoch, offset: reply.offset });
  const lostAgain = next(client, "disconnected");
  network.cut();
  await lostAgain;
  const again = await next(client, "subscribed", (r) => r.channel === name);
  assert.deepEqual([again.recovered, again.epoch], [true, result.epoch]);
});

it("join and leave on a presence- channel, with users from a token function", async (t) => {
  const token = async (name) => (await (await fetch(`${SERVER}/demo/token?name=${name}`)).json()).token;
  const ann = open(t, wsUrl(SERVER), { token: () => token("ann") });
  const bob = open(t, wsUrl(SERVER), { token: () => token("bob") });
  const name = channel("presence-room");
  await ann.subscribe(name, () => {}).ready;
  const joined = next(ann, "join");
  await bob.subscribe(name, () => {}).ready;
  assert.deepEqual(await joined, { channel: name, member: { user: "bob", info: null } });
  assert.deepEqual((await ann.presence(name)).map((m) => m.user).sort(), ["ann", "bob"]);

  const left = next(ann, "leave");
  bob.close();
  assert.deepEqual(await left, { channel: name, member: { user: "bob", info: null } });
  assert.deepEqual(await ann.presence(name), [{ user: "ann", info: null }]);
});

it("unsubscribe stops delivery once the server has forgotten the channel", async (t) => {
  const client = open(t, wsUrl(SERVER));
  const publisher = open(t, wsUrl(SERVER));
  const [left, stays] = [channel("left"), channel("stays")];
  const gone = inbox(client, left);
  const kept = inbox(client, stays);
  await Promise.all([gone.subscription.ready, kept.subscription.ready]);
  await gone.subscription.unsubscribe();
  await publisher.publish(left, "not for us");
  await publisher.publish(stays, "for us");
  // The server sends in publish order, so the first message was not sent at all.
  assert.deepEqual(await kept.upTo(1), ["for us"]);
  assert.deepEqual(gone.received, []);
});

it("a refused subscription rejects `ready` and is reported as an error", async (t) => {
  const client = open(t, wsUrl(SERVER));
  const reported = next(client, "error");
  const subscription = client.subscribe("no spaces allowed", () => {});
  await assert.rejects(subscription.ready, { code: "invalid_channel" });
  assert.equal((await reported).code, "invalid_channel");
});
