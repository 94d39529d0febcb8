"""`watcher run` / `watcher api` refuse a bad screening configuration with exit code 2, the
message naming the variable (and, for a malformed deny-list, the file and line)."""

from __future__ import annotations

from pathlib import Path

from devkit import cli_env


def test_a_malformed_deny_list_stops_the_start_naming_file_and_line(tmp_path: Path) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text("# ours\n0x" + "12" * 20 + "\n0xnot-an-address\n")
    env = cli_env.process_env(tmp_path, X402_DENYLIST_FILE=str(deny))
    for command in ("run", "api"):
        proc = cli_env.run(tmp_path, env, command, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert f"X402_DENYLIST_FILE: {deny} line 3" in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing started, not even the database


def test_a_missing_deny_list_or_an_inexact_threshold_is_a_settings_problem(
    tmp_path: Path,
) -> None:
    env = cli_env.process_env(
        tmp_path, X402_DENYLIST_FILE=str(tmp_path / "absent.txt"), X402_HOLD_ABOVE_USD="1.0000001"
    )
    proc = cli_env.run(tmp_path, env, "run", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "X402_DENYLIST_FILE" in proc.stderr and "does not exist" in proc.stderr
    assert "X402_HOLD_ABOVE_USD: 1.0000001 has more than 6 decimal places" in proc.stderr
