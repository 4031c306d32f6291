// The browser client (static/switchboard.js) calling RPC methods; prints one JSON line per call:
// {"data":...} or {"error":"code"}. Run by tests/hooks/test_hooks.py.
//
//   node tests/hooks/rpc_client.mjs WS_URL CALLS_JSON   (CALLS_JSON: [[method, params], ...])
import WebSocket from "ws";

import { connect } from "../../static/switchboard.js";

const [url, calls] = process.argv.slice(2);
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const client = connect(url, { WebSocket });
for (const [method, params] of JSON.parse(calls)) {
  try {
    print({ data: await client.rpc(method, params) });
  } catch (error) {
    print({ error: error.code });
  }
}
client.close();
