"""One WebSocket connection: its reader greenlet, its bounded outbound queue and its one writer.

This is the only place that touches a client socket. The rules it keeps:
- one writer per socket: frames are appended to a queue and written by whoever holds the socket
  (a non-blocking attempt from the flusher, or this connection's writer greenlet while the kernel
  buffer is full), so frames never interleave and a publisher never blocks on a slow peer;
- frames queued while the socket is busy are joined into one write, which is what makes bursts
  cheap;
- a queue past its limit closes the connection as a slow consumer (1008); nobody else waits;
- an idle connection costs as little as it can: its reader is a plain greenlet (not a
  gevent.Greenlet, whose links and bookkeeping cost about 1 KiB) parked on an I/O watcher of the
  raw OS socket (not gevent's socket wrapper), which is 1.3 KiB less per idle connection
  (bench/memory.py says what the rest is).
It never decides what a message means: text and binary messages go to the `on_messages` callback,
all those one read brought at once, so a protocol can send what they ask of Redis together.
"""

from __future__ import annotations

import _socket  # the C socket, which gevent's monkey-patching leaves as it is
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
import greenlet

from switchboard_server.transport.frames import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_POLICY_VIOLATION,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameParser,
    encode_close,
    encode_frame,
    parse_close,
)

log = logging.getLogger("switchboard.connection")

RECV_SIZE = 65536
# How long a closing connection waits for the peer's close frame or a stuck write.
CLOSE_TIMEOUT = 5.0
# A lingering close (see `_linger`): how long and how much input is read and dropped, at most,
# after a close frame the server sent while the peer was still sending. Some clients read only
# when their write is done (the `websockets` sync client holds its lock for a whole message, and
# drops what it read once the write fails), so the peer's write in progress has to be let
# through: the size covers a client writing a 20 MiB message in one go, 512 of the default
# limit's. It costs one reused 64 KiB buffer and a yield per read, so a peer streaming garbage
# gets no more than any other connection; the time is Gunicorn's own for a graceful close.
LINGER_TIME = 2.0
LINGER_BYTES = 32 << 20
# Latency samples kept until the metrics read them (about once a second); later ones are skipped.
MAX_LATENCY_SAMPLES = 1000


class Meter:
    """A worker's traffic totals, as plain numbers: counted per read, per write and per flush run,
    never per delivery, and turned into Prometheus values at a low rate by ops/metrics.py."""

    __slots__ = ("bytes_in", "bytes_out", "queue_high", "latencies")

    def __init__(self) -> None:
        self.bytes_in = 0
        self.bytes_out = 0
        # The most frames ever found waiting in one connection's queue at a write.
        self.queue_high = 0
        # Seconds from the first frame queued for a flush run to the end of that run's writes.
        self.latencies: list[float] = []


class Flusher:
    """Writes every connection that got frames since the last run, once, after the publisher yields.

    A publish only appends to queues; the flusher runs when the publishing greenlet next waits,
    so a burst of publishes leaves several frames per queue and each goes out in one `send`.
    """

    __slots__ = ("_dirty", "_greenlet", "_started", "meter")

    def __init__(self) -> None:
        self._dirty: list[Connection] = []
        self._greenlet: gevent.Greenlet | None = None
        self._started = 0.0
        self.meter = Meter()

    def add(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if self._greenlet is None:
            self._started = time.perf_counter()
            self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        try:
            while self._dirty:
                dirty, self._dirty = self._dirty, []
                for conn in dirty:
                    conn.scheduled = False
                    conn.flush()
        finally:
            self._greenlet = None
        # One sample per run: how long its oldest frame waited for the last socket to be written.
        latencies = self.meter.latencies
        if len(latencies) < MAX_LATENCY_SAMPLES:
            latencies.append(time.perf_counter() - self._started)


class Connection:
    """A client socket after the handshake, with who it is and what it subscribed to."""

    __slots__ = (
        "id", "user", "info", "address", "subscriptions", "session", "grants", "expires", "warned", "bucket",
        "scheduled", "closing", "closed",
        "close_code", "close_reason", "last_seen", "opened_at", "messages_in", "messages_out",
        "_raw", "_readable", "_flusher", "_meter", "_pending", "_pending_bytes", "_max_messages", "_max_bytes",
        "_writer", "_on_slow", "_deadline",
    )  # fmt: skip

    def __init__(
        self,
        sock: socket.socket,
        flusher: Flusher,
        *,
        client_id: str,
        user: str,
        info: Any = None,
        address: str = "",
        max_messages: int = 1000,
        max_bytes: int = 1 << 20,
        on_slow: Callable[[Connection], None] | None = None,
    ) -> None:
        self.id = client_id
        self.user = user
        self.info = info
        self.address = address
        # Its subscriptions by the protocol's key for each (a channel name, a GraphQL id), and the
        # protocol session reading it: both set by the hub.
        self.subscriptions: dict[Any, Any] = {}
        self.session: Any = None
        # What the connection may do, until when, and how fast: set by the hub.
        # (core/access.py's Grants and core/limits.py's TokenBucket: this layer only holds them)
        self.grants: Any = None
        self.expires: float | None = None
        self.warned = False
        self.bucket: Any = None
        # The OS socket, taken from whatever wrapped it: non-blocking, so a send never yields,
        # and a reader waits on `_readable` in the gevent loop.
        self._raw = _socket.socket(fileno=sock.detach())
        self._raw.setblocking(False)
        self._readable = gevent.get_hub().loop.io(self._raw.fileno(), 1)
        self._flusher = flusher
        self._meter = flusher.meter
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._on_slow = on_slow
        self._writer: gevent.Greenlet | None = None
        # The timer that cuts a closing connection whose peer never finishes the handshake.
        self._deadline: Any = None
        self.scheduled = False
        self.closing = False
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.opened_at = self.last_seen = time.monotonic()
        self.messages_in = 0
        self.messages_out = 0

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.user!r}>"

    # -- sending ---------------------------------------------------------------------------

    def queue(self, frame: bytes) -> bool:
        """Append a frame within the queue limits, without writing; False if it was not taken.

        Call `flush()` after the last of several frames that must go out together.
        """
        if self.closing:
            return False
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        self.messages_out += 1
        if len(self._pending) > self._max_messages or self._pending_bytes > self._max_bytes:
            self._overflow()
            return False
        return True

    def enqueue(self, frame: bytes) -> None:
        """Queue a fan-out frame to go out when the flusher runs; never blocks, never raises."""
        if self.queue(frame) and not self.scheduled and self._writer is None:
            self.scheduled = True
            self._flusher.add(self)

    def lagging(self) -> bool:
        """Whether a frame queued now would wait behind others: a write the kernel could not take
        is still pending, or half the queue's limit is already queued (core/conflation.py then
        keeps the latest value per key rather than queueing every one)."""
        return (
            self._writer is not None
            or 2 * len(self._pending) > self._max_messages
            or 2 * self._pending_bytes > self._max_bytes
        )

    def send(self, frame: bytes) -> None:
        """Queue a frame and write it now: replies need not wait for the flusher."""
        if self.queue(frame):
            self.flush()

    def flush(self) -> None:
        """Write what is queued without blocking; leave any rest to this connection's writer."""
        if self._writer is not None or not self._pending or self.closed:
            return
        pending = self._pending
        count = len(pending)
        data = pending[0] if count == 1 else b"".join(pending)
        meter = self._meter
        meter.bytes_out += len(data)
        if count > meter.queue_high:
            meter.queue_high = count
        self._pending = []
        self._pending_bytes = 0
        try:
            sent = self._raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.abort()
            return
        if sent < len(data):
            self._writer = gevent.spawn(self._drain, memoryview(data)[sent:])

    def _drain(self, rest: memoryview) -> None:
        """The writer greenlet: exists only while the kernel buffer is full."""
        event_loop = gevent.get_hub()
        writable = event_loop.loop.io(self._raw.fileno(), 2)
        try:
            while rest:
                try:
                    sent = self._raw.send(rest)
                except BlockingIOError:
                    sent = None
                if sent is None:
                    event_loop.wait(writable)
                    continue
                rest = rest[sent:]
                if rest or not self._pending:
                    continue
                self._meter.queue_high = max(self._meter.queue_high, len(self._pending))
                rest = memoryview(b"".join(self._pending))
                self._meter.bytes_out += len(rest)
                self._pending = []
                self._pending_bytes = 0
        except OSError:
            self.abort()
        finally:
            self._writer = None

    def _overflow(self) -> None:
        """Too much queued: drop what was not started, close 1008, cut the socket if it stays stuck."""
        self._meter.queue_high = max(self._meter.queue_high, len(self._pending))
        self._pending = []
        self._pending_bytes = 0
        if self._on_slow is not None:
            self._on_slow(self)
        self.close(CLOSE_POLICY_VIOLATION, "slow consumer: send queue limit exceeded")

    # -- closing ---------------------------------------------------------------------------

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake; the socket is cut if the peer does not finish it in time."""
        if self.closing:
            return
        self._pending.append(encode_close(code, reason))
        self.closing = True
        self.close_code, self.close_reason = code, reason
        self.flush()
        # A timer, not a greenlet: a reconnect storm closes thousands at once, and each would
        # otherwise keep its connection (and a greenlet) alive for CLOSE_TIMEOUT seconds.
        self._deadline = gevent.get_hub().loop.timer(CLOSE_TIMEOUT)
        self._deadline.start(self.abort)

    def abort(self) -> None:
        """Cut the TCP connection now; the reader wakes up and cleans up."""
        if self.closed:
            return
        self.closed = self.closing = True
        try:
            self._raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- receiving -------------------------------------------------------------------------

    def serve(
        self,
        parser: FrameParser,
        on_messages: Callable[[Connection, list[tuple[int, bytes]]], None],
        on_close: Callable[[Connection], None],
    ) -> None:
        """The reader: runs in this connection's greenlet until the socket is done, then closes it.

        A socket error ends the read loop as the peer's EOF does; anything raised past it, an
        OSError from a protocol callback included, is a bug of this connection: logged, 1011.
        """
        unread = False  # the peer may still be sending: the close lingers
        try:
            self._read_loop(parser, on_messages)
        except Exception as error:
            unread = self._failed(error)
        finally:
            self._end(on_close, unread)

    def watch(
        self,
        parser: FrameParser,
        on_messages: Callable[[Connection, list[tuple[int, bytes]]], None],
        on_close: Callable[[Connection], None],
    ) -> None:
        """The reader without a greenlet: gevent's loop reads the socket whenever it is readable,
        and the calling greenlet is free to run something else (a sync route's function).

        Each read is handed on as `serve` hands it, from the event loop's greenlet, so
        `on_messages` must never block; it may switch to a greenlet waiting for the messages,
        which comes back here as soon as it waits again. Once the socket is done, `on_close` and the
        closing handshake run in a greenlet started then, which lives only until they finish.
        """
        self._readable.start(self._on_readable, parser, on_messages, on_close)

    def _on_readable(
        self,
        parser: FrameParser,
        on_messages: Callable[[Connection, list[tuple[int, bytes]]], None],
        on_close: Callable[[Connection], None],
    ) -> None:
        # One read per wake-up: the watcher is level-triggered, so a peer with more to say is
        # read again on the loop's next turn, after every other connection's turn.
        unread = False
        try:
            try:
                data = self._raw.recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError:  # reset, or cut by `abort`: the end, as an EOF is
                data = b""
            if data and not self._dispatch(data, parser, on_messages):
                return
        except Exception as error:  # raised in the event loop, it would stop the whole worker
            unread = self._failed(error)
        self._readable.stop()
        event_loop = gevent.get_hub()
        event_loop.loop.run_callback(greenlet.greenlet(self._end, parent=event_loop).switch, on_close, unread)

    def _failed(self, error: Exception) -> bool:
        """Close for a reading error: the frame's own code, or 1011 for a bug (logged). Returns
        True: the peer may still be sending, so the close lingers."""
        if isinstance(error, FrameError):
            self.close(error.code, error.reason)
        else:  # a bug must cost this connection only, never the worker
            log.exception("connection %s failed", self.id, exc_info=error)
            self.close(CLOSE_INTERNAL_ERROR, "internal error")
        return True

    def _end(self, on_close: Callable[[Connection], None], unread: bool) -> None:
        try:
            on_close(self)
        except Exception:
            log.exception("cleanup of connection %s failed", self.id)
        self._finish(unread)

    def _read_loop(
        self, parser: FrameParser, on_messages: Callable[[Connection, list[tuple[int, bytes]]], None]
    ) -> None:
        recv = self._raw.recv
        to_event_loop = gevent.get_hub().switch
        readable = self._readable
        wake = greenlet.getcurrent().switch
        while not self.closed:
            try:
                data = recv(RECV_SIZE)
            except BlockingIOError:
                data = None
            except OSError:  # reset by the peer, or cut by `abort`: the end, as an EOF is
                return
            if data is None:
                # Parked on the watcher directly, outside the except clause: the exception and
                # its traceback would stay alive for as long as the connection is idle, and
                # gevent's `Hub.wait` keeps a waiter and a deeper stack; about 1 KiB together.
                # A wake-up for any other reason only costs another try.
                readable.start(wake)
                try:
                    to_event_loop()
                finally:
                    readable.stop()
                continue
            if not data or self._dispatch(data, parser, on_messages):
                return

    def _dispatch(
        self, data: bytes, parser: FrameParser, on_messages: Callable[[Connection, list[tuple[int, bytes]]], None]
    ) -> bool:
        """Hand on the messages of one read and answer its pings; True once the peer's close
        frame has come, after which nothing more is read."""
        self._meter.bytes_in += len(data)
        self.last_seen = time.monotonic()
        messages: list[tuple[int, bytes]] = []
        for opcode, payload in parser.feed(data):
            if opcode == OP_TEXT or opcode == OP_BINARY:
                self.messages_in += 1
                messages.append((opcode, payload))
            elif opcode == OP_PING:
                self.send(encode_frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                if messages and not self.closing:
                    on_messages(self, messages)
                code, reason = parse_close(payload)
                if not self.closing:
                    # Echo the peer's code, as RFC 6455 5.5.1 asks; remember the one it sent.
                    self.close(1000 if code == 1005 else code, reason)
                    self.close_code = code
                return True
        if messages and not self.closing:
            on_messages(self, messages)
        return False

    def _finish(self, unread: bool = False) -> None:
        """Let the writer send the close frame, then release the socket: lingering if `unread`
        input may still be on its way, so the close frame is not destroyed by a reset."""
        if not self.closing:
            self.closing = True
        writer = self._writer
        if writer is not None and not self.closed:
            writer.join(timeout=CLOSE_TIMEOUT)
        if self._writer is not None:
            # Still stuck: stop it waiting on a descriptor about to be closed.
            self._writer.kill(timeout=1)
        elif unread and not self.closed:
            self._linger()
        self.closed = True
        if self._deadline is not None:
            self._deadline.stop()
        self._raw.close()

    def _linger(self) -> None:
        """Half-close, then read and drop input until the peer's EOF, LINGER_BYTES or LINGER_TIME.

        Closing a socket with unread input makes the kernel answer with a reset, and a peer
        that gets the reset before it read the close frame never sees it (nginx's lingering
        close, for the same reason). The shutdown sends FIN after the close frame, so a peer
        that reads learns at once that nothing more will come.
        """
        raw = self._raw
        try:
            raw.shutdown(socket.SHUT_WR)
        except OSError:
            return
        event_loop = gevent.get_hub()

        def read_into(buffer: bytearray) -> int:
            while True:
                try:
                    return raw.recv_into(buffer)
                except BlockingIOError:
                    event_loop.wait(self._readable)

        discard_input(read_into)

    def start(self, run: Callable[[Connection], None]) -> None:
        """Run `run(self)` (a session's serve) as this connection's reader greenlet."""
        event_loop = gevent.get_hub()  # gevent's hub: its event loop's greenlet, not Switchboard's Hub
        event_loop.loop.run_callback(greenlet.greenlet(_run_reader, parent=event_loop).switch, run, self)


def discard_input(read_into: Callable[[bytearray], int]) -> None:
    """Read and drop a peer's input until its EOF, LINGER_BYTES or LINGER_TIME: the lingering part
    of a lingering close, for a WebSocket (`Connection._linger`) and an HTTP connection alike
    (transport/worker.py). It yields after each read, so a peer that always has more gets no more
    of the worker than any other connection."""
    buffer = bytearray(RECV_SIZE)
    left = LINGER_BYTES
    with gevent.Timeout(LINGER_TIME, False):
        while left > 0:
            try:
                size = read_into(buffer)
            except OSError:
                return
            if not size:
                return
            left -= size
            gevent.sleep(0)


def _run_reader(run: Callable[[Connection], None], conn: Connection) -> None:
    # A plain greenlet has nobody to report to: a bug here is logged and costs this connection.
    try:
        run(conn)
    except Exception:
        log.exception("connection %s failed", conn.id)
        conn.abort()


def check_text(payload: bytes) -> str:
    """A text message's text; RFC 6455 8.1: one that is not UTF-8 fails the connection with 1007."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(CLOSE_INVALID_DATA, "text message is not valid UTF-8") from None
