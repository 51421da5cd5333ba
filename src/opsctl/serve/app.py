"""The HTTP side (Starlette): authentication, body limit, payload errors as 400 with a reason,
/healthz and /metrics.  Runs happen in the service's worker threads, never in a request."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opsctl.alerts import payloads
from opsctl.serve.metrics import Metrics
from opsctl.serve.service import AlertService


@dataclass(frozen=True)
class Security:
    token: str | None  # bearer token for /alertmanager; None only with --no-auth
    pagerduty_secret: str | None  # HMAC-SHA256 signing secret for /pagerduty
    max_body: int = 1 << 20


class _TooLarge(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def bearer_ok(header: str | None, token: str) -> bool:
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def signature_ok(header: str | None, body: bytes, secret: str) -> bool:
    """``X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]`` (several while a secret is rotated)."""
    want = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    ok = False
    for part in (header or "").split(","):
        version, _, sig = part.strip().partition("=")
        if version == "v1" and sig:
            ok |= hmac.compare_digest(sig.strip().lower().encode(), want.encode())
    return ok


def create_app(service: AlertService, metrics: Metrics, security: Security) -> Starlette:
    def reply(endpoint: str, code: int, doc: dict[str, object], **headers: str) -> JSONResponse:
        metrics.requests.labels(endpoint, str(code)).inc()
        return JSONResponse(doc, status_code=code, headers=headers or None)

    async def receive(request: Request, endpoint: str, source: str) -> JSONResponse:
        try:
            body = await _body(request, security.max_body)
        except _TooLarge:
            return reply(endpoint, 413, {"error": f"body larger than {security.max_body} bytes"})
        if source == "pagerduty":
            if not security.pagerduty_secret:
                return reply(endpoint, 404, {"error": "PagerDuty receiver not configured "
                                                      "(OPSCTL_PAGERDUTY_SECRET)"})
            header = request.headers.get("x-pagerduty-signature")
            if not header:
                return reply(endpoint, 401, {"error": "missing X-PagerDuty-Signature"})
            if not signature_ok(header, body, security.pagerduty_secret):
                return reply(endpoint, 401, {"error": "bad X-PagerDuty-Signature"})
        try:
            batch = payloads.parse(body, service.catalogue.alert_names)
        except payloads.PayloadError as e:
            return reply(endpoint, 400, {"error": e.message})
        if batch.source != source:
            return reply(endpoint, 400, {"error": f"a {batch.source} payload posted to /{endpoint}"})
        result = service.submit(batch)
        if result.shed:
            return reply(endpoint, 503, {"error": "queue full: retry later", **result.as_dict()},
                         **{"Retry-After": "5"})
        return reply(endpoint, 202, result.as_dict())

    async def alertmanager(request: Request) -> JSONResponse:
        if security.token is not None and not bearer_ok(request.headers.get("authorization"),
                                                        security.token):
            return reply("alertmanager", 401, {"error": "missing or wrong bearer token"},
                         **{"WWW-Authenticate": "Bearer"})
        return await receive(request, "alertmanager", "alertmanager")

    async def pagerduty(request: Request) -> JSONResponse:
        return await receive(request, "pagerduty", "pagerduty")

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse(service.status())

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return Starlette(routes=[
        Route("/alertmanager", alertmanager, methods=["POST"]),
        Route("/pagerduty", pagerduty, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ])
