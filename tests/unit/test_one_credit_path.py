"""One credit path: only watcher/ledger.py moves a payment's state (docs/ledger.md).

Three scans, each checked against known offenders so none passes by seeing nothing:
every named query that writes ``payments.state`` (or the reorg flag, or inserts a
payment) is one ledger.py owns; no other Python module names those queries, calls
``db.q`` with a name nobody can read, or carries such SQL in a string of its own.
The database side (functions and triggers) is tests/integration/test_ledger_path.py.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher import db, ledger

ROOT = Path(__file__).resolve().parents[2]
LEDGER = ROOT / "watcher" / "ledger.py"
# The code that ships or runs against a real database; tests set up rows as they need.
SCANNED = ("watcher", "api", "scripts")

_COMMENT = re.compile(r"--[^\n]*")
# An insert creates a payment in some state; an update counts when its SET moves one.
_WRITE = re.compile(
    r"\bINSERT\s+INTO\s+payments\b"
    r"|\bUPDATE\s+payments\b(?:\s+(?:AS\s+)?(?!SET\b)\w+)?\s+SET\b"
    r"(?P<set>.*?)(?=\bWHERE\b|\bFROM\b|\bRETURNING\b|;|\Z)",
    re.IGNORECASE | re.DOTALL,
)
_MOVED = re.compile(r"(?:^|,)\s*(?:\w+\.)?(?:state|reorged_after_credit)\s*=", re.IGNORECASE)
_TRIGGER_MOVES = re.compile(r"\bNEW\.(?:state|reorged_after_credit)\s*:=", re.IGNORECASE)


def writes_payment_state(sql: str) -> bool:
    """Whether ``sql`` inserts a payment, sets its state or reorg flag, or (a trigger) would."""
    text = _COMMENT.sub("", sql)
    for m in _WRITE.finditer(text):
        if m.group("set") is None or _MOVED.search(m.group("set")):
            return True
    return bool(_TRIGGER_MOVES.search(text))


@pytest.mark.parametrize(
    ("sql", "writes"),
    [
        ("UPDATE payments SET state = 'credited' WHERE id = $1", True),
        ("update payments p\nset reason = $2, state = 'orphaned' from x where p.id = x.id", True),
        ("UPDATE payments AS p SET reorged_after_credit = true WHERE id = 1", True),
        ("INSERT INTO payments (chain, tx_hash) VALUES ($1, $2)", True),
        ("BEGIN NEW.state := 'claimed'; RETURN NEW; END", True),
        ("WITH m AS (UPDATE payments SET state = 'claimed' FROM t) SELECT 1", True),
        ("UPDATE payments SET invoice_id = 1, updated_at = now() WHERE state = 'credited'", False),
        ("SELECT state FROM payments WHERE id = $1", False),
        ("UPDATE payments_other SET state = 'x'", False),
        ("UPDATE invoices SET status = 'expired' -- UPDATE payments SET state = 'x'", False),
    ],
)
def test_the_scan_tells_a_state_write_from_anything_else(sql: str, writes: bool) -> None:
    assert writes_payment_state(sql) is writes


def test_the_ledger_owns_exactly_the_queries_that_move_a_payment() -> None:
    moving = {name for name, sql in db.queries().items() if writes_payment_state(sql)}
    assert sorted(moving - ledger.STATE_QUERIES) == []  # a query moving state outside it
    assert sorted(ledger.STATE_QUERIES - moving) == []  # stale names on the allow-list


def _python_files() -> Iterator[Path]:
    for top in SCANNED:
        yield from sorted((ROOT / top).rglob("*.py"))


def _is_db_q(node: ast.Call) -> bool:
    f = node.func
    return isinstance(f, ast.Attribute) and f.attr == "q" and getattr(f.value, "id", "") == "db"


def _violations(path: Path) -> list[str]:
    out: list[str] = []
    rel = path.relative_to(ROOT)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in ledger.STATE_QUERIES:
                out.append(f"{rel}:{node.lineno} names ledger query {node.value!r}")
            elif writes_payment_state(node.value):
                out.append(f"{rel}:{node.lineno} writes payments.state in its own SQL")
        elif (
            isinstance(node, ast.Call)
            and _is_db_q(node)
            and node.args
            and not isinstance(node.args[0], ast.Constant | ast.Name | ast.Subscript)
        ):
            out.append(f"{rel}:{node.lineno} builds a query name nobody can audit")
    return out


def test_no_module_but_the_ledger_runs_or_writes_a_state_transition() -> None:
    files = [p for p in _python_files() if p != LEDGER]
    assert len(files) > 50  # the scan really reads the code base
    found = [v for p in files for v in _violations(p)]
    assert found == []


def test_the_scan_of_python_finds_what_it_looks_for() -> None:
    # The ledger itself names every query it owns: the same scan, pointed at it, says so.
    named = {
        node.value
        for node in ast.walk(ast.parse(LEDGER.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert named >= ledger.STATE_QUERIES
    assert len(_violations(LEDGER)) >= len(ledger.STATE_QUERIES)
