"""A TCP proxy for faults on the wire: a slow server or link (``delay``), a server that hangs
mid-session (``freeze()``)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any


class TcpProxy:
    """A TCP proxy in front of the server, for faults on the wire: ``delay`` holds every chunk
    the server sends for that many seconds (a slow server or link), ``freeze()`` stops forwarding
    in both directions while keeping the sockets open (a server that hangs mid-session), and
    ``hold_answers_to(text)`` holds the server's answer to a statement containing ``text`` until
    the client sends a cancel request (its Ctrl-C): a definite handshake, so a test can interrupt
    a batch exactly while one of its statements is in flight, however loaded the machine."""

    CANCEL_REQUEST = (16).to_bytes(4, "big") + (80877102).to_bytes(4, "big")

    def __init__(self, target_port: int, delay: float = 0.0) -> None:
        import socket

        self.target_port, self.delay = target_port, delay
        self.frozen = threading.Event()
        self._hold: bytes | None = None
        self.holding = threading.Event()    # an answer is being held (the statement ran)
        self.cancelled = threading.Event()  # a cancel request came through: answers flow again
        self._stop = threading.Event()
        self._srv = socket.socket()
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(64)
        self._srv.settimeout(0.1)
        self.port = int(self._srv.getsockname()[1])
        self._socks: list[Any] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def freeze(self) -> None:
        self.frozen.set()

    def hold_answers_to(self, text: str) -> None:
        """From now on, the answer to every statement whose bytes contain ``text`` is held until a
        cancel request (its client's Ctrl-C) passes through the proxy (test-side cap: 60 s)."""
        self._hold = text.encode()

    def _accept(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                client = self._srv.accept()[0]
            except OSError:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            self._socks += [client, upstream]
            held = threading.Event()  # this connection's next answer is to be held
            for src, dst, slow in ((client, upstream, False), (upstream, client, True)):
                t = threading.Thread(target=self._pump, args=(src, dst, slow, held), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: Any, dst: Any, slow: bool, held: threading.Event) -> None:
        src.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            if not slow:
                # a cancel request opens its own connection (after an SSL/GSS negotiation, if any)
                if data.startswith(self.CANCEL_REQUEST):
                    self.cancelled.set()
                elif self._hold and self._hold in data and not self.cancelled.is_set():
                    held.set()  # before the statement reaches the server: its answer comes later
            elif held.is_set():
                self.holding.set()
                self.cancelled.wait(60)
                held.clear()
            if slow and self.delay:
                time.sleep(self.delay)
            while self.frozen.is_set() and not self._stop.is_set():
                time.sleep(0.05)
            try:
                dst.sendall(data)
            except OSError:
                break
        if not self.frozen.is_set():
            with contextlib.suppress(OSError):
                dst.shutdown(2)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()
        self._srv.close()
