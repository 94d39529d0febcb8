"""The event types: the docs' list is the contract, and it is watcher.events.TYPES."""

from __future__ import annotations

import re
from pathlib import Path

from watcher import events

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def test_the_docs_list_every_type_and_no_other() -> None:
    text = DOC.read_text()
    section = text.split("### Event types", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z0-9_.]+)` \|", section, flags=re.MULTILINE)
    assert listed == list(events.TYPES)


def test_types_are_dotted_lower_case_and_name_their_resource() -> None:
    pattern = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
    for type_ in events.TYPES:
        assert pattern.match(type_), type_
    resources = {t.split(".", 1)[0] for t in events.TYPES}
    assert resources == {
        "payment",
        "invoice",
        "token",
        "x402_settlement",
        "subscription",
        "webhook_endpoint",
        "refund",
    }


def test_public_ids_round_trip_and_refuse_junk() -> None:
    assert events.public_id(42) == "evt_42"
    assert events.parse_public_id("evt_42") == 42
    assert events.parse_public_id("42") == 42
    for bad in ("evt_", "evt_-1", "evt_4 2", "evt_٤٢", "evt_1e3", "x" * 40):
        assert events.parse_public_id(bad) is None, bad
