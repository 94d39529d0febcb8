"""A real Prometheus (Debian package) scrapes a running `watcher run` and loads our alerts."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from devkit.anvil import free_port
from tests.integration.test_daemon import _env, _wait_http
from watcher import __version__

ROOT = Path(__file__).resolve().parents[2]


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5)
    resp.raise_for_status()
    data = resp.json()
    assert data["status"] == "success", data
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def _wait_value(prom: str, expr: str, want: float, timeout: float = 60) -> dict[str, Any]:
    """Poll an instant query until it returns one series with value ``want``."""
    deadline = time.monotonic() + timeout
    last: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        last = _query(prom, expr)
        if len(last) == 1 and float(last[0]["value"][1]) == want:
            return last[0]
        time.sleep(0.5)
    raise AssertionError(f"{expr} never became {want}: {last}")


def _evaluated_rules(prom: str, timeout: float = 30) -> set[str]:
    """Names of the loaded alert rules once every one has been evaluated without error."""
    deadline = time.monotonic() + timeout
    while True:
        groups = httpx.get(f"{prom}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        health = {r["name"]: r["health"] for r in rules}
        if rules and all(h == "ok" for h in health.values()):
            return set(health)
        assert time.monotonic() < deadline, f"rules not healthy: {health}"
        time.sleep(0.5)


def _prometheus_config(tmp_path: Path, metrics_port: int) -> Path:
    shutil.copy(ROOT / "deploy" / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "rule_files:\n"
        "  - alerts.yml\n"
        "scrape_configs:\n"
        "  - job_name: watcher\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    return config


def test_prometheus_scrapes_the_watcher(tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: run `make install` (scripts/install_system_deps.sh)"
    api_port, metrics_port, prom_port = free_port(), free_port(), free_port()
    env = _env(tmp_path, WATCHER_API_PORT=str(api_port), WATCHER_METRICS_PORT=str(metrics_port))
    watcher = subprocess.Popen(
        [sys.executable, "-m", "watcher", "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    prometheus = subprocess.Popen(
        [
            binary,
            f"--config.file={_prometheus_config(prom_dir, metrics_port)}",
            f"--storage.tsdb.path={prom_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        cwd=prom_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    prom = f"http://127.0.0.1:{prom_port}"
    try:
        _wait_http(f"http://127.0.0.1:{metrics_port}/metrics")
        _wait_http(f"{prom}/-/ready")
        _wait_value(prom, 'up{job="watcher"}', 1)
        _wait_value(prom, 'watcher_up{job="watcher"}', 1)
        _wait_value(prom, 'watcher_db_up{job="watcher"}', 1)
        build = _wait_value(prom, "watcher_build_info", 1)
        assert build["metric"]["version"] == __version__
        rules = _evaluated_rules(prom)
        assert {"CreditedPaymentReorged", "RpcFailures", "DatabaseDown", "NoNewBlock"} <= rules
        # The watcher stops cleanly; Prometheus then sees the target down.
        watcher.send_signal(signal.SIGTERM)
        _, stderr = watcher.communicate(timeout=20)
        assert watcher.returncode == 0, stderr
        _wait_value(prom, 'up{job="watcher"}', 0)
    finally:
        for proc in (watcher, prometheus):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
            elif proc.stderr is not None and not proc.stderr.closed:
                proc.stderr.close()
