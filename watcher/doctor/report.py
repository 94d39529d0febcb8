"""The doctor's report: rows, masking, score, the table and the JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Literal
from urllib.parse import urlsplit

from pydantic import SecretStr

from watcher.settings import Settings

Status = Literal["ok", "warn", "fail"]
SYMBOL: dict[Status, str] = {"ok": "✓", "warn": "⚠", "fail": "✗"}
_RANK: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class Check:
    """One row of the report."""

    group: str
    name: str
    status: Status
    value: str
    fix: str = ""


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe status (ok for none)."""
    return max(statuses, key=_RANK.__getitem__, default="ok")


# ---- masking ------------------------------------------------------------------------------


def mask_dsn(dsn: str) -> str:
    """``postgresql://user:***@host:port/db``: the password never shows."""
    parts = urlsplit(dsn)
    user = parts.username or ""
    cred = f"{user}:***@" if parts.password else (f"{user}@" if user else "")
    host = parts.hostname or "(unix socket)"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{cred}{host}{port}{parts.path}"


def mask_secret(value: str, prefix_len: int = 8) -> str:
    """A known prefix (``sk_live_``) and the last 4 characters, as Stripe's dashboard shows."""
    if len(value) <= prefix_len + 8:
        return f"{value[:3]}… ({len(value)} chars)"
    return f"{value[:prefix_len]}…{value[-4:]}"


def secret(value: SecretStr | None) -> str | None:
    if value is None:
        return None
    text = value.get_secret_value().strip()
    return text or None


# ---- report -------------------------------------------------------------------------------


def score(checks: list[Check]) -> int:
    """0..100: ✓ counts 1, ⚠ a half, ✗ nothing."""
    if not checks:
        return 0
    points = sum({"ok": 2, "warn": 1, "fail": 0}[c.status] for c in checks)
    return round(Decimal(100 * points) / (2 * len(checks)))


def ready(checks: list[Check], settings: Settings) -> bool:
    """Production-ready: nothing failed and the daemon runs in production mode."""
    return settings.production and all(c.status != "fail" for c in checks)


GROUP_ORDER = ("settings", "rpc", "contracts", "database", "stripe", "gateway", "screening")


def ordered(checks: list[Check]) -> list[Check]:
    """Rows grouped in reading order (settings first), keeping order within a group."""
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    return sorted(checks, key=lambda c: rank.get(c.group, len(rank)))


def render(checks: list[Check], settings: Settings) -> str:
    """The human report: grouped rows, each fix under its row, then the score and verdict."""
    checks = ordered(checks)
    name_w = min(max((len(c.name) for c in checks), default=10), 44)
    lines = []
    group = None
    for c in checks:
        if c.group != group:
            group = c.group
            lines.append(f"\n{group}")
        lines.append(f"  {SYMBOL[c.status]} {c.name:<{name_w}}  {c.value}".rstrip())
        if c.fix and c.status != "ok":
            lines.append(f"      fix: {c.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")}
    verdict = "production-ready" if ready(checks, settings) else "NOT production-ready"
    lines.append(
        f"\nscore {score(checks)}/100: {verdict} "
        f"({counts['ok']} ✓, {counts['warn']} ⚠, {counts['fail']} ✗)"
    )
    return "\n".join(lines).lstrip("\n")


def to_json(checks: list[Check], settings: Settings) -> str:
    return json.dumps(
        {
            "ready": ready(checks, settings),
            "score": score(checks),
            "checks": [asdict(c) for c in ordered(checks)],
        },
        indent=2,
        ensure_ascii=False,
    )
