// pusher-js, unchanged, in Node against the Switchboard a host app mounts under a URL prefix;
// run by tests/hostapp/test_host_app.py, which reads the JSON lines it prints.
//
//   node tests/hostapp/pusher_listener.mjs URL KEY CHANNEL EVENT COUNT
//     connects to URL's host and port with `wsPath` = URL's path, subscribes to CHANNEL, prints
//     {"subscribed":true}, then {"data":...} for each of the next COUNT events named EVENT.
// Anything unexpected prints {"error":"..."} and exits 1; nothing runs for longer than 30 s.
import Pusher from "pusher-js";

const [url, key, channelName, eventName, count] = process.argv.slice(2);
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const fail = (message) => {
  print({ error: String(message) });
  process.exit(1);
};
setTimeout(() => fail("timed out after 30 s"), 30_000).unref();

const server = new URL(url);
const pusher = new Pusher(key, {
  cluster: "mt1",
  wsHost: server.hostname,
  wsPort: Number(server.port),
  wsPath: server.pathname, // the prefix the host app mounts Switchboard under
  forceTLS: false,
  enabledTransports: ["ws"],
});
pusher.connection.bind("error", (error) => fail(JSON.stringify(error)));
const channel = pusher.subscribe(channelName);
channel.bind("pusher:subscription_error", (error) => fail(JSON.stringify(error)));
let left = Number(count);
channel.bind(eventName, (data) => {
  print({ data });
  left -= 1;
  if (left === 0) {
    pusher.disconnect();
    process.exit(0);
  }
});
channel.bind("pusher:subscription_succeeded", () => print({ subscribed: true }));
