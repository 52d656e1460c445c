"""Where alerts go: the `spaced:alerting` section of a stack file, validated.

    config:
      spaced:alerting:
        receivers:
          - {name: ops-hook, webhook: {url: "https://hooks.example.org/alerts", bearer_token: true}}
          - {name: ops-slack, slack: {channel: "#ops"}}
          - name: ops-mail
            email: {to: ops@example.org, from: alerts@example.org, smarthost: "smtp.example.org:587",
                    username: alerts}
        critical: [ops-slack, ops-mail]   # receivers of critical alerts (default: all)
        warning: [ops-slack]              # receivers of warnings (default: all)

Credentials are never in the stack file: a Slack webhook URL, an SMTP password and a webhook bearer
token are Docker secrets (`alertmanager_<receiver>_<credential>`), whose content comes from the
environment variable `SPACED_SECRET_<KEY>` of the machine that deploys (the Pulumi component sets it
from the stack's config secret `spaced:alert-<receiver>-<credential>`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SEVERITIES = ("critical", "warning")
_NAME = r"^[a-z][a-z0-9-]{0,40}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Webhook(_Strict):
    """An HTTP endpoint that gets Alertmanager's JSON; `bearer_token` adds a secret token."""

    url: str = Field(pattern=r"^https?://[^\s]+$")
    bearer_token: bool = False


class Slack(_Strict):
    """A Slack incoming webhook (its URL is the credential, a secret) and the channel to post in."""

    channel: str = Field(pattern=r"^[#@][^\s]+$")


class Email(_Strict):
    """Mail through an SMTP relay (`host:port`); with `username`, the password is a secret."""

    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    from_: str = Field(alias="from", pattern=r"^[^@\s]+@[^@\s]+$")
    smarthost: str = Field(pattern=r"^[^\s:]+:\d+$")
    username: str | None = None
    require_tls: bool = True


class Receiver(_Strict):
    """One place alerts go: exactly one of webhook, slack, email."""

    name: str = Field(pattern=_NAME)
    webhook: Webhook | None = None
    slack: Slack | None = None
    email: Email | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Receiver:
        kinds = [k for k in ("webhook", "slack", "email") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of webhook, slack, email (got {kinds or 'none'})")
        return self

    def secret_keys(self) -> list[str]:
        """Docker secret keys of this receiver's credentials (`alertmanager_<name>_<credential>`)."""
        base = f"alertmanager_{self.name.replace('-', '_')}"
        if self.slack is not None:
            return [f"{base}_slack_url"]
        if self.email is not None and self.email.username:
            return [f"{base}_smtp_password"]
        if self.webhook is not None and self.webhook.bearer_token:
            return [f"{base}_token"]
        return []


class Alerting(_Strict):
    """Receivers and which of them get each severity (default: every receiver)."""

    receivers: tuple[Receiver, ...] = ()
    critical: tuple[str, ...] | None = None
    warning: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _known_names(self) -> Alerting:
        names = [r.name for r in self.receivers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"receiver names must be unique: {', '.join(duplicates)}")
        for severity in SEVERITIES:
            unknown = [n for n in getattr(self, severity) or () if n not in names]
            if unknown:
                raise ValueError(f"{severity}: unknown receiver {', '.join(unknown)}; known: {names}")
        return self

    def receivers_for(self, severity: Literal["critical", "warning"]) -> tuple[str, ...]:
        """Names of the receivers of `severity`."""
        chosen = getattr(self, severity)
        return tuple(r.name for r in self.receivers) if chosen is None else chosen


def parse_alerting(raw: Mapping[str, Any] | None, where: str) -> Alerting:
    """The validated `spaced:alerting` mapping (None = no receivers).

    Raises StackSettingsError naming `where` and the field path of each problem.
    """
    from infra.app_stack.model import StackSettingsError  # model.py holds an Alerting: no cycle at import

    try:
        return Alerting.model_validate(raw or {})
    except ValidationError as error:
        problems = "; ".join(
            f"{where}.{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in error.errors()
        )
        raise StackSettingsError(re.sub(r"\s+", " ", problems)) from None


def alert_rows(
    alertmanager_alerts: list[dict[str, Any]], prometheus_alerts: dict[str, Any]
) -> list[dict[str, str]]:
    """One row per alert for `spaced alerts`: what Alertmanager holds (firing; `suppressed` when
    silenced or inhibited) plus what Prometheus still has pending (not sent to Alertmanager yet).

    `alertmanager_alerts`: the JSON of Alertmanager's GET /api/v2/alerts; `prometheus_alerts`: of
    Prometheus' GET /api/v1/alerts. Rows: state, alertname, severity, since (RFC 3339), where, summary.
    """
    rows = []
    for alert in alertmanager_alerts:
        labels, status = alert.get("labels", {}), alert.get("status", {})
        state = "suppressed" if status.get("state") == "suppressed" else "firing"
        rows.append(_row(state, labels, alert.get("annotations", {}), alert.get("startsAt", "")))
    for alert in prometheus_alerts.get("data", {}).get("alerts", []):
        if alert.get("state") == "pending":
            rows.append(
                _row(
                    "pending",
                    alert.get("labels", {}),
                    alert.get("annotations", {}),
                    alert.get("activeAt", ""),
                )
            )
    order = {"firing": 0, "pending": 1, "suppressed": 2}
    return sorted(rows, key=lambda r: (order[r["state"]], r["alertname"], r["where"]))


def _row(state: str, labels: Mapping[str, str], annotations: Mapping[str, str], since: str) -> dict[str, str]:
    where = labels.get("instance") or labels.get("job") or labels.get("mountpoint") or "-"
    return {
        "state": state,
        "alertname": labels.get("alertname", "?"),
        "severity": labels.get("severity", "-"),
        "since": since[:19].replace("T", " "),
        "where": where,
        "summary": annotations.get("summary", ""),
    }
