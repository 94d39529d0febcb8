"""``watcher webhooks …`` and ``watcher event-key …`` as an operator runs them: real
processes on a real PostgreSQL; secrets and keys printed once; bad input exits 2."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devkit.api_support import record_payment
from watcher import db, keys


def _env(tmp_path: Path, database_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("X402_", "STRIPE_", "WATCHER_")) and k != "DATABASE_URL"
    }
    env["DATABASE_URL"] = database_url
    env["WATCHER_DATA_DIR"] = str(tmp_path / "data")
    env["WATCHER_OPERATOR"] = "ops@example.com"  # who acts, as an operator's shell sets it
    return env


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "watcher", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def ok(env: dict[str, str], *args: str) -> Any:
    done = await cli(env, *args, "--json")
    assert done.returncode == 0, (args, done.stderr)
    return json.loads(done.stdout)


async def test_endpoints_events_redelivery_and_replay_from_the_cli(
    pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    env = _env(tmp_path, database_url)
    made = await cli(
        env,
        "webhooks",
        "create",
        "--url",
        "https://h.example/usdc",
        "--events",
        "payment.credited",
        "--description",
        "orders",
        "--operator",
        "alice",
    )
    assert made.returncode == 0, made.stderr
    secret = next(w for w in made.stdout.split() if w.startswith("whsec_"))
    hook = await pool.fetchrow("SELECT id, secret, created_by FROM webhook_endpoints")
    assert hook["secret"] == secret and hook["created_by"].startswith("cli")
    listed = await ok(env, "webhooks", "list")
    assert [i["id"] for i in listed] == [hook["id"]] and secret not in json.dumps(listed)
    changed = await ok(env, "webhooks", "update", hook["id"], "--events", "*", "--disable")
    assert (changed["events"], changed["enabled"]) == (["*"], False)
    await ok(env, "webhooks", "update", hook["id"], "--enable")
    await record_payment(pool)
    feed = await ok(env, "webhooks", "events", "--type", "payment.credited")
    (evt,) = feed["data"]
    assert evt["type"] == "payment.credited" and feed["next"] == evt["id"]
    await pool.execute("UPDATE webhook_deliveries SET status = 'failed'")
    again = await ok(env, "webhooks", "redeliver", evt["id"], "--endpoint", hook["id"])
    assert again["status"] == "pending"
    shown = await ok(env, "webhooks", "deliveries", evt["id"])
    assert [d["status"] for d in shown["deliveries"]] == ["pending"]
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    replayed = await ok(env, "webhooks", "replay", hook["id"], "--since", since)
    assert (replayed["matched"], replayed["created"]) == (2, 0)  # observed + credited
    rotated = await ok(env, "webhooks", "rotate-secret", hook["id"], "--grace-hours", "2")
    assert rotated["secret"] != secret
    assert await pool.fetchval("SELECT previous_secret FROM webhook_endpoints") == secret
    gone = await ok(env, "webhooks", "delete", hook["id"])
    assert gone["deleted"] is True
    missing = await cli(env, "webhooks", "delete", hook["id"])
    assert missing.returncode == 1 and hook["id"] in missing.stderr
    audit = await pool.fetch("SELECT action, operator, client FROM admin_audit ORDER BY id")
    assert [a["action"] for a in audit] == [
        "webhook.create",
        "webhook.update",
        "webhook.update",
        "event.redeliver",
        "webhook.replay",
        "webhook.rotate_secret",
        "webhook.delete",
    ]
    # the flag wins over WATCHER_OPERATOR; the client says from which login
    assert [a["operator"] for a in audit] == ["alice"] + ["ops@example.com"] * 6
    assert all(a["client"].startswith("cli") for a in audit)


async def test_bad_input_exits_2_naming_the_problem(
    pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    env = _env(tmp_path, database_url)
    cases = [
        (("create", "--url", "https://h.example/x", "--events", "payment.paid"), "payment.paid"),
        (("create", "--url", "gopher://h.example/x", "--events", "*"), "gopher"),
        (("update", "we_" + "0" * 32), "nothing to change"),
        (("replay", "we_" + "0" * 32, "--since", "last week"), "--since"),
        (("replay", "we_" + "0" * 32, "--since", "2026-12-01T00:00:00"), "zone"),
        (("deliveries", "evt_x"), "evt_x"),
        (("events", "--limit", "0"), "--limit"),
        (("rotate-secret", "we_" + "0" * 32, "--grace-hours", "1000"), "grace_hours"),
    ]
    for args, named in cases:
        done = await cli(env, "webhooks", *args)
        assert done.returncode == 2 and named in done.stderr, (args, done.stderr)
    nothing = await cli(env, "webhooks", "deliveries", "evt_42")
    assert nothing.returncode == 1 and "evt_42" in nothing.stderr
    assert await pool.fetchval("SELECT count(*) FROM webhook_endpoints") == 0


async def test_feed_keys_are_printed_once_and_revocable(
    pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    env = _env(tmp_path, database_url)
    made = await cli(env, "event-key", "create", "--name", "order system")
    assert made.returncode == 0, made.stderr
    key = next(w for w in made.stdout.split() if w.startswith("erk_"))
    row = await pool.fetchrow("SELECT id, key_hash, key_prefix FROM event_read_keys")
    assert bytes(row["key_hash"]) == keys.sha256(key) and key.startswith(row["key_prefix"])
    (item,) = await ok(env, "event-key", "list")
    assert item["name"] == "order system" and key not in json.dumps(item)
    gone = await cli(env, "event-key", "revoke", str(row["id"]))
    twice = await cli(env, "event-key", "revoke", str(row["id"]))
    assert (gone.returncode, twice.returncode) == (0, 1)
    bad = await cli(env, "event-key", "create", "--name", " ")
    assert bad.returncode == 2 and "--name" in bad.stderr
    audit = await pool.fetch("SELECT action, subject, operator FROM admin_audit ORDER BY id")
    assert [tuple(a.values()) for a in audit] == [
        ("event_key.create", str(row["id"]), "ops@example.com"),
        ("event_key.revoke", str(row["id"]), "ops@example.com"),
    ]


async def test_a_change_without_an_operator_exits_2_and_writes_nothing(
    pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    env = _env(tmp_path, database_url)
    del env["WATCHER_OPERATOR"]
    hook = "we_" + "0" * 32
    changes = [
        ("webhooks", "create", "--url", "https://h.example/x", "--events", "*"),
        ("webhooks", "update", hook, "--disable"),
        ("webhooks", "delete", hook),
        ("webhooks", "rotate-secret", hook),
        ("webhooks", "redeliver", "evt_1", "--endpoint", hook),
        ("webhooks", "replay", hook, "--since", "2026-12-01T00:00:00Z"),
        ("event-key", "create", "--name", "orders"),
        ("event-key", "revoke", "1"),
    ]
    for args in changes:
        done = await cli(env, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "--operator" in done.stderr and "WATCHER_OPERATOR" in done.stderr, done.stderr
    bad = await cli(env, "event-key", "create", "--name", "orders", "--operator", "<script>")
    assert bad.returncode == 2 and "not an operator name" in bad.stderr, bad.stderr
    blank = await cli({**env, "WATCHER_OPERATOR": "  "}, "event-key", "create", "--name", "o")
    assert blank.returncode == 2 and "--operator" in blank.stderr, blank.stderr
    # reading needs no name: it changes nothing and is not audited
    assert (await cli(env, "webhooks", "list")).returncode == 0
    assert (await cli(env, "event-key", "list")).returncode == 0
    for table in ("webhook_endpoints", "event_read_keys", "admin_audit"):
        assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 0, table
