"""`watcher doctor`'s Gateway section: the routes listed, each upstream probed over real
HTTP (a live http.server, a dead port, a port that accepts and never answers)."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.anvil import free_port
from tests.integration.test_doctor import _doctor_cli
from watcher import doctor
from watcher.doctor import report
from watcher.doctor.report import Check
from watcher.settings import Settings

SECRET = "k3Yq9-Vb2_Zr8LmN0pXc7TfWs4HjUe6AoIdGyRnE1Ql"


class _Answer404(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer404)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def silent() -> Iterator[int]:
    """Accepts connections (the backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _file(tmp_path: Path, live: int, dead: int, silent: int) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[upstreams.weather]\nurl = "http://127.0.0.1:{live}"\n'
        f'[upstreams.dead]\nurl = "http://127.0.0.1:{dead}"\n'
        f'[upstreams.silent]\nurl = "http://127.0.0.1:{silent}"\n'
        "connect_timeout_seconds = 1\ntimeout_seconds = 1\n"
        '[[routes]]\nmethod = "GET"\npath = "/v1/forecast/{city}"\nupstream = "weather"\n'
        'upstream_path = "/api/forecast/{city}"\nprice_usd = "0.30"\n'
        '[[routes]]\nmethod = "GET"\npath = "/v1/raw"\nupstream = "dead"\n'
        'price_usd = "0.000123"\nrails = ["x402"]\n'
        '[[routes]]\nmethod = "GET"\npath = "/v1/health"\nupstream = "silent"\nfree = true\n'
    )
    return path


def _row(rows: list[Check], name: str) -> Check:
    found = [r for r in rows if r.group == "gateway" and r.name == name]
    assert len(found) == 1, [r.name for r in rows if r.group == "gateway"]
    return found[0]


async def test_routes_are_listed_and_each_upstream_probed(
    tmp_path: Path, upstream: int, silent: int, database_url: str
) -> None:
    dead = free_port()
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        watcher_gateway_config=str(_file(tmp_path, upstream, dead, silent)),
        watcher_gateway_secret=SECRET,
    )
    rows = await asyncio.wait_for(doctor.examine(settings, seconds=5.0), 60)
    forecast = _row(rows, "GET /v1/forecast/{city}")
    assert forecast.status == "ok"
    assert forecast.value == (
        "→ weather /api/forecast/{city} · $0.30 (3 calls) · subscription, token, x402 · tiers any"
    )
    assert _row(rows, "GET /v1/raw").value == "→ dead /v1/raw · $0.000123 (—) · x402"
    assert _row(rows, "GET /v1/health").value == "→ silent /v1/health · free · free"
    live = _row(rows, "upstream weather")
    assert (live.status, live.value) == (
        "ok",
        f"http://127.0.0.1:{upstream} answers (HTTP 404)",
    )
    down = _row(rows, "upstream dead")
    assert down.status == "fail" and f"http://127.0.0.1:{dead} unreachable" in down.value
    assert "upstreams.dead.url" in down.fix
    quiet = _row(rows, "upstream silent")
    assert quiet.status == "fail" and f"http://127.0.0.1:{silent} unreachable" in quiet.value
    text = report.render(rows, settings)
    assert text.index("\ngateway") > text.index("\ndatabase")


async def test_a_bad_file_is_a_failing_row_per_problem(tmp_path: Path, database_url: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[upstreams.weather]\nurl = "http://127.0.0.1:9"\n'
        '[[routes]]\nmethod = "GET"\npath = "/healthz"\nupstream = "weather"\nprice_usd = 1\n'
    )
    settings = Settings(_env_file=None, database_url=database_url, watcher_gateway_config=str(path))
    rows = await asyncio.wait_for(doctor.examine(settings, seconds=5.0), 60)
    gateway = {r.name: r for r in rows if r.group == "gateway"}
    assert gateway["routes[0].path (line 3)"].status == "fail"
    assert "TOML number" in gateway["routes[0].price_usd (line 3)"].fix
    # judged as production: no signing secret for the upstream
    assert "WATCHER_GATEWAY_SECRET" in gateway["upstreams.weather.secret (line 1)"].fix
    assert not any(name.startswith("upstream ") for name in gateway)  # nothing to probe


def test_the_cli_report_shows_the_gateway_section(
    tmp_path: Path, upstream: int, silent: int, database_url: str
) -> None:
    path = _file(tmp_path, upstream, free_port(), silent)
    proc = _doctor_cli(
        tmp_path,
        DATABASE_URL=database_url,
        WATCHER_GATEWAY_CONFIG=str(path),
        WATCHER_GATEWAY_SECRET=SECRET,
    )
    assert proc.returncode == 1  # not production-ready (the dead upstream among others)
    assert "\ngateway\n" in proc.stdout
    assert "GET /v1/forecast/{city}" in proc.stdout and "$0.30 (3 calls)" in proc.stdout
    assert "✓ upstream weather" in proc.stdout and "✗ upstream dead" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr
