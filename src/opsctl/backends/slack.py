"""Slack incoming webhooks: the one posting code of `notify.slack` steps, the engine's run
notifications (`opsctl.notifier`) and `opsctl serve`'s alert messages.

The webhook URL is a secret (its path is the credential): errors name the host only.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from typing import Any

from opsctl.errors import BackendError

WEBHOOK_ENV = "OPSCTL_SLACK_WEBHOOK_URL"


def webhook_url(notify_config: dict[str, Any]) -> str | None:
    """The environment's `notify.slack_webhook_url`, else OPSCTL_SLACK_WEBHOOK_URL (a secret)."""
    url = notify_config.get("slack_webhook_url") or os.environ.get(WEBHOOK_ENV) or None
    if url and urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        # urllib would say "unknown url type: '<the whole URL>'": the URL is the secret
        raise BackendError("notify", "the Slack webhook URL is not an http(s) URL (it must start "
                                     "with https://); it is a secret, so it is not shown: check "
                                     f"notify.slack_webhook_url in opsctl.yaml or {WEBHOOK_ENV}")
    return url


def host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or "webhook"


def post(url: str, body: dict[str, Any], timeout: float = 10.0) -> int:
    """POST one message (``text`` and/or Block Kit ``blocks``) to an incoming webhook; the HTTP
    status, or BackendError naming the host only (the URL's path is the secret)."""
    import urllib.error  # here: urllib.request pulls in http.client, ssl and email
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    where = host(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        raise BackendError("notify", f"Slack webhook at {where} answered HTTP {e.code}") from None
    except TimeoutError:
        raise BackendError("notify", f"the Slack webhook at {where} did not answer within "
                                     f"{timeout:g}s") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise BackendError("notify", f"cannot reach the Slack webhook at {where}: {reason}") from None
