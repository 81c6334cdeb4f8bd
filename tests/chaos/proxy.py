"""A TCP proxy on loopback whose connections a test can cut: a network fault between the
pipeline and the broker, without touching either."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

HOST = "127.0.0.1"


class CuttableProxy:
    """Forwards ``listen_port`` to ``target_port``. :meth:`cut` resets every connection
    (RST, as a dropped link or a restarted firewall does) and refuses new ones for a
    while."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.target = (HOST, target_port)
        self.server = socket.create_server((HOST, listen_port), reuse_port=False)
        self.server.settimeout(0.2)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._refuse_until = 0.0
        self._closed = threading.Event()
        self.n_cut = 0
        self._thread = threading.Thread(target=self._accept, name="proxy", daemon=True)
        self._thread.start()

    def cut(self, refuse_s: float) -> None:
        """Reset every open connection; refuse new ones for ``refuse_s`` seconds."""
        with self._lock:
            self._refuse_until = time.monotonic() + refuse_s
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _reset(sock)
        self.n_cut += len(doomed)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self.server.close()
        self.cut(0)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if time.monotonic() < self._refuse_until:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.difference_update((source, sink))
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with RST, not FIN: the peer sees the connection drop."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
