"""`watcher holds` as an operator runs it, on the database directly (issue 16)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from devkit import cli_env
from watcher import db, ledger
from watcher.screening import core

ROOT = Path(__file__).resolve().parents[2]
LISTED = "0x" + "dd" * 20


class Listed:
    def lookup(self, address: str) -> str | None:
        return "the test list" if address == LISTED else None


async def _held(pool: db.Pool, i: int) -> int:
    t = ledger.Transfer(
        chain="base",
        tx_hash="0x" + f"{i:064x}",
        log_index=0,
        block_number=10 + i,
        block_hash="0x" + f"{i + 1000:064x}",
        token="0x" + "bb" * 20,
        to_address="0x" + "aa" * 20,
        amount=1_000_000,
        from_address=LISTED,
        tx_sender=LISTED,
        block_time=datetime.now(UTC),
    )
    core.install(core.Screen(denylist=Listed()))
    try:
        async with pool.acquire() as conn, conn.transaction():
            (row,) = await ledger.record(conn, [t])
            await ledger.credit(conn, [row["id"]])
    finally:
        core.install(core.Screen())
    return int(row["id"])


async def test_list_show_release_and_reject_name_the_operator(
    pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    first, second = await _held(pool, 1), await _held(pool, 2)
    env = cli_env.process_env(tmp_path, DATABASE_URL=database_url)
    listed = cli_env.run(ROOT, env, "holds", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [p["id"] for p in json.loads(listed.stdout)] == [first, second]
    shown = cli_env.run(ROOT, env, "holds", "show", str(first))
    assert shown.returncode == 0 and "rule denylist (weight 100)" in shown.stdout
    anonymous = cli_env.run(ROOT, env, "holds", "release", str(first), "--reason", "ok")
    assert anonymous.returncode == 2 and "--operator" in anonymous.stderr
    released = cli_env.run(
        ROOT, env, "holds", "release", str(first), "--reason", "known", "--operator", "bob"
    )
    assert released.returncode == 0, released.stderr
    assert "reviewed by bob" in released.stdout
    again = cli_env.run(
        ROOT, env, "holds", "reject", str(first), "--reason", "no", "--operator", "bob"
    )
    assert again.returncode == 1 and "is credited, not held" in again.stderr
    rejected = cli_env.run(
        ROOT,
        {**env, "WATCHER_OPERATOR": "carol"},
        "holds",
        "reject",
        str(second),
        "--reason",
        "listed",
        "--json",
    )
    assert rejected.returncode == 0, rejected.stderr
    assert json.loads(rejected.stdout)["state"] == "rejected"
    audit = await pool.fetch("SELECT action, operator FROM admin_audit ORDER BY id")
    assert [(a["action"], a["operator"]) for a in audit] == [
        ("payment.release", "bob"),
        ("payment.reject", "carol"),
    ]
    none = cli_env.run(ROOT, env, "holds", "show", "999999")
    assert none.returncode == 1
