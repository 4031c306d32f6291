// A channel's messages through GraphQL, from where the page starts and across reconnects.
//
// It reads the newest messages and the channel's position with the `history` query, then
// subscribes to `messages` from that position, so nothing published in between is missed. The
// `graphql-ws` client re-sends the same payload when it reconnects, and the position kept in
// `payload.variables` makes that a resume: the server replays exactly what was missed. When the
// server cannot (a restart that lost its history), the subscription ends with an error whose
// code is "unrecoverable": start again from history. "unavailable" (Redis unreachable) means
// nothing was subscribed: subscribe again from the same position. See docs/graphql.md.

const HISTORY = `query Recent($channel: String!, $limit: Int) {
  history(channel: $channel, limit: $limit) { epoch offset messages { offset epoch from data } }
}`;
const RETRY_MS = 1000;
const MESSAGES = `subscription Feed($channel: String!, $since: Offset, $epoch: String) {
  messages(channel: $channel, since: $since, epoch: $epoch) { offset epoch from data }
}`;

/** One result of a query over the client's socket. */
function query(client, payload) {
  return new Promise((resolve, reject) => {
    let result;
    client.subscribe(payload, {
      next: (value) => (result = value),
      error: reject,
      complete: () => (result?.errors ? reject(result.errors) : resolve(result.data)),
    });
  });
}

/**
 * Follow `channel`: `onReset(messages)` with the newest `limit` messages (again after an
 * unrecoverable gap), then `onMessage(message)` for each new one, once each, in order.
 * Returns a function that stops following.
 */
export function follow(client, channel, { limit = 20, onReset, onMessage, onError }) {
  let stop = () => {};
  let stopped = false;

  async function start() {
    const history = (await query(client, { query: HISTORY, variables: { channel, limit } })).history;
    if (stopped) return;
    onReset(history.messages);
    const payload = { query: MESSAGES, variables: { channel, since: history.offset, epoch: history.epoch } };
    const subscribe = () => {
      stop = client.subscribe(payload, {
        next: ({ data }) => {
          payload.variables.since = data.messages.offset; // where a reconnect resumes
          payload.variables.epoch = data.messages.epoch;
          onMessage(data.messages);
        },
        error: (errors) => {
          const code = Array.isArray(errors) ? errors[0]?.extensions?.code : undefined;
          if (stopped) return;
          if (code === "unrecoverable") start().catch(onError);
          else if (code === "unavailable") setTimeout(subscribe, RETRY_MS); // Redis away: same position
          else onError(errors);
        },
        complete: () => {},
      });
    };
    subscribe();
  }

  start().catch(onError);
  return () => {
    stopped = true;
    stop();
  };
}
