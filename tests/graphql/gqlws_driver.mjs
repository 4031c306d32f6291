// The `graphql-ws` npm client (the one Apollo and urql use), driven by tests/graphql/nodeclient.py.
//
// Reads one JSON command a line on stdin and prints one JSON event a line on stdout:
//   {"do":"connect","client":C,"url":U,"token":T?}          -> {"client":C,"event":"connected","payload":ACK}
//                                                               {"client":C,"event":"closed","code":N,"reason":R}
//   {"do":"subscribe","client":C,"sub":S,"query":Q,"variables":V?,"resume":true?}
//                                                            -> {"sub":S,"next":RESULT} ... {"sub":S,"error":ERRORS}
//                                                               {"sub":S,"complete":true}
//   {"do":"dispose","client":C}
// With "resume", the subscription keeps the offset and epoch of the last message it saw in its
// own variables: the client re-sends the same payload when it reconnects, so it resumes there;
// and it subscribes again from there when the server answers `unavailable` (Redis unreachable).
// Every client retries (every 100 ms, up to 300 times) after a close the library deems retryable.
// Nothing runs for more than 90 s.
import { createInterface } from "node:readline";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");
setTimeout(() => {
  print({ event: "timeout" });
  process.exit(1);
}, 90_000).unref();

const clients = new Map();

function connect({ client: name, url, token }) {
  const client = createClient({
    url,
    webSocketImpl: WebSocket,
    lazy: false,
    connectionParams: token ? { token } : undefined,
    retryAttempts: 300,
    retryWait: () => new Promise((resolve) => setTimeout(resolve, 100)),
    // Retry a refused connection too (a server restarting), not only close events; the codes
    // the protocol calls fatal (4400, 4401, 4409, 4429, ...) still end the client.
    shouldRetry: () => true,
    on: {
      connected: (_socket, payload) => print({ client: name, event: "connected", payload }),
      closed: (event) => print({ client: name, event: "closed", code: event.code, reason: event.reason }),
    },
    onNonLazyError: () => {},
  });
  clients.set(name, client);
}

function subscribe({ client: name, sub, query, variables, resume }) {
  const payload = { query, variables: { ...(variables || {}) } };
  const start = () =>
    clients.get(name).subscribe(payload, {
      next: (result) => {
        const message = result.data && result.data.messages;
        if (resume && message) {
          payload.variables.since = message.offset;
          payload.variables.epoch = message.epoch;
        }
        print({ sub, next: result });
      },
      error: (error) => {
        // Redis unreachable (a server just started, say): nothing was subscribed; try again
        // from the same position, as docs/graphql.md tells clients to.
        if (resume && Array.isArray(error) && error[0]?.extensions?.code === "unavailable") {
          setTimeout(start, 100);
          return;
        }
        print({ sub, error: Array.isArray(error) ? error : { code: error.code, reason: error.reason ?? String(error) } });
      },
      complete: () => print({ sub, complete: true }),
    });
  start();
}

for await (const line of createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  if (command.do === "connect") connect(command);
  else if (command.do === "subscribe") subscribe(command);
  else if (command.do === "dispose") await clients.get(command.client).dispose();
}
process.exit(0);
