"""A TCP proxy for faults on the wire: a slow server or link (``delay``), a server that hangs
mid-session (``freeze()``), an address that refuses connections (``refuse()``)."""

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
    a batch exactly while one of its statements is in flight, however loaded the machine.
    ``refuse()`` closes the listening port and every open connection (a Service without a ready
    endpoint, a dead broker); ``accept()`` listens again on the same port."""

    CANCEL_REQUEST = (16).to_bytes(4, "big") + (80877102).to_bytes(4, "big")

    def __init__(self, target_port: int, delay: float = 0.0, target_host: str = "127.0.0.1") -> None:
        self.target_port, self.delay, self.target_host = target_port, delay, target_host
        self.frozen = threading.Event()
        self._hold: bytes | None = None
        self.holding = threading.Event()    # an answer is being held (the statement ran)
        self.cancelled = threading.Event()  # a cancel request came through: answers flow again
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.port = 0
        self._srv: Any = self._listen()
        self.port = int(self._srv.getsockname()[1])
        self._socks: list[Any] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def accepting(self) -> bool:
        return self._srv is not None

    def _listen(self) -> Any:
        import socket

        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the same port again after refuse()
        srv.bind(("127.0.0.1", self.port))
        srv.listen(64)
        srv.settimeout(0.1)
        return srv

    def refuse(self) -> None:
        """Close the port (connections are refused) and every connection through the proxy."""
        import socket

        with self._lock:
            srv, self._srv = self._srv, None
            socks, self._socks = self._socks, []
        if srv is not None:
            with contextlib.suppress(OSError):
                srv.shutdown(socket.SHUT_RDWR)
            srv.close()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()

    def accept(self) -> None:
        """Listen again on the same port, after refuse()."""
        with self._lock:
            if self._srv is None:
                self._srv = self._listen()

    def freeze(self) -> None:
        self.frozen.set()

    def hold_answers_to(self, text: str) -> None:
        """From now on, the answer to every statement whose bytes contain ``text`` is held until a
        cancel request (its client's Ctrl-C) passes through the proxy (test-side cap: 60 s)."""
        self._hold = text.encode()

    def _accept(self) -> None:
        import socket

        while not self._stop.is_set():
            srv = self._srv
            if srv is None:  # refusing
                time.sleep(0.05)
                continue
            try:
                client = srv.accept()[0]
            except OSError:
                continue
            try:
                upstream = socket.create_connection((self.target_host, self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
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
        self.refuse()
