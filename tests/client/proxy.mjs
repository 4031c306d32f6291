/**
 * A TCP proxy in front of a real server, so a test can do to the client what networks do: cut
 * every connection, refuse new ones, go silent, or put a different (restarted) server behind it.
 */
import net from "node:net";

export class Proxy {
  constructor(target) {
    this.target = new URL(target);
    this.port = 0;
    this.pairs = new Set(); // [client socket, upstream socket]
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** Accept connections (again, on the same port after refuse()). */
  async accept() {
    this.server = net.createServer((client) => this._pipe(client));
    await new Promise((resolve) => this.server.listen(this.port, "127.0.0.1", resolve));
    this.port = this.server.address().port;
  }

  /** Stop accepting: new connections are refused, open ones carry on. */
  refuse() {
    this.server.close();
  }

  /** Drop every open connection without a close frame, as a network failure would. */
  cut() {
    for (const pair of this.pairs) for (const socket of pair) socket.destroy();
    this.pairs.clear();
  }

  /** Stop forwarding on the open connections: both ends see an open socket and silence. */
  freeze() {
    for (const pair of this.pairs) {
      for (const socket of pair) {
        socket.unpipe();
        socket.pause();
      }
    }
  }

  /** Send new connections to another server, like a restart that came back elsewhere. */
  retarget(target) {
    this.target = new URL(target);
  }

  close() {
    this.cut();
    this.server.close();
  }

  _pipe(client) {
    const upstream = net.connect(Number(this.target.port), this.target.hostname);
    const pair = [client, upstream];
    this.pairs.add(pair);
    for (const socket of pair) {
      // Either side ending ends both: the proxy must not hide a close from anyone.
      socket.on("error", () => this._end(pair));
      socket.on("close", () => this._end(pair));
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  _end(pair) {
    for (const socket of pair) socket.destroy();
    this.pairs.delete(pair);
  }
}
