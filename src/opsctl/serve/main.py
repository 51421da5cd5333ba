"""`opsctl serve`: configuration, the catalogue, the service and Uvicorn."""

from __future__ import annotations

import os
import socket
import sys

from opsctl.errors import OpsctlError, UsageError

TOKEN_ENV = "OPSCTL_SERVE_TOKEN"
PAGERDUTY_ENV = "OPSCTL_PAGERDUTY_SECRET"


def run(*, host: str, port: int, env: str | None, concurrency: int, queue_size: int, max_body: int,
        no_auth: bool) -> int:
    import uvicorn

    from opsctl import config
    from opsctl.alerts import load_catalogue
    from opsctl.backends import slack as notify
    from opsctl.serve.app import Security, create_app
    from opsctl.serve.metrics import Metrics
    from opsctl.serve.service import AlertService
    from opsctl.serve.slack import SlackSender

    environment = config.load_environment(env)
    token = os.environ.get(TOKEN_ENV) or environment.backend("serve").get("token") or None
    if not token and not no_auth:
        if not _loopback(host):
            raise UsageError(f"no bearer token for /alertmanager on {host}: set {TOKEN_ENV} (or "
                             "serve.token in opsctl.yaml) and the same in Alertmanager's "
                             "http_config.authorization; --no-auth accepts unauthenticated posts")
        print(f"opsctl serve: warning: no {TOKEN_ENV}: /alertmanager accepts unauthenticated posts "
              f"(only from this host: listening on {host})", file=sys.stderr, flush=True)
        no_auth = True
    pd_secret = os.environ.get(PAGERDUTY_ENV) or environment.backend("serve").get("pagerduty_secret")
    catalogue, errors = load_catalogue(environment=environment)  # its params under the alert's
    for e in errors:
        print(f"opsctl serve: warning: {e}", file=sys.stderr)
    for rb in catalogue.runbooks.values():  # said once here, not only on each alert it spoils
        try:
            environment.params_for(rb)
        except OpsctlError as e:
            print(f"opsctl serve: warning: {e}; its alerts start no run", file=sys.stderr)
    if not catalogue.runbooks:
        raise UsageError("no valid runbooks found (./runbooks, OPSCTL_RUNBOOK_PATH, the package)")
    metrics = Metrics()
    slack = SlackSender(notify.webhook_url(environment.backend("notify")), metrics)
    service = AlertService(catalogue, environment, metrics, slack, concurrency=concurrency,
                           queue_size=queue_size)
    app = create_app(service, metrics, Security(None if no_auth else token, pd_secret or None,
                                                max_body))
    sock = _listen(host, port)
    print(f"opsctl serve: listening on http://{host}:{port} ({len(catalogue.runbooks)} runbooks, "
          f"{len(catalogue.alert_names)} alert names bound; PagerDuty "
          f"{'on' if pd_secret else 'off'}; Slack {'on' if slack.url else 'off'}; "
          f"{concurrency} runs at once)", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    server.run(sockets=[sock])
    slack.close()
    return 0


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    """Bind before anything starts, so a port in use is one sentence and exit 2."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock
