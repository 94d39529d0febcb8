"""The embedded PostgreSQL never takes a data dir from the user who owns it.

Run as root, pgserver chowns pgdata to its own ``pgserver`` user and opens the parent
directories to everyone, even to join a running server: ``sudo watcher explain`` on a
host where the service user owns /var/lib/usdc-watcher would leave the service unable to
start its database. watcher/db.py refuses instead, naming the variable and the owner.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from watcher import db

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534  # a uid that is neither root's nor pgserver's


def _explain(data: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    logs = tmp_path / "logs.json"
    logs.write_text("[]")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("X402_", "STRIPE_", "WATCHER_")) and k != "DATABASE_URL"
    }
    env["WATCHER_DATA_DIR"] = str(data)
    return subprocess.run(
        [sys.executable, "-m", "watcher", "explain", "--chain", "base", "--from-file",
         str(logs), "--receiver", "0x" + "ab" * 20],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def test_another_users_pgdata_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        # Without root no file of another user can be made here; "/" is root's.
        with pytest.raises(PermissionError, match="WATCHER_DATA_DIR: '/' belongs to root"):
            db.refuse_foreign_pgdata(Path("/"))
        return
    data = tmp_path / "service data"
    pgdata = data / "pgdata"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("16\n")
    for path in (data, pgdata):
        path.chmod(0o700)
        os.chown(path, NOBODY, NOBODY)
    before = [(p.stat().st_uid, stat.S_IMODE(p.stat().st_mode)) for p in (data, pgdata)]
    done = _explain(data, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"WATCHER_DATA_DIR: {str(pgdata)!r} belongs to " in done.stdout
    assert "as root the embedded PostgreSQL would chown it away from its owner" in done.stdout
    after = [(p.stat().st_uid, stat.S_IMODE(p.stat().st_mode)) for p in (data, pgdata)]
    assert after == before  # not chowned to pgserver, not opened to everyone
    assert sorted(p.name for p in pgdata.iterdir()) == ["PG_VERSION"]  # nothing started
    # Before any pgdata exists, root does not make one in another user's data dir either.
    (pgdata / "PG_VERSION").unlink()
    pgdata.rmdir()
    with pytest.raises(PermissionError, match="service data' belongs to "):
        db.refuse_foreign_pgdata(pgdata)
    assert not pgdata.exists()


def test_own_and_pgservers_data_dirs_are_taken(tmp_path: Path) -> None:
    db.refuse_foreign_pgdata(tmp_path / "new" / "pgdata")  # nothing there yet
    db.refuse_foreign_pgdata(tmp_path / "pgdata")  # this user's directory
