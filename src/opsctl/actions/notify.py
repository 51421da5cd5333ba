"""Incident notifications: a Slack incoming-webhook message (seed 001 §1.1-§1.5: `#prod-alerts`,
"[INCIDENTE P<N>] Título. Status: ...").

Posting is a side effect outside the system being repaired, so it is a mutating action: planned
(the exact text is shown) in a dry-run, confirmed like any change.  With no webhook configured the
plan is empty and the message is printed for the engineer to paste.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.errors import BackendError
from opsctl.records import Change, Plan

WEBHOOK_ENV = "OPSCTL_SLACK_WEBHOOK_URL"


@register
class Slack(Action):
    """Post a message to Slack through an incoming webhook.

    The webhook comes from the environment's `notify: {slack_webhook_url: ...}` or
    `OPSCTL_SLACK_WEBHOOK_URL`; it is a secret and never printed.

    ```yaml
    - id: announce
      action: notify.slack
      with:
        channel: "#prod-alerts"
        text: "[INCIDENT P1] DB pool exhausted. Status: Mitigating. Impact: checkout errors."
    ```
    """

    name = "notify.slack"
    backend = "notify"
    read_only = False
    summary = "Post `text` to a Slack channel through the configured incoming webhook"
    schema = type_schema({"text": {"type": "string", "minLength": 1},
                          "channel": {"type": "string"},
                          "username": {"type": "string"}}, required=["text"])

    def _webhook(self) -> str | None:
        return webhook_url(self.ctx.backend_config("notify"))

    def plan(self) -> Plan:
        channel = self.args.get("channel") or "(webhook default channel)"
        url = self._webhook()
        if not url:
            return Plan(summary=f"no Slack webhook configured ({WEBHOOK_ENV}); post this by hand "
                        f"to {channel}: {self.args['text']}")
        host = urllib.parse.urlsplit(url).netloc or "webhook"
        return Plan(summary=f"post 1 message to {channel} via {host}",
                    changes=[Change(target=f"slack {channel}", operation="post",
                                    after=self.args["text"])],
                    data={"channel": self.args.get("channel"), "text": self.args["text"],
                          "username": self.args.get("username")})

    def apply(self, plan: Plan) -> Any:
        url = self._webhook()
        if not url:
            raise BackendError("notify", f"no Slack webhook configured ({WEBHOOK_ENV})")
        body = {k: v for k, v in plan.data.items() if v}
        left = self.ctx.remaining(10.0)
        status = post(url, body, timeout=10.0 if left is None else max(left, 0.1))
        return {"posted": True, "status": status, "channel": plan.data.get("channel")}


def webhook_url(notify_config: dict[str, Any]) -> str | None:
    """The environment's `notify.slack_webhook_url`, else OPSCTL_SLACK_WEBHOOK_URL (a secret)."""
    url = notify_config.get("slack_webhook_url") or os.environ.get(WEBHOOK_ENV) or None
    if url and urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        # urllib would say "unknown url type: '<the whole URL>'": the URL is the secret
        raise BackendError("notify", "the Slack webhook URL is not an http(s) URL (it must start "
                                     "with https://); it is a secret, so it is not shown: check "
                                     f"notify.slack_webhook_url in opsctl.yaml or {WEBHOOK_ENV}")
    return url


def post(url: str, body: dict[str, Any], timeout: float = 10.0) -> int:
    """POST one message (``text`` and/or Block Kit ``blocks``) to an incoming webhook; the HTTP
    status, or BackendError naming the host only (the URL's path is the secret)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    host = urllib.parse.urlsplit(url).netloc
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        raise BackendError("notify", f"Slack webhook at {host} answered HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise BackendError("notify", f"cannot reach the Slack webhook at {host}: {reason}") from None
