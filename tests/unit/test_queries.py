"""Named queries: watcher/sql/*.sql load as one namespace, a name defined twice is refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from watcher import db, errors

ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = ROOT / "watcher" / "sql"


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text, encoding="utf-8")


def test_a_name_in_two_files_is_refused_naming_both(tmp_path: Path) -> None:
    write(tmp_path, "ledger.sql", "-- name: ping\nSELECT 1;\n\n-- name: other\nSELECT 2;\n")
    write(tmp_path, "ops.sql", "-- Ops.\n\n-- name: ping\nSELECT 1;\n")
    with pytest.raises(errors.QueryFileError) as caught:
        db.load_queries(tmp_path)
    message = str(caught.value)
    assert "'ping'" in message
    assert "ledger.sql" in message and "ops.sql" in message


def test_a_name_twice_in_one_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "api.sql", "-- name: ping\nSELECT 1;\n\n-- name: ping\nSELECT 2;\n")
    with pytest.raises(errors.QueryFileError, match=r"'ping' defined twice in api\.sql"):
        db.load_queries(tmp_path)


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "notes.txt", "-- name: ping\nSELECT 1;\n")
    with pytest.raises(errors.QueryFileError, match="no named-query files"):
        db.load_queries(tmp_path)


def test_files_are_one_namespace(tmp_path: Path) -> None:
    write(tmp_path, "a.sql", "-- A.\n\n-- name: one\nSELECT 1;\n")
    write(tmp_path, "b.sql", "-- B.\n\n-- name: two\n-- Why.\nSELECT 2;\n")
    assert db.load_queries(tmp_path) == {"one": "SELECT 1;", "two": "-- Why.\nSELECT 2;"}


def test_every_file_of_the_tree_says_what_it_holds() -> None:
    files = sorted(SQL_DIR.glob("*.sql"))
    assert [f.name for f in files] == [
        "api.sql",
        "events.sql",
        "evm.sql",
        "gateway.sql",
        "ledger.sql",
        "ops.sql",
        "refunds.sql",
        "refunds_solana.sql",
        "solana.sql",
        "stripe.sql",
        "webhook_admin.sql",
        "webhooks.sql",
        "x402.sql",
    ]
    for file in files:
        first = file.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("-- ") and "name:" not in first, file.name


def test_the_packaged_loader_reads_the_tree() -> None:
    by_file = {
        f.name: db.parse_queries(f.read_text(encoding="utf-8"), f.name)
        for f in SQL_DIR.glob("*.sql")
    }
    union = {name for names in by_file.values() for name in names}
    assert set(db.queries()) == union
    assert sum(len(names) for names in by_file.values()) == len(union)


def test_every_query_the_code_names_exists() -> None:
    # A literal q("name") in watcher/ or api/ that no file defines would fail only when run.
    named = re.compile(r"""\bq\(\s*["']([a-z_][a-z0-9_]*)["']\s*\)""")
    used = {
        m.group(1)
        for package in ("watcher", "api")
        for path in (ROOT / package).rglob("*.py")
        for m in named.finditer(path.read_text(encoding="utf-8"))
    }
    assert used, "the pattern found no q(...) calls"
    assert used - set(db.queries()) == set()
