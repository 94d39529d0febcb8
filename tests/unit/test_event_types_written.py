"""Every event type of the contract is written somewhere: its literal appears in the code
that writes it (Python or SQL under watcher/ and api/), outside the list itself."""

from __future__ import annotations

import re
from pathlib import Path

from watcher import events

ROOT = Path(__file__).resolve().parents[2]
# Written by the ledger's own transitions and by the delivery worker (their tests say so).
ELSEWHERE = re.compile(r"^(payment|invoice)\.|^token\.issued$|^webhook_endpoint\.disabled$")


def _sources() -> str:
    files = [
        *ROOT.glob("watcher/**/*.py"),
        *ROOT.glob("watcher/**/*.sql"),
        *ROOT.glob("api/**/*.py"),
    ]
    return "\n".join(
        f.read_text() for f in sorted(files) if f.resolve() != Path(events.__file__).resolve()
    )


def test_every_type_is_written_somewhere() -> None:
    text = _sources()
    ours = [t for t in events.TYPES if not ELSEWHERE.search(t)]
    # token.used_up, three x402_settlement.*, six subscription.*, four refund.*
    assert len(ours) == 14
    missing = [t for t in ours if f'"{t}"' not in text and f"'{t}'" not in text]
    assert missing == [], f"event types nothing writes: {missing}"
