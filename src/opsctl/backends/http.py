"""Plain HTTP GET with the standard library (no extra dependency): status, headers, body, latency.

HTTP error statuses are results, not exceptions (a 503 from a health endpoint is a finding); only a
failure to get any response at all raises ``Unreachable``.
"""

from __future__ import annotations

import base64
import time
import urllib.parse
from dataclasses import dataclass

from opsctl.units import seconds

USER_AGENT = "opsctl"


class Unreachable(Exception):
    """No HTTP response: refused, timed out, bad host, TLS failure."""


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes
    latency_ms: float


def redact_url(url: str) -> str:
    """The URL without user:password@ (it ends up in messages and the run log)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """urllib ignores user:password@ in a URL: turn it into a Basic Authorization header."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:"
                             f"{urllib.parse.unquote(parts.password or '')}".encode()).decode()
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {token}"}


def get(url: str, timeout: float, headers: dict[str, str] | None = None,
        max_bytes: int = 1 << 20) -> Response:
    # imported here: http.client pulls in email and ssl, which `opsctl validate` (that loads every
    # action module) does not need
    import http.client
    import urllib.error
    import urllib.request

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise Unreachable(f"not an http(s) URL: {redact_url(url)}")
    url, auth = _split_credentials(url)
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **auth, **(headers or {})})
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
            body = resp.read(max_bytes)
            status, ctype = resp.status, resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, ctype = e.code, e.headers.get("Content-Type", "")
        try:
            body = e.read(max_bytes)
        except (OSError, http.client.HTTPException):  # an error status is the answer; its body is extra
            body = b""
    except OSError as e:  # URLError, refused, reset, timeouts are all OSErrors
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError):
            reason = f"timed out after {seconds(timeout)}"
        raise Unreachable(f"GET {url}: {reason}") from None  # url has no credentials any more
    except http.client.HTTPException as e:  # something answered, but not HTTP (wrong port?)
        raise Unreachable(f"GET {url}: the server did not answer HTTP ({type(e).__name__}: "
                          f"{str(e).strip()[:60]!r})") from None
    return Response(status, ctype, body, round((time.monotonic() - start) * 1000, 1))
