"""The environment a test gives our settings or a `watcher` process: none of the
operator's variables leak in from the machine running the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

OURS = ("X402_", "STRIPE_", "WATCHER_")


def _ours(name: str) -> bool:
    return name.startswith(OURS) or name == "DATABASE_URL"


def clear(monkeypatch: pytest.MonkeyPatch, cwd: Path) -> None:
    """In-process: drop every variable our settings read and run from ``cwd`` (no stray .env)."""
    for key in list(os.environ):
        if _ours(key):
            monkeypatch.delenv(key)
    monkeypatch.chdir(cwd)


def process_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """For a subprocess: the machine's environment without ours, a data dir under ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not _ours(k)}
    env["WATCHER_DATA_DIR"] = str(tmp_path / "data")
    env.update(extra)
    return env


def run(
    cwd: Path, env: dict[str, str], *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """`python -m watcher ARGS` as an operator runs it, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
