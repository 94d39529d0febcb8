"""The `watcher` command line as an operator meets it: help, bad configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devkit import cli_env
from tests.unit.test_settings import PLACEHOLDERS


def test_help_lists_the_commands() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "watcher", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    for command in ("run", "api", "migrate"):
        assert command in proc.stdout


def test_cli_exits_2_and_starts_nothing_on_bad_production_config(tmp_path: Path) -> None:
    env = cli_env.process_env(tmp_path, WATCHER_ENV="production", **PLACEHOLDERS)
    proc = cli_env.run(tmp_path, env, "run", timeout=60)
    assert proc.returncode == 2
    for name in PLACEHOLDERS:
        assert name in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing started, not even the database


def test_cli_exits_2_on_a_bad_trusted_proxy_list(tmp_path: Path) -> None:
    env = cli_env.process_env(tmp_path, WATCHER_TRUSTED_PROXIES="127.0.0.1,10.0.0.0/40")
    for command in ("run", "api"):
        proc = cli_env.run(tmp_path, env, command, timeout=60)
        assert proc.returncode == 2
        assert "WATCHER_TRUSTED_PROXIES" in proc.stderr and "10.0.0.0/40" in proc.stderr
    assert not (tmp_path / "data").exists()


def test_cli_exits_2_on_a_bad_gateway_file_naming_file_and_table_path(tmp_path: Path) -> None:
    gateway = tmp_path / "gateway.toml"
    gateway.write_text(
        '[upstreams.weather]\nurl = "http://127.0.0.1:9000"\n\n'
        '[[routes]]\nmethod = "GET"\npath = "/v1/a"\nupstream = "weather"\nfree = true\n\n'
        '[[routes]]\nmethod = "GET"\npath = "/v1/b"\nupstream = "weather"\nprice_usd = 0.30\n'
    )
    env = cli_env.process_env(tmp_path)
    env["WATCHER_GATEWAY_CONFIG"] = str(gateway)
    for command in ("run", "api"):
        proc = cli_env.run(tmp_path, env, command, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert str(gateway) in proc.stderr
        assert "routes[1].price_usd (line 10)" in proc.stderr and "TOML number" in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing started


def test_cli_exits_2_when_the_gateway_file_is_missing_or_not_toml(tmp_path: Path) -> None:
    env = cli_env.process_env(tmp_path)
    broken = tmp_path / "broken.toml"
    broken.write_text("[upstreams.weather\n")
    for path, words in ((tmp_path / "absent.toml", "cannot read"), (broken, "line 1")):
        env["WATCHER_GATEWAY_CONFIG"] = str(path)
        proc = cli_env.run(tmp_path, env, "api", timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert str(path) in proc.stderr and words in proc.stderr
