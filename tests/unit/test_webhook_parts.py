"""The webhook parts that need no database: wire format, signatures, retry schedule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
import standardwebhooks

from watcher.settings import Settings
from watcher.webhooks import payload, schedule, signing, worker

ROW = {
    "id": 42,
    "type": "payment.credited",
    "created_at": datetime(2026, 12, 1, 15, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2))),
    "data": '{"object": "payment", "id": "7", "amount": "1000000", "note": "café"}',
}


def test_body_is_the_compact_wire_format_in_utc() -> None:
    raw = payload.body(ROW)
    assert (
        raw
        == (
            '{"id":"evt_42","type":"payment.credited","timestamp":"2026-12-01T13:04:05.123456Z",'
            '"sequence":42,"data":{"object":"payment","id":"7","amount":"1000000","note":"café"}}'
        ).encode()
    )
    assert json.loads(raw)["data"] == json.loads(ROW["data"])
    assert payload.body({**ROW, "data": json.loads(ROW["data"])}) == raw


def test_new_secrets_are_whsec_base64_of_enough_random_bytes() -> None:
    a, b = signing.new_secret(), signing.new_secret()
    assert a != b and a.startswith("whsec_")
    import base64

    assert len(base64.b64decode(a.removeprefix("whsec_"))) >= 24
    assert standardwebhooks.Webhook(a)  # the package accepts our form


def test_headers_verify_with_the_package_for_every_secret_and_are_fresh_per_attempt() -> None:
    new, old, other = signing.new_secret(), signing.new_secret(), signing.new_secret()
    body = payload.body(ROW)
    now = datetime.now(UTC)
    h = signing.headers("evt_42", body, [new, old], now)
    assert h["webhook-id"] == "evt_42" and h["webhook-timestamp"] == str(int(now.timestamp()))
    assert len(h["webhook-signature"].split(" ")) == 2
    for key in (new, old):
        assert standardwebhooks.Webhook(key).verify(body, h)["id"] == "evt_42"
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(other).verify(body, h)
    later = signing.headers("evt_42", body, [new], now + timedelta(seconds=30))
    assert later["webhook-timestamp"] != h["webhook-timestamp"]
    assert later["webhook-signature"] not in h["webhook-signature"]
    stale = signing.headers("evt_42", body, [new], now - timedelta(minutes=10))
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new).verify(body, stale)
    with pytest.raises(ValueError):
        signing.headers("evt_42", body, [], now)


def test_schedule_parses_units_and_refuses_nonsense() -> None:
    assert schedule.parse(schedule.DEFAULT) == (
        5,
        300,
        1800,
        7200,
        18000,
        36000,
        36000,
        36000,
        50400,
        72000,
    )
    assert 2.9 * 86400 < sum(schedule.parse(schedule.DEFAULT)) < 3.1 * 86400
    assert schedule.parse("0.05s, 100ms,2,1d") == (0.05, 0.1, 2.0, 86400.0)
    for bad in ("", "5x", "5s,,5s", "0s", "8d", "-1s", ",".join(["1s"] * 51)):
        with pytest.raises(ValueError):
            schedule.parse(bad)
    s = schedule.parse("1s,2s")
    assert [schedule.delay_after(s, k) for k in (1, 2, 3)] == [1.0, 2.0, None]
    assert schedule.attempts(s) == 3


def test_settings_carry_the_webhook_variables_and_name_a_bad_schedule() -> None:
    s = Settings(watcher_webhook_retry_schedule="0.1s,1s", watcher_webhook_concurrency=4)
    cfg = worker.Config.from_settings(s)
    assert cfg.schedule == (0.1, 1.0) and cfg.concurrency == 4 and cfg.timeout == 10.0
    assert cfg.disable_after_hours == 120.0
    assert not cfg.policy.production  # WATCHER_ENV's default: development
    assert worker.Config(schedule=(1.0,)).policy.production  # unsaid: the strict one
    bad = Settings(watcher_webhook_retry_schedule="soon")
    assert any(p.startswith("WATCHER_WEBHOOK_RETRY_SCHEDULE:") for p in bad.problems())
    assert not any("WEBHOOK" in p for p in Settings().problems())


def test_snippet_is_text_capped_at_one_kib() -> None:
    assert worker.snippet(b"") is None
    assert worker.snippet(b"a\x00b") == "ab"
    assert len(worker.snippet(b"\xff" * 5000) or "") == 1024
