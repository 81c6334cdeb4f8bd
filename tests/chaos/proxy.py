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


class HoldingProxy:
    """A proxy for one Kafka client in front of a one-broker cluster (on loopback), which
    can hold that client's produce requests: a delivery that is sent but never reaches the
    broker, so never acknowledged, while every other client reaches the broker directly.

    The broker's address in its responses (Metadata, FindCoordinator) is rewritten to the
    proxy's, so that the client's every connection, not only its bootstrap, goes through it.
    A produce request that carries ``marker`` (a record's key or value: uncompressed) is
    held, with whatever the client sends after it on that connection, until
    :meth:`release`; one whose connection the client dropped meanwhile is dropped too (the
    client sends it again on a new connection, where it is held again)."""

    def __init__(self, broker_host: str, broker_port: int, marker: bytes) -> None:
        self.target = (broker_host, broker_port)
        self.server = socket.create_server((broker_host, 0))
        self.server.settimeout(0.2)
        self.port: int = self.server.getsockname()[1]
        # the broker's host (same length: frames keep their size) and port in a response
        self._theirs = broker_host.encode() + struct.pack(">i", broker_port)
        self._ours = broker_host.encode() + struct.pack(">i", self.port)
        self.marker = marker
        self.n_held = 0  # produce requests held (one per connection it was sent on)
        self.n_rewritten = 0  # responses that named the broker, sent naming the proxy
        self._released = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, name="holding-proxy", daemon=True)
        self._thread.start()

    @property
    def bootstrap(self) -> str:
        return f"{self.target[0]}:{self.port}"

    def release(self) -> None:
        """Send what is held on, and hold nothing from now on."""
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self._closed.set()
        self._thread.join(5)
        self.server.close()
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _reset(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for pump in (self._requests, self._responses):
                threading.Thread(target=pump, args=(client, upstream), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        held = False
        try:
            while (frame := _read_frame(client)) is not None:
                # request header: api_key (int16; 0 is Produce), api_version, ...
                if not held and not self._released.is_set() and frame[4:6] == b"\0\0":
                    held = self.marker in frame
                    if held:
                        with self._lock:
                            self.n_held += 1
                if held:  # this frame and every one after it wait (nothing more is read)
                    while not self._released.wait(0.1):
                        if _closed_by_peer(client):
                            return
                upstream.sendall(frame)
        except OSError:
            pass
        finally:
            self._drop(client, upstream)

    def _responses(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while (frame := _read_frame(upstream)) is not None:
                if self._theirs in frame:
                    frame = frame.replace(self._theirs, self._ours)
                    with self._lock:
                        self.n_rewritten += 1
                client.sendall(frame)
        except OSError:
            pass
        finally:
            self._drop(client, upstream)

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            self._sockets.difference_update(socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        part = sock.recv(size - len(data))
        if not part:
            return None
        data += part
    return bytes(data)


def _read_frame(sock: socket.socket) -> bytes | None:
    """One Kafka protocol frame (its int32 size, then that many bytes); None at the end."""
    head = _read_exactly(sock, 4)
    if head is None:
        return None
    body = _read_exactly(sock, struct.unpack(">i", head)[0])
    return None if body is None else head + body


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
