"""Incident communication: a Slack incoming-webhook message.

Posting is a side effect outside the system being repaired, so it is a mutating action: planned
(the exact text is shown) in a dry-run, confirmed like any change.  With no webhook configured the
plan is empty and the message is printed for the engineer to paste.  The text is given, or rendered
from a message template (``template: announce`` + ``vars``) that a team can override in its
environment (``opsctl.messages``).
"""

from __future__ import annotations

from typing import Any

from opsctl import messages, templating
from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.needs import Local
from opsctl.backends.slack import WEBHOOK_ENV, host, post, webhook_url
from opsctl.errors import ArgumentError, BackendError
from opsctl.records import Change, Plan

__all__ = ["WEBHOOK_ENV", "Slack", "post", "webhook_url"]


@register
class Slack(Action):
    """Post a message to Slack through an incoming webhook.

    The webhook comes from the environment's `notify: {slack_webhook_url: ...}` or
    `OPSCTL_SLACK_WEBHOOK_URL`; it is a secret and never printed.  The channel is `channel`, else
    the environment's `notify.channel`, else the webhook's own.

    ```yaml
    - id: announce
      action: notify.slack
      with:
        template: announce          # or text: "..."
        vars: {severity: P1, title: "Checkout errors", impact: "...", team: "@on-call"}
    ```
    """

    name = "notify.slack"
    permissions = (Local("notify", "the Slack incoming-webhook URL (a secret in the environment)",
                         apply=True),)
    backend = "notify"
    read_only = False
    summary = "Post `text` (or a message template) to a Slack channel through the configured incoming webhook"
    schema = type_schema({"text": {"type": "string"},
                          "template": {"enum": sorted(messages.DEFAULTS)},
                          "vars": {"type": "object", "default": {},
                                   "description": "values for the template (severity, title, impact...)"},
                          "channel": {"type": "string"},
                          "username": {"type": "string"}})

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        if ("text" in args) == ("template" in args):
            return [("text", "give exactly one of text and template")]
        return []

    def _config(self) -> dict[str, Any]:
        return self.ctx.backend_config("notify")

    def _text(self) -> str:
        if self.args.get("text"):
            return " ".join(str(self.args["text"]).split())
        if not self.args.get("template"):
            raise ArgumentError("notify.slack: give text or template")
        try:
            text, warning = messages.render(self.args["template"], self._config(),
                                            dict(self.args.get("vars") or {}))
        except templating.TemplateError as e:
            raise ArgumentError(f"notify.slack: message template {self.args['template']!r}: {e}") from None
        if warning:
            self.ctx.log(warning)
        if not text:
            raise ArgumentError(f"notify.slack: message template {self.args['template']!r} rendered empty")
        return text

    def plan(self) -> Plan:
        config = self._config()
        channel = self.args.get("channel") or config.get("channel") or None
        shown = channel or "(webhook default channel)"
        text = self._text()
        url = webhook_url(config)
        if not url:
            return Plan(summary=f"no Slack webhook configured ({WEBHOOK_ENV}); post this by hand "
                        f"to {shown}: {text}")
        return Plan(summary=f"post 1 message to {shown} via {host(url)}",
                    changes=[Change(target=f"slack {shown}", operation="post", after=text)],
                    data={"channel": channel, "text": text,
                          "username": self.args.get("username") or config.get("username")})

    def apply(self, plan: Plan) -> Any:
        url = webhook_url(self._config())
        if not url:
            raise BackendError("notify", f"no Slack webhook configured ({WEBHOOK_ENV})")
        body = {k: v for k, v in plan.data.items() if v}
        left = self.ctx.remaining(10.0)
        status = post(url, body, timeout=10.0 if left is None else max(left, 0.1))
        return {"posted": True, "status": status, "channel": plan.data.get("channel"),
                "text": plan.data.get("text")}
