"""The kit's one TCP proxy (opsctl.testing.proxy.TcpProxy) in front of a real echo server: which
direction waits, first_only, refuse()/accept(), and close() not waiting out a long delay."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from opsctl.testing.proxy import TcpProxy
from tests.timing import budget


@pytest.fixture
def echo() -> Iterator[int]:
    """A TCP server that sends back what it receives, one thread per connection."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.1)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn = srv.accept()[0]
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(srv.getsockname()[1])
    stop.set()
    thread.join(5)
    srv.close()


def round_trip(conn: socket.socket, data: bytes) -> float:
    started = time.monotonic()
    conn.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = conn.recv(65536)
        assert chunk, "connection closed"
        got += chunk
    assert got == data
    return time.monotonic() - started


@pytest.mark.parametrize("slow", ["answers", "requests"])
def test_every_round_trip_waits_the_delay(echo: int, slow: str) -> None:
    proxy = TcpProxy(echo, 0.3, "127.0.0.1", slow=slow)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=budget(10)) as conn:
            took = [round_trip(conn, f"ping {i}".encode()) for i in range(2)]
    finally:
        proxy.close()
    assert proxy.address == f"127.0.0.1:{proxy.port}"
    assert min(took) >= 0.3, took


def test_first_only_delays_the_first_answer_of_each_connection(echo: int) -> None:
    proxy = TcpProxy(echo, 0.5, first_only=True)
    try:
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=budget(10)) as conn:
                first, second = round_trip(conn, b"a"), round_trip(conn, b"b")
                assert first >= 0.5 and second < 0.5, (first, second)
    finally:
        proxy.close()


def test_refuse_cuts_connections_and_closes_the_port_until_accept(echo: int) -> None:
    proxy = TcpProxy(echo)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=budget(10)) as conn:
            round_trip(conn, b"before")
            proxy.refuse()
            assert not proxy.accepting
            assert conn.recv(65536) == b""  # the client sees its connection closed
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=budget(10)).close()
        proxy.accept()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=budget(10)) as conn:
            round_trip(conn, b"after")
    finally:
        proxy.close()


def test_close_does_not_wait_out_a_hung_answer(echo: int) -> None:
    proxy = TcpProxy(echo, 60.0)  # an answer held past any deadline: a hung server that accepts
    conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=budget(10))
    conn.sendall(b"x")
    time.sleep(0.3)  # the answer is now waiting in the proxy
    started = time.monotonic()
    proxy.close()
    conn.close()
    assert time.monotonic() - started < budget(3)  # not the 5 s join of a sleeping pump
