// The browser client (static/switchboard.js) as a subscriber that prints what it sees, one JSON
// line each: {"message":{...}}, {"subscribed":{...}}, {"error":"..."}. Run by
// tests/integration/test_redis_outage.py, which stops it when its stream is over.
//
//   node tests/client/outage_subscriber.mjs WS_URL CHANNEL
import WebSocket from "ws";

import { connect } from "../../static/switchboard.js";

const [url, channel] = process.argv.slice(2);
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const client = connect(url, { WebSocket, minDelay: 50, maxDelay: 500 });
client.on("subscribed", (detail) => print({ subscribed: detail }));
client.on("error", (error) => print({ error: `${error.code}: ${error.message}` }));
client.subscribe(channel, (data, message) => print({ message }));
