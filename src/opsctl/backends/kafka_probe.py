"""A broker judged at the Kafka protocol level (rb-014: "accepts TCP" is not "up"): TCP connect,
then ApiVersions and Metadata round trips on a raw socket, within one deadline; and ``scrub``, the
secrets of a kafka section taken out of a message (the clients' errors use it too).

kafka-python's protocol classes are imported inside ``probe_broker`` only."""

from __future__ import annotations

import time
from typing import Any

from opsctl.units import seconds

_SECRET_KEYS = ("sasl_plain_password", "ssl_password", "sasl_oauth_token_provider")


def scrub(text: str, conf: dict[str, Any]) -> str:
    for key in _SECRET_KEYS:
        secret = conf.get(key)
        if isinstance(secret, str) and secret:
            text = text.replace(secret, "***")
    return text


def _recv_exact(sock: Any, n: int, deadline: float) -> bytes:
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("the broker closed the connection")
        buf += chunk
    return buf


def _round_trip(sock: Any, request: Any, response_cls: Any, correlation_id: int, deadline: float) -> Any:
    request.with_header(correlation_id=correlation_id, client_id="opsctl")
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    sock.sendall(bytes(request.encode(header=True, framed=True)))
    size = int.from_bytes(_recv_exact(sock, 4, deadline), "big", signed=True)
    body = _recv_exact(sock, size, deadline)
    if int.from_bytes(body[:4], "big", signed=True) != correlation_id:
        raise ConnectionError("the answer does not match the request (not a Kafka broker?)")
    return response_cls.decode(body[4:])


def _wrap_tls(sock: Any, host: str, conf: dict[str, Any]) -> Any:
    import ssl

    context = ssl.create_default_context(cafile=conf.get("ssl_cafile"))
    if conf.get("ssl_certfile"):
        context.load_cert_chain(conf["ssl_certfile"], conf.get("ssl_keyfile"), conf.get("ssl_password"))
    if conf.get("ssl_check_hostname") is False:
        context.check_hostname = False
    return context.wrap_socket(sock, server_hostname=host)


def probe_broker(target: str, timeout: float, conf: dict[str, Any]) -> dict[str, Any]:
    """One broker judged at the protocol level, within ``timeout`` seconds in all.

    TCP connect, then an ApiVersions round trip (answered before any SASL handshake) and, where no
    SASL authentication is needed first, a Metadata round trip (which brokers the cluster has).
    ``state`` is ``up``, ``hung`` (accepts TCP, no Kafka answer in time), ``dead`` (connection
    refused / unresolvable) or ``error`` (answered garbage, TLS failure...)."""
    import socket

    from kafka.protocol.metadata import (
        ApiVersionsRequest,
        ApiVersionsResponse,
        MetadataRequest,
        MetadataResponse,
    )

    host, _, port = target.rpartition(":")
    out: dict[str, Any] = {"target": target, "tcp": False, "answered": False, "state": "dead",
                           "latency_ms": None, "error": None, "brokers": None}
    if not host or not port.isdigit():
        return {**out, "state": "error", "error": f"{target!r} is not host:port"}
    start = time.monotonic()
    deadline = start + timeout
    phase = "connect"
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except TimeoutError:
        return {**out, "error": f"TCP connect timed out after {seconds(timeout)}"}
    except OSError as e:
        return {**out, "error": e.strerror or str(e)}
    out["tcp"] = True
    try:
        protocol = str(conf.get("security_protocol", "PLAINTEXT")).upper()
        if protocol in ("SSL", "SASL_SSL"):
            phase = "TLS handshake"
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock = _wrap_tls(sock, host.strip("[]"), conf)
        phase = "ApiVersions"
        versions = _round_trip(sock, ApiVersionsRequest[0](), ApiVersionsResponse[0], 1, deadline)
        if versions.error_code:
            raise ConnectionError(f"ApiVersions error code {versions.error_code}")
        if not protocol.startswith("SASL"):
            phase = "Metadata"
            meta = _round_trip(sock, MetadataRequest[1](topics=[]), MetadataResponse[1], 2, deadline)
            out["brokers"] = sorted(f"{b.host}:{b.port}" for b in meta.brokers)
    except TimeoutError:
        return {**out, "state": "hung", "error": f"accepts TCP but did not answer {phase} within "
                                                 f"{seconds(timeout)}"}
    except (OSError, ValueError, ConnectionError) as e:
        return {**out, "state": "error", "error": f"{phase}: {scrub(str(e) or type(e).__name__, conf)}"}
    finally:
        sock.close()
    return {**out, "answered": True, "state": "up",
            "latency_ms": round((time.monotonic() - start) * 1000, 1)}
