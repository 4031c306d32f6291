"""A TCP proxy that loses a connection at the worst moment: the server's answer is on its way.

It forwards bytes both ways, except that when a chunk from the server matches `cut` (and fewer
than `times` connections were cut so far), it drops that chunk and closes both sides, as a
network failure would after the request reached the server and before its answer came back.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class CuttingProxy:
    def __init__(self, target_port: int, cut: Callable[[bytes], bool], times: int = 1) -> None:
        self.target_port = target_port
        self.cut, self.times = cut, times
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, from_server: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_server and self._should_cut(data):
                    break
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _should_cut(self, data: bytes) -> bool:
        with self._lock:
            if self.cuts < self.times and self.cut(data):
                self.cuts += 1
                return True
        return False

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()
