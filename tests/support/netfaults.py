"""A TCP proxy for network-fault tests: reset every connection, black-hole them, or drop
the server's replies (a request that ran, whose answer never arrives).

A black hole pauses forwarding in both directions without closing anything, as a network
partition does: bytes wait, the peers see silence until their own timeouts fire.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import struct
import threading


class FaultyProxy:
    def __init__(self, target: tuple[str, int], tls: ssl.SSLContext | None = None) -> None:
        """Forward to `target`; with `tls`, clients speak TLS to the proxy (a TLS front)."""
        self.target = target
        self.tls = tls
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._mute = False
        self.resets = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                if self.tls is not None:
                    client = self.tls.wrap_socket(client, server_side=True)
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:  # includes a TLS handshake the client broke off (wrong CA)
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        with selectors.DefaultSelector() as sel:
            sel.register(a, selectors.EVENT_READ)
            sel.register(b, selectors.EVENT_READ)
            try:
                while not self._closed:
                    self._open.wait()
                    for key, _ in sel.select(timeout=0.1):
                        if not self._open.is_set():
                            break  # a black hole began: leave the bytes where they are
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        data = sock.recv(65536)
                        if not data:
                            return
                        if isinstance(sock, ssl.SSLSocket):
                            while sock.pending():  # decrypted bytes select() cannot see
                                data += sock.recv(sock.pending())
                        if self._mute and sock is b:
                            continue  # a reply lost on the way
                        peer[sock].sendall(data)
            except OSError:
                return
            finally:
                self._drop(a, b)

    def _drop(self, a: socket.socket, b: socket.socket) -> None:
        with self._lock:
            if (a, b) in self._pairs:
                self._pairs.remove((a, b))
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.close()

    def reset_all(self) -> None:
        """Abort every proxied connection with a TCP RST."""
        with self._lock:
            pairs = list(self._pairs)
        for a, b in pairs:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
        self.resets += len(pairs)

    def blackhole(self, on: bool) -> None:
        if on:
            self._open.clear()
        else:
            self._open.set()

    def mute_replies(self, on: bool) -> None:
        """Forward requests, but drop what the server sends back (until turned off)."""
        self._mute = on

    def close(self) -> None:
        self._closed = True
        self._open.set()
        self._server.close()
        self.reset_all()
