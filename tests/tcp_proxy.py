"""A loopback TCP proxy whose connections a test can cut, for real outage tests.

Point a client (Redis, PostgreSQL) at the proxy instead of the server; then
``cut()`` closes every open connection and refuses new ones, as a network
partition or a dead server would, and ``restore()`` lets connections through
again; ``stall()`` keeps connections open but answers nothing, as a hung
server does (for timeout tests). Threads, not asyncio, so sync and async tests alike can use it.

>>> with TcpProxy("127.0.0.1", 6379) as proxy:      # doctest: +SKIP
...     url = f"redis://127.0.0.1:{proxy.port}/0"
...     proxy.cut(); proxy.restore()
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

__all__ = ["TcpProxy"]


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``host:port`` until cut."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = False
        self._stalled = threading.Event()
        self.port = 0
        self.connections = 0  # accepted and forwarded, for tests that count them

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self._listener = listener
        self.port = listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """Close every connection now, and refuse (close at once) new ones."""
        with self._lock:
            self._cut = True
            sockets, self._open = self._open, set()
        for sock in sockets:
            _close(sock)

    def stall(self) -> None:
        """Keep connections open but forward nothing: a server that hangs."""
        self._stalled.set()

    def restore(self) -> None:
        """Forward (new) connections again."""
        self._stalled.clear()
        with self._lock:
            self._cut = False

    def stop(self) -> None:
        self.cut()
        if self._listener is not None:
            _close(self._listener)
            self._listener = None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed: stop
                return
            with self._lock:
                refused = self._cut
            if refused:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2.0)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._cut:  # cut while connecting
                    _close(client)
                    _close(upstream)
                    continue
                self._open.update((client, upstream))
                self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self._stalled.is_set():  # a stalled server swallows it all
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
