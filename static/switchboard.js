/**
 * Switchboard's client: one WebSocket to /ws shared by every subscription, kept alive for you.
 *
 * A plain ES module with no dependencies, for a <script type="module">, React, Vue or Node (pass
 * `WebSocket` from the `ws` package there). It reconnects with exponential backoff and jitter,
 * re-subscribes every channel from the last offset it saw, and says when that recovery failed
 * so the page can reload history. Commands made while disconnected wait for the connection; every
 * command's promise settles, with a reply or a `SwitchboardError`, never silence.
 * The protocol it speaks is docs/protocol.md; the guarantees it gives are docs/client.md.
 */

const DEFAULTS = {
  minDelay: 500, // the first retry waits 0.25-0.5 s; each failure doubles it...
  maxDelay: 15000, // ...up to this, so a dead server is not hammered by every open tab.
  pingInterval: 15000, // quiet this long: send our own ping (below the server's 25 s)...
  pingTimeout: 5000, // ...and still nothing after this much more: the connection is dead.
  timeout: 30000, // a command with no reply this long after the call rejects, queued or sent.
};

const OPEN = 1; // WebSocket.OPEN, the same in browsers and in `ws`.

/** A page's bug must not break the connection: rethrow it where uncaught errors go, later. */
function reportLater(error) {
  setTimeout(() => {
    throw error;
  });
}

/**
 * The milliseconds a draining server asked us to spread our reconnect over: close 1012 with the
 * reason "server restarting: reconnect within N ms" (docs/protocol.md); null for any other close.
 */
function restartWindow(code, reason) {
  if (code !== 1012) return null;
  const match = /reconnect within (\d+) ms/.exec(reason ?? "");
  return match ? Number(match[1]) : null;
}

/** Why a command failed: `code` is the server's error code, or one of this client's own. */
export class SwitchboardError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "SwitchboardError";
    this.code = code;
  }
}

/**
 * Open a client to `url` (ws://host/ws). Options: `token` (a string, or a function returning one
 * or a promise of one, called before every attempt so an expired token can be renewed),
 * `WebSocket` (an implementation, for Node), and the timings in DEFAULTS, in milliseconds.
 */
export function connect(url, options = {}) {
  return new Client(url, options);
}

class Client {
  constructor(url, options) {
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this.state = "disconnected";
    this.user = null; // from the server's welcome: who the token says we are
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._listeners = new Map(); // event type -> Set of listeners
    this._channels = new Map(); // name -> {handlers, offset, epoch, ...}, see subscribe()
    this._pending = new Map(); // command id -> {frame, sent, resolve, reject, timer}, in call order
    this._nextId = 1;
    this._ws = null;
    this._failures = 0;
    this._timer = null; // the one timer of the moment: liveness check or reconnect delay
    this._closed = false;
    // Start after the caller's synchronous code, so listeners it adds see "connecting".
    queueMicrotask(() => this._open());
  }

  /** Listen for `connecting`, `connected`, `disconnected`, `subscribed`, `join`, `leave`, `error`. */
  on(type, listener) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(listener);
    return () => this._listeners.get(type).delete(listener);
  }

  /**
   * Call `onMessage(data, message)` for every message on `channel`; `message` has channel,
   * offset, epoch, from and data. `options.since` (first subscription only) asks for the held
   * messages after that offset too: 0 for all the channel still holds. The result has
   * `unsubscribe()` and `ready`, a promise of the server's first reply.
   */
  subscribe(channel, onMessage, options = {}) {
    let entry = this._channels.get(channel);
    if (!entry) {
      // `onServer`: a subscribe went out on the current socket, so leaving needs an unsubscribe.
      entry = { name: channel, handlers: new Set(), offset: options.since ?? null, epoch: null, onServer: false };
      entry.ready = new Promise((resolve, reject) => Object.assign(entry, { resolve, reject }));
      // Observing `ready` is optional: a refusal is also reported as an "error" event.
      entry.ready.catch(() => {});
      this._channels.set(channel, entry);
      if (this.state === "connected") this._subscribeOnServer(entry);
    }
    // A wrapper of its own, so the same function subscribed twice is unsubscribed once at a time.
    const handler = (data, message) => onMessage(data, message);
    entry.handlers.add(handler);
    return {
      channel,
      ready: entry.ready,
      unsubscribe: () => this._unsubscribe(entry, handler),
    };
  }

  /** Publish `data` (any JSON) to `channel`; resolves with `{channel, offset}` once stored. */
  publish(channel, data) {
    return this._command({ type: "publish", channel, data });
  }

  /** The members of `channel`: `[{user, info}]`. */
  async presence(channel) {
    return (await this._command({ type: "presence", channel })).members;
  }

  /**
   * Call the server's RPC method `method` with `params` (any JSON); resolves with its result,
   * rejects with a SwitchboardError (`forbidden`, `internal`, `not_found`, `disconnected`: it may
   * have run) as the server or the connection answered.
   */
  async rpc(method, params = null) {
    return (await this._command({ type: "rpc", method, params })).data;
  }

  /** Stop for good: close the socket, stop retrying, reject whatever is still waiting. */
  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    const ws = this._ws;
    if (ws) {
      this._detach(ws);
      ws.close(1000);
    }
    this._failPending(() => true, "closed", "the client was closed");
    this._setState("disconnected", { code: 1000, reason: "closed by the client", retryIn: null });
  }

  // -- the connection --------------------------------------------------------------------------

  async _open() {
    if (this._closed) return;
    this._setState("connecting", { attempt: this._failures + 1 });
    let ws;
    try {
      const { token } = this.options;
      const value = typeof token === "function" ? await token() : token;
      if (this._closed) return;
      const query = value ? `${this.url.includes("?") ? "&" : "?"}token=${encodeURIComponent(value)}` : "";
      ws = new this._WebSocket(this.url + query);
    } catch (error) {
      this._retry(null, `could not start a connection: ${error.message}`);
      return;
    }
    this._ws = ws;
    this._heardAt = Date.now();
    ws.onmessage = (event) => this._receive(ws, event.data);
    ws.onclose = (event) => this._lost(ws, event.code, event.reason || "connection closed");
    ws.onerror = () => {}; // a close event always follows, and says more
    this._watch(ws);
  }

  /**
   * Liveness: when nothing has arrived for pingInterval, ping; when still nothing has arrived
   * pingTimeout later, the connection is dead even if the socket has not noticed (a sleeping
   * laptop, a dropped NAT entry). A handshake that hangs is caught the same way.
   */
  _watch(ws) {
    const { pingInterval, pingTimeout } = this.options;
    const quiet = Date.now() - this._heardAt;
    if (quiet >= pingInterval + pingTimeout) {
      this._lost(ws, 4000, `nothing received for ${quiet} ms, not even a reply to a ping`);
      return;
    }
    if (quiet >= pingInterval && ws.readyState === OPEN) ws.send('{"type":"ping"}');
    const wait = quiet >= pingInterval ? pingInterval + pingTimeout - quiet : pingInterval - quiet;
    this._timer = setTimeout(() => this._watch(ws), wait);
  }

  _receive(ws, text) {
    this._heardAt = Date.now();
    const frame = JSON.parse(text);
    switch (frame.type) {
      case "welcome":
        this._welcome(frame);
        break;
      case "reply":
        this._settle(frame.id, null, frame.result);
        break;
      case "error": {
        if (frame.id === null && frame.code === "unrecoverable" && frame.channel) {
          this._messagesLost(frame.channel);
          break;
        }
        const error = new SwitchboardError(frame.code, frame.message);
        if (frame.id === null) this._emit("error", error);
        else this._settle(frame.id, error);
        break;
      }
      case "message":
        this._deliver(frame);
        break;
      case "join":
      case "leave":
        this._emit(frame.type, { channel: frame.channel, member: frame.member });
        break;
    }
  }

  _welcome(frame) {
    this._failures = 0;
    this.user = frame.user;
    this._setState("connected", { user: frame.user, client: frame.client });
    // Subscriptions first, so queued publishes to those channels come back to us as well.
    for (const entry of this._channels.values()) this._subscribeOnServer(entry);
    for (const command of this._pending.values()) {
      if (!command.sent) this._transmit(command);
    }
  }

  _lost(ws, code, reason) {
    if (ws !== this._ws) return;
    this._detach(ws);
    // A socket found dead may still be open as far as it knows; nothing more will be read from it.
    if (ws.readyState <= OPEN) ws.close();
    for (const entry of this._channels.values()) entry.onServer = false;
    // Commands already on the wire may or may not have run; the caller must decide to retry.
    this._failPending((command) => command.sent, "disconnected", `connection lost before the reply (${reason})`);
    this._retry(code, reason);
  }

  _detach(ws) {
    clearTimeout(this._timer);
    ws.onmessage = ws.onclose = null;
    this._ws = null;
  }

  _retry(code, reason) {
    if (this._closed) return;
    const { minDelay, maxDelay } = this.options;
    const within = restartWindow(code, reason);
    let retryIn;
    if (within !== null) {
      // A draining server (1012) says within how long to come back: a random moment in it (full
      // jitter), so the clients of one batch reach the other servers at an even pace.
      retryIn = Math.round(within * Math.random());
      this._failures = 0;
    } else {
      const ceiling = Math.min(maxDelay, minDelay * 2 ** this._failures);
      // Jitter spreads the tabs a restart disconnected at once, so they do not return at once.
      retryIn = Math.round(ceiling * (0.5 + Math.random() / 2));
      this._failures += 1;
    }
    this._setState("disconnected", { code, reason, retryIn });
    this._timer = setTimeout(() => this._open(), retryIn);
  }

  _setState(state, detail) {
    this.state = state;
    this._emit(state, detail);
  }

  _emit(type, detail) {
    for (const listener of [...(this._listeners.get(type) ?? [])]) {
      try {
        listener(detail);
      } catch (error) {
        reportLater(error);
      }
    }
  }

  // -- commands --------------------------------------------------------------------------------

  /** Send a command; `onReply(result)`, if given, runs as the reply is read, before what follows it. */
  _command(message, onReply = null) {
    if (this._closed) return Promise.reject(new SwitchboardError("closed", "the client was closed"));
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const command = { frame: JSON.stringify({ ...message, id }), sent: false, resolve, reject, onReply };
      command.timer = setTimeout(() => {
        const where = command.sent ? "sent, no reply" : "still waiting for a connection";
        this._settle(id, new SwitchboardError("timeout", `${message.type}: ${where} after ${this.options.timeout} ms`));
      }, this.options.timeout);
      this._pending.set(id, command);
      if (this.state === "connected") this._transmit(command);
    });
  }

  _transmit(command) {
    this._ws.send(command.frame);
    command.sent = true;
  }

  _settle(id, error, result) {
    const command = this._pending.get(id);
    if (!command) return; // a reply after its timeout, or to our own ping
    this._pending.delete(id);
    clearTimeout(command.timer);
    if (error) {
      command.reject(error);
      return;
    }
    command.onReply?.(result);
    command.resolve(result);
  }

  _failPending(which, code, message) {
    for (const [id, command] of this._pending) {
      if (which(command)) this._settle(id, new SwitchboardError(code, message));
    }
  }

  // -- channels --------------------------------------------------------------------------------

  async _subscribeOnServer(entry) {
    const resumed = entry.epoch !== null;
    const command = { type: "subscribe", channel: entry.name };
    if (entry.offset !== null) command.since = entry.offset;
    if (entry.epoch !== null) command.epoch = entry.epoch;
    const current = () => this._channels.get(entry.name) === entry;
    entry.onServer = true;
    // Taken as the reply is read, not when `await` resumes: the messages that follow it in the
    // same read belong to its epoch, and the page must hear `recovered` before them.
    const subscribed = (result) => {
      if (!current()) return;
      // Messages after `since` follow this reply and advance the offset. Without a `since`, or in a
      // new epoch whose offsets restarted, the reply's offset is where this subscription begins.
      if (entry.offset === null || (entry.epoch !== null && entry.epoch !== result.epoch)) entry.offset = result.offset;
      entry.epoch = result.epoch;
      entry.resolve(result);
      this._emit("subscribed", { ...result, resumed });
    };
    try {
      await this._command(command, subscribed);
    } catch (error) {
      if (!current()) return;
      if (error.code === "disconnected") return; // subscribed again on reconnect
      this._channels.delete(entry.name);
      entry.reject(error);
      if (error.code !== "closed") this._emit("error", error);
    }
  }

  /**
   * The server lost messages of `name` on their way to it, and ended the subscription: subscribe
   * again from the last offset seen, so that the "subscribed" event's `recovered` says whether the
   * page must reload history, as after a reconnect.
   */
  _messagesLost(name) {
    const entry = this._channels.get(name);
    if (entry && entry.onServer) this._subscribeOnServer(entry);
  }

  _deliver(frame) {
    const entry = this._channels.get(frame.channel);
    if (!entry) return; // unsubscribed while this was on its way
    // Never backwards: a new epoch's held messages may follow a reply that already counted them.
    entry.offset = Math.max(entry.offset, frame.offset);
    const { channel, offset, from, data } = frame;
    const message = { channel, offset, epoch: entry.epoch, from, data };
    for (const handler of [...entry.handlers]) {
      try {
        handler(data, message);
      } catch (error) {
        reportLater(error);
      }
    }
  }

  /** Resolves once the server has forgotten the channel (at once when a socket loss did that). */
  async _unsubscribe(entry, handler) {
    if (!entry.handlers.delete(handler) || entry.handlers.size > 0) return;
    if (this._channels.get(entry.name) === entry) this._channels.delete(entry.name);
    entry.reject(new SwitchboardError("unsubscribed", `unsubscribed from ${entry.name} before the reply`));
    if (!entry.onServer) return;
    try {
      await this._command({ type: "unsubscribe", channel: entry.name });
    } catch (error) {
      if (error.code !== "disconnected" && error.code !== "closed") throw error; // both forget it too
    }
  }
}
