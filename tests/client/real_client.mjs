// A Switchboard session from Node's `ws` package, a client nobody here wrote; run by
// tests/integration/test_real_clients.py, which reads the JSON lines it prints.
//
//   node tests/client/real_client.mjs session URL CHANNEL DATA_JSON
//     welcome, subscribe, publish DATA, receive it back, close with 1000; prints one line:
//     {"welcome":...,"subscribed":...,"published":...,"message":...,"close":{"code":N,"reason":"..."}}
//   node tests/client/real_client.mjs hold URL CHANNEL
//     welcome and subscribe, print {"subscribed":true}, then wait for the server to close and
//     print {"close":{"code":N,"reason":"..."}}.
// Anything unexpected prints {"error":"..."} and exits 1; nothing runs for longer than 30 s.
import WebSocket from "ws";

const [mode, url, channel, data] = process.argv.slice(2);
if (!["session", "hold"].includes(mode) || !url || !channel) {
  console.error("usage: real_client.mjs session|hold URL CHANNEL [DATA_JSON]");
  process.exit(2);
}

const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const fail = (message) => {
  print({ error: String(message) });
  process.exit(1);
};
setTimeout(() => fail("timed out after 30 s"), 30_000).unref();

const ws = new WebSocket(url);
const inbox = [];
let wake = () => {};
ws.on("message", (raw, isBinary) => {
  if (isBinary) fail("the server sent a binary message");
  inbox.push(JSON.parse(raw.toString("utf8")));
  wake();
});
ws.on("error", (error) => fail(error.message));
const closed = new Promise((resolve) => {
  ws.on("close", (code, reason) => resolve({ code, reason: reason.toString("utf8") }));
});

/** The next frame that `matches`, from what already arrived or what arrives next. */
async function next(matches) {
  for (;;) {
    const index = inbox.findIndex(matches);
    if (index >= 0) return inbox.splice(index, 1)[0];
    const arrived = new Promise((resolve) => (wake = resolve));
    const ended = await Promise.race([arrived.then(() => null), closed]);
    if (ended) fail(`closed with ${ended.code} while waiting`);
  }
}

const reply = (id) => next((frame) => frame.id === id && (frame.type === "reply" || frame.type === "error"));

const welcome = await next((frame) => frame.type === "welcome");
ws.send(JSON.stringify({ type: "subscribe", channel, id: 1 }));
const subscribed = await reply(1);
if (subscribed.type !== "reply") fail(`subscribe failed: ${JSON.stringify(subscribed)}`);

if (mode === "hold") {
  print({ subscribed: true });
  print({ close: await closed });
} else {
  ws.send(JSON.stringify({ type: "publish", channel, data: JSON.parse(data), id: 2 }));
  const published = await reply(2);
  if (published.type !== "reply") fail(`publish failed: ${JSON.stringify(published)}`);
  const message = await next((frame) => frame.type === "message" && frame.channel === channel);
  ws.close(1000, "done");
  print({ welcome, subscribed, published, message, close: await closed });
}
