// The browser client (static/switchboard.js) as a subscriber that prints what it sees, one JSON
// line each: {"subscribed":{...}}, {"disconnected":{"code","reason","retryIn"}}, {"message":{...}}.
// Run by tests/integration/test_drain.py, which stops it once it has what it needs.
//
//   node tests/client/drain_subscriber.mjs WS_URL CHANNEL
import WebSocket from "ws";

import { connect } from "../../static/switchboard.js";

const [url, channel] = process.argv.slice(2);
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const client = connect(url, { WebSocket });
client.on("subscribed", (detail) => print({ subscribed: detail }));
client.on("disconnected", (detail) => print({ disconnected: detail }));
client.subscribe(channel, (data, message) => print({ message }));
