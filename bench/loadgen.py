"""The load generator: one process, one `select.epoll`, raw non-blocking sockets, raw frames.

What it is for: opening thousands of WebSocket connections to one server, subscribing them,
publishing the fixed-width messages of bench/PROTOCOL.md, and counting every delivery with its
publish-to-delivery latency, while spending far less CPU than the server it measures.

What it must never do: use a WebSocket library (every server is driven by the same bytes),
block, or create Python objects per delivered frame on the fast path.

How it stays cheap:
* Publish frames are built once per batch with a constant 4-byte mask, and the 19 time digits
  are patched into the already-masked bytes right before the single `send()`.
* Every delivery frame of a run has the same length L and starts with the same bytes (the frame
  header, which includes the length, and the first payload bytes), because the payload is fixed
  width. When one `recv_into()` of a subscribed connection returns k*L bytes that start (and
  whose last L-block starts) with that prefix, and the prefix occurs exactly k times, it is k
  deliveries: counted without parsing. The prefix begins with 0x81, which cannot occur inside
  the ASCII payload, so the check is exact. Latency is read from the `t` digits at a fixed
  offset inside each L-block.
* Anything else (a handshake, a reply, a ping, a partial frame, a frame of another length,
  compressed frames) goes through the slow path: a plain RFC 6455 frame parser. It also learns
  L, the prefix and the `t` offset from the first delivery, and relearns them if the server's
  frames change length (e.g. a growing `offset` field).
"""

from __future__ import annotations

import array
import base64
import errno
import hashlib
import os
import random
import re
import resource
import select
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLERR = select.EPOLLERR
EPOLLHUP = select.EPOLLHUP

# Connection states, in the order a connection goes through them.
CONNECTING, HANDSHAKE, SIO_OPEN, SIO_CONNECT, OPEN, SUBSCRIBING, SUBSCRIBED, CLOSED = range(8)
PUSHER_OPEN = 8  # dialect "pusher": upgraded, waiting for pusher:connection_established

SUB, PUB, PLAIN = "sub", "pub", "plain"  # roles: subscriber, publisher, bare connection

MASK = b"\x37\xfa\x21\x3d"  # constant client mask: allowed for a benchmark client, see module doc
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the RFC 6455 sample key; the answer is checked once
ACCEPT = base64.b64encode(hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
ACCEPT_B = ACCEPT.encode()
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
DEFLATE_TAIL = b"\x00\x00\xff\xff"
T_RE = re.compile(rb'"t":\s*(\d{19})')
EPOCH_RE = re.compile(rb'"epoch":\s*"([^"]{1,64})","offset":\s*(\d{1,20})')
# Dialect "pusher": the data is a JSON string inside the message, so its quotes are escaped.
PUSHER_T_RE = re.compile(rb'\\"t\\":(\d{19})')
# Chat dialects: the payload comes back as it was sent, or as a JSON string inside an envelope.
CHAT_T_RE = re.compile(rb'\\?"t\\?":\s*(\d{19})')
# Dialects of pub/sub servers (a subscribe command, a publish command: bench/PROTOCOL.md), of chats
# (every connection gets every message; what is sent is the payload itself) and of echo apps.
PUBSUB_DIALECTS = ("json", "socketio", "graphql", "pusher")
CHAT_DIALECTS = ("chat", "socketio-chat")
DIALECTS = (*PUBSUB_DIALECTS, *CHAT_DIALECTS, "echo")
PUSHER_KEY = "bench"  # the app key bench/peers/registry.py gives the switchboard-pusher peer
ERROR_CODE_RE = re.compile(rb'"code":\s*"([^"]{1,40})"')
PUBLISH_SIZE = 100  # bytes of the publish command's payload (PROTOCOL.md: "about 100 bytes")
CHANNEL_WIDTH = 6  # channel names are "c%05d": fixed width keeps every delivery the same length
RECV_SIZE = 1 << 18
NAP = float(os.environ.get("BENCH_NAP_US", "0")) / 1e6  # see LoadGen.poll
NAP_BELOW = 8


def _header(head: bytes, name: bytes) -> str:
    """The value of header `name` (lower case) in a response head, or "" if absent."""
    low = head.lower()
    i = low.find(b"\r\n" + name + b":")
    if i < 0:
        return ""
    i += len(name) + 3
    j = head.find(b"\r\n", i)
    return head[i : j if j >= 0 else len(head)].decode("latin-1").strip()


def channel_name(i: int) -> str:
    return f"c{i:05d}"


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; child processes inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def xor_mask(data: bytes, offset: int = 0) -> bytes:
    """`data` masked with MASK, as if it started at byte `offset` of a frame payload."""
    n = len(data)
    if not n:
        return b""
    k = offset % 4
    key = (MASK[k:] + MASK[:k]) * (n // 4 + 1)
    return (int.from_bytes(data, "big") ^ int.from_bytes(key[:n], "big")).to_bytes(n, "big")


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One masked, final client frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    return head + MASK + xor_mask(payload)


CLOSE_FRAME = client_frame(b"\x03\xe8", 8)
LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
PUSHER_PONG = client_frame(b'{"event":"pusher:pong","data":{}}')
SIO_PONG = client_frame(b"3")
SIO_CONNECT_FRAME = client_frame(b"40")

# Dialect `graphql` (bench/PROTOCOL.md): subscribers speak graphql-transport-ws on /graphql, each
# with the same operation id so that every delivery frame has the same bytes; the publisher and
# echo speak the native protocol on /ws.
GQL_PATH = "/graphql"
GQL_SUBPROTOCOL = "graphql-transport-ws"
GQL_ACKING = PUSHER_OPEN + 1  # dialect graphql: connection_init sent, waiting for connection_ack
GQL_INIT_FRAME = client_frame(b'{"type":"connection_init"}')
# A ping after the subscribe: its pong means the subscription is live (the protocol has no reply).
GQL_PING_FRAME = client_frame(b'{"type":"ping"}')
GQL_SUBSCRIBE = (
    b'{"id":"1","type":"subscribe","payload":{"query":'
    b'"subscription($c: String!) { messages(channel: $c) { offset data } }","variables":{"c":"%s"}}}'
)


class Timeout(Exception):
    """A phase did not finish before its deadline."""


class Conn:
    __slots__ = (  # noqa: RUF023 -- grouped by purpose, not sorted
        "sock",
        "fd",
        "state",
        "role",
        "channel",
        "pending",
        "wbuf",
        "got",
        "deflate",
        "no_ctx",
        "wbits",
        "inflater",
        "frag",
        "frag_op",
        "frag_rsv1",
        "hs",
        "t0",
        "t_ready",
        "closing",
        "fast",
        "recv",
    )

    def __init__(self, sock: socket.socket, role: str, channel: str | None) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.state = CONNECTING
        self.role = role
        self.channel = channel
        self.pending: bytes | None = None  # unparsed tail of received bytes
        self.wbuf: bytearray | None = None  # unsent bytes, when the socket was full
        self.got = 0  # deliveries counted on this connection
        self.deflate = False  # permessage-deflate negotiated
        self.no_ctx = False  # server_no_context_takeover agreed
        self.wbits = 15
        self.inflater = None
        self.frag: list[bytes] | None = None
        self.frag_op = 0
        self.frag_rsv1 = 0
        self.hs = b""  # handshake response read so far
        self.t0 = 0  # connect() time, ns
        self.t_ready = 0
        self.closing = False
        self.fast = False  # a plain subscribed connection with nothing left over: fast path
        self.recv = sock.recv_into


@dataclass
class OpenResult:
    conns: list[Conn]
    elapsed: float  # seconds from the first connect() to the last connection ready
    failed: int  # connections that never got ready (refused, bad handshake, timeout)
    errors: dict[str, int] = field(default_factory=dict)


class LoadGen:
    """Connections to one server, in one epoll set. Single-threaded; not thread-safe."""

    def __init__(
        self,
        port: int,
        dialect: str = "json",
        host: str = "127.0.0.1",
        deflate: bool = False,
        prefix: str = "",
        route: str = "",
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}")
        self.addr = (host, port)
        self.host = host
        self.port = port
        self.dialect = dialect
        # Where a server mounts its WebSocket routes (Switchboard as an extension under a URL prefix).
        self.path_prefix = prefix
        # The one WebSocket path of a chat or echo app (dialects "chat" and "echo").
        self.route = route
        self.sio = dialect in ("socketio", "socketio-chat")  # Engine.IO and Socket.IO framing
        self.chat = dialect in CHAT_DIALECTS
        self.t_re = {"pusher": PUSHER_T_RE, "chat": CHAT_T_RE}.get(dialect, T_RE)
        self._pusher_greeting = False
        self.offer_deflate = deflate
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.by_fd: list[Conn | None] = [None] * 1024  # the same, indexed by fd (fast path)
        self.buf = bytearray(RECV_SIZE)
        # What one delivery frame looks like; learned from the first one (slow path).
        self.L = 1 << 40  # frame length; huge until learned, so `n % L == n` fails the fast path
        self.prefix = b"\xff"  # frame header + first payload bytes; never matches until learned
        self.toff = 0  # offset of the 19 `t` digits inside a frame
        self.lat_on = True
        self.lat = array.array("q")  # latencies in ns, one per delivery while lat_on
        self.delivered = 0
        self.first_ns = 0  # first and last delivery arrival, ns (time.time_ns clock)
        self.last_ns = 0
        self.dropped = 0
        self.errors: dict[str, int] = {}
        self.opening = 0
        self.ready: list[Conn] = []
        self.failed_open = 0
        self.handshakes = 0  # 101 answers received
        self.deflate_accepted = 0  # of which agreed to permessage-deflate
        self.seq = 0
        self.nap = NAP
        self._templates: dict[str, tuple[bytes, int, int]] = {}
        self._inflate_cache: dict[bytes, bytes] = {}
        # The (epoch, offset) each channel's first subscribe reply named (servers that have them),
        # and the position new subscriptions resume from (`resume_from`): extra subscribe fields.
        self.positions: dict[str, tuple[bytes, int]] = {}
        self._resume: dict[str, bytes] = {}

    # ---------------------------------------------------------------- bookkeeping

    def reset_counts(self) -> None:
        """Forget deliveries and latencies (before a measured phase)."""
        self.delivered = 0
        self.first_ns = self.last_ns = 0
        self.lat = array.array("q")

    def _error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def _drop(self, c: Conn, reason: str) -> None:
        """The connection is gone: count it as dropped, or as a failed open if not ready yet."""
        if c.state == CLOSED:
            return
        if not c.closing:
            if c.t_ready:
                self.dropped += 1
                self._error("dropped: " + reason)
            else:
                self.opening -= 1
                self.failed_open += 1
                self._error("open failed: " + reason)
        c.state = CLOSED
        c.fast = False
        self.conns.pop(c.fd, None)
        self.by_fd[c.fd] = None
        try:
            self.ep.unregister(c.fd)
        except (OSError, ValueError):
            pass
        c.sock.close()

    def track(self, c: Conn) -> None:
        """Make `c` one of ours (its events are looked up by fd)."""
        if c.fd >= len(self.by_fd):
            self.by_fd.extend([None] * (c.fd + 1024 - len(self.by_fd)))
        self.by_fd[c.fd] = c
        self.conns[c.fd] = c

    def _ready(self, c: Conn) -> None:
        c.t_ready = time.monotonic_ns()
        self.opening -= 1
        self.ready.append(c)

    # ---------------------------------------------------------------- sending

    def _send(self, c: Conn, data: bytes) -> None:
        if c.state == CLOSED:
            return
        if c.wbuf is not None:
            c.wbuf += data
            return
        try:
            sent = c.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._drop(c, "send: " + (errno.errorcode.get(exc.errno or 0) or str(exc)))
            return
        if sent < len(data):
            c.wbuf = bytearray(data[sent:])
            self.ep.modify(c.fd, EPOLLIN | EPOLLOUT)

    def _flush(self, c: Conn) -> None:
        try:
            sent = c.sock.send(c.wbuf)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop(c, "send: " + (errno.errorcode.get(exc.errno or 0) or str(exc)))
            return
        del c.wbuf[:sent]
        if not c.wbuf:
            c.wbuf = None
            self.ep.modify(c.fd, EPOLLIN)

    # ---------------------------------------------------------------- opening

    def default_path(self, echo: bool = False, role: str = SUB) -> str:
        if self.dialect == "graphql":
            return "/ws/echo" if echo else GQL_PATH
        if self.dialect == "pusher" and not echo:
            return pusher_path(role)
        if self.sio:
            return "/socket.io/?EIO=4&transport=websocket"
        if self.dialect in ("chat", "echo"):
            return self.route
        return self.path_prefix + ("/ws/echo" if echo else "/ws")

    def _request(self, path: str) -> bytes:
        return handshake_request(self.host, self.port, path, self.offer_deflate)

    def _start(self, role: str, channel: str | None) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = Conn(sock, role, channel)
        c.t0 = time.monotonic_ns()
        self.opening += 1
        self.track(c)
        err = sock.connect_ex(self.addr)
        if err not in (0, errno.EINPROGRESS):
            self.ep.register(c.fd, EPOLLIN)
            self._drop(c, "connect: " + errno.errorcode.get(err, str(err)))
            return
        self.ep.register(c.fd, EPOLLOUT)

    def _connected(self, c: Conn) -> None:
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._drop(c, "connect: " + errno.errorcode.get(err, str(err)))
            return
        c.state = HANDSHAKE
        self.ep.modify(c.fd, EPOLLIN)
        self._send(c, self._req)

    def _handshake(self, c: Conn, data: bytes, now: int) -> None:
        c.hs += data
        end = c.hs.find(b"\r\n\r\n")
        if end < 0:
            if len(c.hs) > 16384:
                self._drop(c, "handshake: response too long")
            return
        head, rest = c.hs[:end], c.hs[end + 4 :]
        c.hs = b""
        if not (head.startswith(b"HTTP/1.") and head[8:13] in (b" 101 ", b" 101")):
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            self._drop(c, "handshake: " + line[:60])
            return
        if ACCEPT_B not in head:  # the value is exact; only the header name's case may vary
            self._drop(c, "handshake: bad Sec-WebSocket-Accept")
            return
        self.handshakes += 1
        ext = _header(head, b"sec-websocket-extensions")
        if ext:
            params = [p.strip() for p in ext.split(";")]
            if params[0] != "permessage-deflate" or not self.offer_deflate:
                self._drop(c, "handshake: unexpected extension " + ext[:60])
                return
            c.deflate = True
            self.deflate_accepted += 1
            for p in params[1:]:
                name, _, value = p.partition("=")
                if name == "server_no_context_takeover":
                    c.no_ctx = True
                elif name == "server_max_window_bits" and value:
                    c.wbits = int(value.strip('"'))
        if self.sio:
            c.state = SIO_OPEN
        elif self._pusher_greeting:
            c.state = PUSHER_OPEN
        else:
            self._opened(c)
        if rest:
            self._feed(c, rest, now)

    def _opened(self, c: Conn) -> None:
        """The WebSocket (and Socket.IO namespace) is open: subscribe, or be ready."""
        if c.role == SUB and self.dialect == "graphql":
            c.state = GQL_ACKING
            self._send(c, GQL_INIT_FRAME)
        elif c.role == SUB and self.chat:
            # A chat has no subscribe: the app adds the connection to its members on its own.
            # `await_members` checks it has (bench/PROTOCOL.md, dialect "chat").
            c.state = SUBSCRIBED
            self._ready(c)
        elif c.role == SUB:
            c.state = SUBSCRIBING
            self._send(c, self._subscribe_frame(c.channel))
        else:
            c.state = OPEN
            self._ready(c)

    def _subscribe_frame(self, channel: str | None) -> bytes:
        if self.dialect == "pusher":
            return client_frame(b'{"event":"pusher:subscribe","data":{"channel":"%s"}}' % channel.encode())
        if self.dialect == "socketio":
            return client_frame(b'421["subscribe","%s"]' % channel.encode())
        resume = self._resume.get(channel, b"")
        return client_frame(b'{"type":"subscribe","channel":"%s","id":1%s}' % (channel.encode(), resume))

    def resume_from(self, seen: int) -> None:
        """Subscribe from now on with `since` = the offset each channel's first subscribe reply
        named plus `seen` (messages every subscriber has had since), and the channel's epoch:
        protocols with recovery replay what came after it; others ignore both fields."""
        self._resume = {
            ch: b',"since":%d,"epoch":"%s"' % (offset + seen, epoch) for ch, (epoch, offset) in self.positions.items()
        }

    def _prepare(self, role: str, path: str | None) -> None:
        """The handshake request new connections of `role` send, and what they wait for after it."""
        if self.dialect == "graphql":
            self._req = self._graphql_request(role, path)
            self._pusher_greeting = False
        else:
            path = path or self.default_path(role=role)
            self._req = self._request(path)
            self._pusher_greeting = path.startswith("/app/")  # Pusher connections wait for their greeting

    def open_spread(self, n: int, channels: list[str], window: float, timeout: float) -> OpenResult:
        """Open `n` subscribers, each starting at a random moment within `window` seconds, as
        clients with jittered backoff come back after a drop; `elapsed` ends at the last ready."""
        self._prepare(SUB, None)
        self.ready = []
        self.failed_open = 0
        errors_before = dict(self.errors)
        starts = sorted(random.Random(n).uniform(0, window) for _ in range(n))
        t_start = time.monotonic()
        deadline = t_start + timeout
        started = 0
        while len(self.ready) + self.failed_open < n and time.monotonic() < deadline:
            now = time.monotonic() - t_start
            while started < n and starts[started] <= now:
                self._start(SUB, channels[started % len(channels)])
                started += 1
            self.poll(0.002)
        last = max((c.t_ready for c in self.ready), default=0)
        for c in [c for c in self.conns.values() if not c.t_ready]:
            self._drop(c, "timeout")
        errors = {k: v - errors_before.get(k, 0) for k, v in self.errors.items()}
        elapsed = last / 1e9 - t_start if last else 0.0  # monotonic_ns and monotonic share a clock
        return OpenResult(list(self.ready), elapsed, self.failed_open, {k: v for k, v in errors.items() if v})

    def open(
        self,
        n: int,
        role: str = SUB,
        channels: list[str] | None = None,
        path: str | None = None,
        in_flight: int = 200,
        timeout: float = 60.0,
    ) -> OpenResult:
        """Open `n` connections with at most `in_flight` not yet ready at any time.

        Subscribers are ready once their subscription is confirmed; connection i subscribes to
        channels[i % len(channels)]. Connections not ready by `timeout` are closed and counted in
        `failed`.
        """
        self._prepare(role, path)
        channels = channels or [channel_name(0)]
        self.ready = []
        self.failed_open = 0
        errors_before = dict(self.errors)
        started = 0
        t_start = time.monotonic()
        deadline = t_start + timeout
        while len(self.ready) + self.failed_open < n:
            while started < n and self.opening < in_flight:
                self._start(role, channels[started % len(channels)] if role == SUB else None)
                started += 1
            if time.monotonic() > deadline:
                break
            self.poll(0.05)
        elapsed = time.monotonic() - t_start
        late = [c for c in self.conns.values() if not c.t_ready]
        for c in late:
            self._drop(c, "timeout")
        errors = {k: v - errors_before.get(k, 0) for k, v in self.errors.items()}
        return OpenResult(list(self.ready), elapsed, self.failed_open, {k: v for k, v in errors.items() if v})

    # ---------------------------------------------------------------- the event loop

    def poll(self, timeout: float, nap: float = 0.0) -> None:
        """Wait up to `timeout` seconds for events and handle them all.

        With `nap`, sleep that long afterwards if only a few events came: the next poll then
        collects a batch instead of waking once per frame (fewer wakeups for both sides; the
        delay it adds to a measured latency is at most about `nap`).
        """
        # Everything the fast path touches is a local; the counters are written back at the
        # end (and around each slow-path call, which updates them itself).
        by_fd = self.by_fd
        buf = self.buf
        prefix = self.prefix
        L = self.L
        toff = self.toff
        lat_append = self.lat.append if self.lat_on else None
        time_ns = time.time_ns
        delivered = self.delivered
        first = last = 0
        events = self.ep.poll(timeout, 4096)
        for fd, ev in events:
            c = by_fd[fd]
            if c is None:
                continue
            if ev != EPOLLIN or not c.fast:
                self.delivered = delivered
                self._slow_event(c, ev)
                delivered = self.delivered
                prefix, L, toff = self.prefix, self.L, self.toff
                continue
            try:
                n = c.recv(buf)
            except BlockingIOError:
                continue
            except OSError as exc:
                self._drop(c, "recv: " + (errno.errorcode.get(exc.errno or 0) or str(exc)))
                continue
            if n == 0:
                self._drop(c, "eof")
                continue
            now = time_ns()
            # Fast path: exactly k whole delivery frames (see the module docstring).
            if n % L == 0 and buf.startswith(prefix, 0, n):
                k = n // L
                if k == 1 or (buf.startswith(prefix, n - L, n) and buf.count(prefix, 0, n) == k):
                    c.got += k
                    delivered += k
                    last = now
                    if not first:
                        first = now
                    if lat_append is not None:
                        for off in range(toff, n, L):
                            lat_append(now - int(buf[off : off + 19]))
                    continue
            self.delivered = delivered
            self._feed(c, bytes(buf[:n]), now)
            delivered = self.delivered
            prefix, L, toff = self.prefix, self.L, self.toff
        self.delivered = delivered
        if first:
            if not self.first_ns or first < self.first_ns:
                self.first_ns = first
            if last > self.last_ns:
                self.last_ns = last
        if nap and len(events) < NAP_BELOW:
            time.sleep(nap)

    def _slow_event(self, c: Conn, ev: int) -> None:
        if c.state == CONNECTING:
            if ev & (EPOLLOUT | EPOLLERR | EPOLLHUP):
                self._connected(c)
            return
        if ev & EPOLLOUT and c.wbuf is not None:
            self._flush(c)
            if c.state == CLOSED:
                return
        if ev & (EPOLLIN | EPOLLERR | EPOLLHUP):
            try:
                data = c.sock.recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                self._drop(c, "recv: " + (errno.errorcode.get(exc.errno or 0) or str(exc)))
                return
            if not data:
                self._drop(c, "eof")
                return
            now = time.time_ns()
            if c.state == HANDSHAKE:
                self._handshake(c, data, now)
            else:
                self._feed(c, data, now)

    def _feed(self, c: Conn, data: bytes, now: int) -> None:
        """The slow path: parse whole frames out of `data` (plus what was left over)."""
        if c.pending is not None:
            data = c.pending + data
            c.pending = None
        pos = 0
        n = len(data)
        while n - pos >= 2 and c.state != CLOSED:
            b0 = data[pos]
            b1 = data[pos + 1]
            ln = b1 & 0x7F
            h = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 4], "big")
                h = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 10], "big")
                h = 10
            if b1 & 0x80:
                self._drop(c, "protocol: masked server frame")
                return
            end = pos + h + ln
            if end > n:
                break
            self._frame(c, b0, data, pos, pos + h, end, now)
            pos = end
        if pos < n and c.state != CLOSED:
            c.pending = data[pos:]
        c.fast = c.state == SUBSCRIBED and c.pending is None and not c.deflate

    def _frame(self, c: Conn, b0: int, data: bytes, start: int, pstart: int, end: int, now: int) -> None:
        op = b0 & 0x0F
        fin = b0 & 0x80
        payload = data[pstart:end]
        if op >= 8:  # control frames are never fragmented
            if op == 9:
                self._send(c, client_frame(payload, 10))
            elif op == 8:
                self._drop(
                    c,
                    "server closed " + (str(int.from_bytes(payload[:2], "big")) if len(payload) >= 2 else ""),
                )
            return
        raw_len = 0  # set when this frame alone is one uncompressed message
        if op == 0:
            if c.frag is None:
                self._drop(c, "protocol: continuation without a start")
                return
            c.frag.append(payload)
            if not fin:
                return
            payload = b"".join(c.frag)
            rsv1 = c.frag_rsv1
            c.frag = None
        elif not fin:
            c.frag = [payload]
            c.frag_op = op
            c.frag_rsv1 = b0 & 0x40
            return
        else:
            rsv1 = b0 & 0x40
            raw_len = 0 if rsv1 else end - start
        if rsv1:
            if not c.deflate:
                self._drop(c, "protocol: RSV1 without permessage-deflate")
                return
            payload = self._inflate(c, payload)
        self._message(c, payload, data, start, raw_len, now)

    def _inflate(self, c: Conn, payload: bytes) -> bytes:
        if c.no_ctx:
            # Without context takeover every connection gets the same compressed bytes for the
            # same message, so inflate each distinct message once.
            out = self._inflate_cache.get(payload)
            if out is None:
                if len(self._inflate_cache) > 4096:
                    self._inflate_cache.clear()
                out = zlib.decompressobj(-c.wbits).decompress(payload + DEFLATE_TAIL)
                self._inflate_cache[payload] = out
            return out
        if c.inflater is None:
            c.inflater = zlib.decompressobj(-c.wbits)
        return c.inflater.decompress(payload + DEFLATE_TAIL)

    def _message(self, c: Conn, text: bytes, data: bytes, start: int, raw_len: int, now: int) -> None:
        """One complete message: a delivery, a reply, or protocol housekeeping."""
        if c.role == SUB:
            m = self.t_re.search(text)
            if m is not None and self._is_delivery(text):
                c.got += 1
                self.delivered += 1
                if not self.first_ns:
                    self.first_ns = now
                self.last_ns = now
                if self.lat_on:
                    self.lat.append(now - int(m.group(1)))
                if raw_len and raw_len != self.L:
                    # Learn (or relearn) what a delivery frame looks like, for the fast path.
                    hlen = raw_len - len(text)
                    self.L = raw_len
                    self.prefix = data[start : start + hlen + 12]
                    self.toff = hlen + m.start(1)
                return
        if c.role == PUB and b'"error"' in text:
            # The server refused a publish (e.g. a rate limit): deliveries will be missing.
            m = ERROR_CODE_RE.search(text)
            self._error("publish refused: " + (m.group(1).decode() if m else text[:60].decode()))
            return
        if self.dialect == "pusher" and c.role != PUB:
            self._pusher_message(c, text)
        elif self.sio:
            if text == b"2":  # Engine.IO ping
                self._send(c, SIO_PONG)
            elif c.state == SIO_OPEN and text.startswith(b"0{"):
                c.state = SIO_CONNECT
                self._send(c, SIO_CONNECT_FRAME)
            elif c.state == SIO_CONNECT and text.startswith(b"40"):
                self._opened(c)
            elif c.state == SUBSCRIBING and text.startswith(b"43"):
                c.state = SUBSCRIBED
                self._ready(c)
            elif text.startswith((b"41", b"44")):
                self._drop(c, "socket.io: " + text[:60].decode("utf-8", "replace"))
            elif text == b"1":
                self._drop(c, "engine.io close")
        elif self.dialect == "graphql":
            self._graphql_message(c, text)
        elif c.state == SUBSCRIBING:
            if b'"reply"' in text:
                c.state = SUBSCRIBED
                if c.channel not in self.positions:
                    m = EPOCH_RE.search(text)
                    if m is not None:
                        self.positions[c.channel] = (m.group(1), int(m.group(2)))
                self._ready(c)
            elif b'"error"' in text:
                self._drop(c, "subscribe refused: " + text[:80].decode("utf-8", "replace"))

    # ---------------------------------------------------------------- the graphql dialect

    def _graphql_request(self, role: str, path: str | None) -> bytes:
        """Subscribers (and bare connections) on /graphql with the subprotocol; the publisher on /ws."""
        if role == PUB:
            return self._request(path or "/ws")
        path = path or GQL_PATH
        protocol = GQL_SUBPROTOCOL if path == GQL_PATH else None
        return handshake_request(self.host, self.port, path, self.offer_deflate, protocol)

    def _graphql_message(self, c: Conn, text: bytes) -> None:
        """connection_ack: subscribe (and ping); pong while subscribing: live. Errors drop."""
        if c.state == GQL_ACKING and b'"connection_ack"' in text:
            c.state = SUBSCRIBING
            self._send(c, client_frame(GQL_SUBSCRIBE % c.channel.encode()) + GQL_PING_FRAME)
        elif c.state == SUBSCRIBING and b'"pong"' in text:
            c.state = SUBSCRIBED
            self._ready(c)
        elif b'"type":"error"' in text:
            self._drop(c, "subscribe refused: " + text[:80].decode("utf-8", "replace"))

    def _is_delivery(self, text: bytes) -> bool:
        if self.sio:
            return text.startswith(b'42["message"')
        if self.dialect == "pusher":
            return text.startswith(b'{"event":"message"')
        return True

    def _pusher_message(self, c: Conn, text: bytes) -> None:
        """Dialect "pusher" (Pusher protocol 7 at /app/<key>): the greeting, the subscription's
        answer, and the server's application-level ping."""
        if c.state == PUSHER_OPEN and text.startswith(b'{"event":"pusher:connection_established"'):
            self._opened(c)
        elif c.state == SUBSCRIBING and b'"pusher_internal:subscription_succeeded"' in text:
            c.state = SUBSCRIBED
            self._ready(c)
        elif text.startswith(b'{"event":"pusher:ping"'):
            self._send(c, PUSHER_PONG)
        elif text.startswith((b'{"event":"pusher:error"', b'{"event":"pusher:subscription_error"')):
            self._drop(c, "pusher: " + text[:80].decode("utf-8", "replace"))

    # ---------------------------------------------------------------- publishing

    def _template(self, channel: str) -> tuple[bytes, int, int]:
        """The masked publish frame for `channel` with t = s = 0: (frame, header length,
        offset of the t digits in the payload)."""
        cached = self._templates.get(channel)
        if cached is not None:
            return cached
        data = b'{"t":%019d,"s":%010d,"p":"' % (0, 0)
        if self.dialect == "socketio":
            head = b'42["publish",{"channel":"%s","data":' % channel.encode()
            tail = b'"}}]'
        elif self.dialect == "socketio-chat":  # the chat message itself, as Socket.IO's `send`
            head, tail = b'42["message",', b'"}]'
        elif self.chat:  # the chat message itself, one text message
            head, tail = b"", b'"}'
        else:
            head = b'{"type":"publish","channel":"%s","data":' % channel.encode()
            tail = b'"}}'
        pad = max(1, PUBLISH_SIZE - len(head) - len(data) - len(tail))
        payload = head + data + b"x" * pad + tail
        frame = client_frame(payload)
        cached = (frame, len(frame) - len(payload), len(head) + 5)  # 5 = len('{"t":')
        self._templates[channel] = cached
        return cached

    def build_batch(self, channels: list[str]) -> tuple[bytearray, list[tuple[int, int]]]:
        """One buffer holding a publish frame per channel, each with the next sequence number.

        Returns the buffer and, per frame, (offset of its t digits in the buffer, offset of t in
        its payload). Call `stamp_and_send()` right before sending.
        """
        out = bytearray()
        toffs = []
        for ch in channels:
            frame, hlen, tp = self._template(ch)
            self.seq += 1
            s = b"%010d" % (1_000_000_000 + self.seq % 1_000_000_000)  # 10 digits, valid JSON
            sp = tp + 24  # the s digits follow the 19 t digits and ',"s":'
            frame = bytearray(frame)
            frame[hlen + sp : hlen + sp + 10] = xor_mask(s, sp)
            toffs.append((len(out) + hlen + tp, tp))
            out += frame
        return out, toffs

    def stamp_and_send(self, pub: Conn, batch: bytearray, toffs: list[tuple[int, int]]) -> int:
        """Write the current time into every frame of `batch`, send it in one call, return t."""
        t = time.time_ns()
        digits = b"%019d" % t
        masked: dict[int, bytes] = {}  # by mask phase; one entry when channels are fixed width
        for off, tp in toffs:
            m = masked.get(tp & 3)
            if m is None:
                m = masked[tp & 3] = xor_mask(digits, tp)
            batch[off : off + 19] = m
        self._send(pub, bytes(batch))
        return t

    def publish(self, pub: Conn, channels: list[str]) -> int:
        """Publish one message to each of `channels` (one send); returns the send time in ns."""
        batch, toffs = self.build_batch(channels)
        return self.stamp_and_send(pub, batch, toffs)

    # ---------------------------------------------------------------- waiting and closing

    def await_members(self, conns: list[Conn], pub: Conn, timeout: float) -> None:
        """Chat dialects: wait until the app has made every connection in `conns` a member.

        A chat adds a connection to its members in its own code after the handshake, so the
        handshake alone does not say it will get the next message. Publish one message at a time
        until one of them reaches every connection exactly once (nothing else then is in flight),
        then forget those deliveries. Other dialects confirm each subscription: nothing to do.
        """
        if not self.chat:
            return
        deadline = time.monotonic() + timeout
        while True:
            for c in conns:
                c.got = 0
            self.reset_counts()
            self.publish(pub, [channel_name(0)])
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"{sum(1 for c in conns if not c.got)} of {len(conns)} never joined the chat")
            reached = self.wait_deliveries(len(conns), min(left, 2.0))
            if reached and all(c.got == 1 for c in conns):
                break
            self.run_for(0.5)  # let that message's other deliveries arrive before the next one
        for c in conns:
            c.got = 0
        self.reset_counts()

    def wait_deliveries(self, target: int, timeout: float) -> bool:
        """Poll until `delivered` reaches `target`; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.delivered < target:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll(min(left, 0.2), self.nap)
        return True

    def run_for(self, seconds: float) -> None:
        """Keep answering pings and counting for `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.poll(min(left, 0.2))

    def close(self, conns: list[Conn]) -> None:
        """Send a close frame and close each socket (not counted as dropped)."""
        for c in conns:
            if c.state == CLOSED:
                continue
            c.closing = True
            if c.wbuf is None and c.t_ready:
                try:
                    c.sock.send(CLOSE_FRAME)
                except OSError:
                    pass
            self._drop(c, "closed by client")

    def abort(self, conns: list[Conn]) -> None:
        """Cut each connection at once, with a TCP reset and no close frame (not counted as
        dropped): the way a crashed proxy or a network blip ends them."""
        for c in conns:
            if c.state == CLOSED:
                continue
            c.closing = True
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            self._drop(c, "aborted by client")

    def close_all(self) -> None:
        self.close(list(self.conns.values()))
        self.opening = 0

    def shutdown(self) -> None:
        self.close_all()
        self.ep.close()

    def missing(self, conns: list[Conn], expected: int) -> int:
        """How many of `conns` did not get exactly `expected` deliveries."""
        return sum(1 for c in conns if c.got != expected)


def _ns_array(lat_ns):
    import numpy as np

    if isinstance(lat_ns, array.array):
        return np.frombuffer(lat_ns, dtype=np.int64)
    return np.asarray(lat_ns, dtype=np.int64)


def latency_summary(lat_ns) -> dict:
    """count, p50, p99 and max (ms) of latencies given in ns."""
    import numpy as np

    a = _ns_array(lat_ns)
    if a.size == 0:
        return {"count": 0}
    ms = a / 1e6
    return {
        "count": int(a.size),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def quantiles_ms(lat_ns, points: int = 201) -> list[float]:
    """Evenly spaced quantiles (0..100 %) of latencies given in ns, in ms: a CDF to plot."""
    import numpy as np

    a = _ns_array(lat_ns)
    if a.size == 0:
        return []
    return [float(x) for x in np.percentile(a / 1e6, np.linspace(0, 100, points))]


# -------------------------------------------------------------------- blocking helpers


def _recv_frame(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """Read one whole frame from a blocking socket; returns (first byte, payload)."""
    while True:
        if len(buf) >= 2:
            ln = buf[1] & 0x7F
            h = 2
            if ln == 126 and len(buf) >= 4:
                ln, h = int.from_bytes(buf[2:4], "big"), 4
            elif ln == 127 and len(buf) >= 10:
                ln, h = int.from_bytes(buf[2:10], "big"), 10
            if (ln < 126 or h > 2) and len(buf) >= h + ln:
                b0 = buf[0]
                payload = bytes(buf[h : h + ln])
                del buf[: h + ln]
                return b0, payload
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk


def _blocking_connection(lg: LoadGen, path: str, timeout: float):
    """One connection to `path`, taken out of the event loop and made blocking, for a sequence of
    round trips timed one at a time."""
    res = lg.open(1, role=PLAIN, path=path, timeout=timeout)
    if not res.conns:
        raise ConnectionError(f"connection to {path} failed: {res.errors}")
    c = res.conns[0]
    lg.ep.unregister(c.fd)
    lg.conns.pop(c.fd, None)
    lg.by_fd[c.fd] = None
    c.sock.setblocking(True)
    c.sock.settimeout(timeout)
    return c


def echo_rtt(lg: LoadGen, count: int, size: int = 100, timeout: float = 30.0) -> list[int]:
    """Open one connection and do `count` sequential round trips; returns RTTs in ns."""
    c = _blocking_connection(lg, lg.default_path(echo=True), timeout)
    sock = c.sock
    body = b'{"t":%019d,"s":%010d,"p":"' % (time.time_ns(), 1_000_000_000)
    if lg.dialect == "socketio":
        head, tail = b'42["echo",', b'"}]'
    else:
        head, tail = b"", b'"}'
    payload = head + body + b"x" * max(1, size - len(head) - len(body) - len(tail)) + tail
    frame = client_frame(payload)
    buf = bytearray(c.pending or b"")

    def is_echo(got: bytes) -> bool:
        return lg.dialect != "socketio" or got.startswith(b'42["echo"')

    try:
        return [_round_trip(lg, sock, buf, frame, is_echo) for _ in range(count)]
    finally:
        _release(c)


def command_rtts(lg: LoadGen, commands: dict[str, bytes], count: int, timeout: float = 30.0) -> dict[str, list[int]]:
    """Native dialect: one connection on /ws sends each of `commands` in turn, `count` times over,
    each time waiting for its `reply`; returns the round trips in ns, by command name.

    Each command is a JSON object without its closing brace, so that an `"id"` can follow. Taking
    the commands in turn, not one series after the other, gives each the same conditions.
    """
    c = _blocking_connection(lg, lg.path_prefix + "/ws", timeout)
    sock = c.sock
    buf = bytearray(c.pending or b"")
    rtts: dict[str, list[int]] = {name: [] for name in commands}
    try:
        for i in range(count * len(commands)):
            name, command = list(commands.items())[i % len(commands)]
            reply = b'"type":"reply","id":%d' % i
            frame = client_frame(command + b',"id":%d}' % i)

            def is_reply(got: bytes, reply: bytes = reply, name: str = name) -> bool:
                if b'"type":"error"' in got:
                    raise ConnectionError(f"{name} refused: {got[:120].decode('utf-8', 'replace')}")
                return reply in got

            rtts[name].append(_round_trip(lg, sock, buf, frame, is_reply))
    finally:
        _release(c)
    return rtts


def _round_trip(lg: LoadGen, sock, buf: bytearray, frame: bytes, is_answer) -> int:
    """Send `frame` and read until a message `is_answer`, answering pings (Socket.IO's too) on
    the way; the time it took, in ns."""
    t0 = time.perf_counter_ns()
    sock.sendall(frame)
    while True:
        b0, got = _recv_frame(sock, buf)
        op = b0 & 0x0F
        if op == 9:
            sock.sendall(client_frame(got, 10))
        elif op == 8:
            raise ConnectionError("server closed the connection")
        elif lg.dialect == "socketio" and got == b"2":
            sock.sendall(SIO_PONG)
        elif op in (1, 2) and is_answer(got):
            return time.perf_counter_ns() - t0


def _release(c) -> None:
    """Close a connection `_blocking_connection` took out of the event loop."""
    try:
        c.sock.sendall(CLOSE_FRAME)
    except OSError:
        pass
    c.sock.close()
    c.state = CLOSED


def pusher_path(role: str) -> str:
    """Dialect "pusher": subscribers and bare connections are Pusher clients of the bench app; the
    publisher is a native client of the same server (docs/pusher.md: one hub for both)."""
    if role == PUB:
        return "/ws"
    return f"/app/{PUSHER_KEY}?protocol=7&client=bench&version=1"


def handshake_request(host: str, port: int, path: str, deflate: bool = False, protocol: str | None = None) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append(f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}")
    if protocol:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def probe(port: int, path: str, timeout: float = 1.0, host: str = "127.0.0.1") -> bool:
    """True if a WebSocket handshake to ws://host:port<path> gets a 101."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(handshake_request(host, port, path))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                data += chunk
            ok = data.split(b"\r\n", 1)[0].split(b" ")[1:2] == [b"101"]
            if ok:
                try:
                    s.sendall(CLOSE_FRAME)
                except OSError:
                    pass
            return ok
    except OSError:
        return False
