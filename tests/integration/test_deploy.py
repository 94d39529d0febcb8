"""The deployment files as the tools that consume them see them.

systemd-analyze, docker-compose and promtool come from Debian packages that
``make install`` installs (scripts/install_system_deps.sh); a missing tool is a
failure, never a skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from watcher import metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
WATCHER_BIN = Path(sys.executable).with_name("watcher")


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: run `make install` (scripts/install_system_deps.sh)"
    return path


def _run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)


def _installable(tmp_path: Path, name: str) -> Path:
    """The unit with ExecStart pointing at this checkout's watcher (verify checks it exists)."""
    text = (DEPLOY / name).read_text()
    assert "/opt/usdc-watcher/.venv/bin/watcher" in text
    path = tmp_path / name
    path.write_text(text.replace("/opt/usdc-watcher/.venv/bin/watcher", str(WATCHER_BIN)))
    return path


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    return _installable(tmp_path, "watcher.service")


@pytest.mark.parametrize(
    ("name", "command"),
    [("watcher.service", "run --no-api"), ("watcher-api.service", "api")],
)
def test_systemd_units_verify_and_are_hardened(tmp_path: Path, name: str, command: str) -> None:
    unit = _installable(tmp_path, name)
    verify = _run(_tool("systemd-analyze"), "verify", str(unit))
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == "", verify.stderr
    # Exposure 0 (locked down) .. 10 (unprotected); fail above 3.0 ("OK" band).
    security = _run(
        _tool("systemd-analyze"), "security", "--offline=yes", "--threshold=30", str(unit)
    )
    assert security.returncode == 0, security.stdout[-2000:] + security.stderr
    settings = dict(
        line.split("=", 1) for line in unit.read_text().splitlines() if re.match(r"^\w+=", line)
    )
    assert settings["ExecStart"] == f"{WATCHER_BIN} {command}"
    assert settings["Type"] == "notify"
    assert settings["ProtectSystem"] == "strict"
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["User"] == "usdc-watcher"
    assert settings["Restart"] == "on-failure"
    assert int(settings["WatchdogSec"]) > 0
    assert settings["ReadWritePaths"] == "/var/lib/usdc-watcher"
    assert settings["EnvironmentFile"].startswith("/etc/")


def test_systemd_verify_catches_a_broken_unit(tmp_path: Path, unit: Path) -> None:
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("Type=notify", "Type=notifyy"))
    result = _run(_tool("systemd-analyze"), "verify", str(broken))
    assert "notifyy" in result.stderr


def _compose_project(tmp_path: Path, env: str | None) -> Path:
    """A copy of docker-compose.yml with ``env`` as its .env (None: no .env at all)."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    if env is not None:
        (tmp_path / ".env").write_text(env)
    return tmp_path


def _service_environment(rendered: str, service: str) -> dict[str, str]:
    """The environment docker-compose 1.x renders for ``service`` (env_file merged in)."""
    block = re.search(rf"^  {service}:\n((?:    .*\n)+)", rendered, re.MULTILINE)
    assert block, f"no service {service} in the rendered file"
    env = re.search(r"^    environment:\n((?:      .*\n)+)", block.group(1), re.MULTILINE)
    assert env, f"{service} has no environment"
    pairs = re.findall(r"^      (\w+): (.*)$", env.group(1), re.MULTILINE)
    return {k: v.strip("'\"") for k, v in pairs}


def test_compose_file_is_valid_with_every_service(tmp_path: Path) -> None:
    compose = _tool("docker-compose")
    project = _compose_project(tmp_path, (ROOT / ".env.example").read_text())
    check = _run(compose, "config", "-q", cwd=project)
    assert check.returncode == 0, check.stderr
    services = set(_run(compose, "config", "--services", cwd=project).stdout.split())
    assert services == {"postgres", "watcher", "api", "prometheus", "grafana", "anvil"}
    # docker-compose 1.x lists every service; the rendered file shows anvil is opt-in.
    rendered = _run(compose, "config", cwd=project).stdout
    anvil = re.search(r"^  anvil:\n((?:    .*\n)+)", rendered, re.MULTILINE)
    assert anvil and "profiles:\n    - local" in anvil.group(1)
    others = rendered.replace(anvil.group(0), "")
    assert "profiles:" not in others, "only the local chain is behind a profile"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert re.search(r"^USER watcher$", dockerfile, re.MULTILINE)


RELAYER_KEY = "0x" + "ab" * 32
DOTENV = f"""WATCHER_ENV=production
X402_RELAYER_PRIVATE_KEY={RELAYER_KEY}
X402_FACILITATOR_URL=https://facilitator.example.com
X402_BASE_CONFIRMATIONS=9
X402_BASE_START_BLOCK=12345678
X402_SOLANA_NETWORK=solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1
STRIPE_PAST_DUE_GRACE_HOURS=24
# compose's own values win over these two
DATABASE_URL=postgresql://me@127.0.0.1:5432/mine
WATCHER_API_HOST=127.0.0.1
"""


def test_compose_hands_dotenv_whole_to_the_watcher_and_the_api(tmp_path: Path) -> None:
    """Every variable set in .env reaches both processes, not only a forwarded list; the
    compose-only values (database, listeners, log format) win over .env's."""
    project = _compose_project(tmp_path, DOTENV)
    rendered = _run(_tool("docker-compose"), "config", cwd=project)
    assert rendered.returncode == 0, rendered.stderr
    for service in ("watcher", "api"):
        env = _service_environment(rendered.stdout, service)
        assert env["X402_RELAYER_PRIVATE_KEY"] == RELAYER_KEY, service
        assert env["X402_FACILITATOR_URL"] == "https://facilitator.example.com", service
        assert env["X402_BASE_CONFIRMATIONS"] == "9", service
        assert env["X402_BASE_START_BLOCK"] == "12345678", service
        assert env["X402_SOLANA_NETWORK"] == "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"
        assert env["STRIPE_PAST_DUE_GRACE_HOURS"] == "24", service
        assert env["WATCHER_ENV"] == "production", service
        assert env["DATABASE_URL"] == "postgresql://watcher:watcher@postgres:5432/watcher"
        assert env["WATCHER_LOG_FORMAT"] == "json", service
        assert env["WATCHER_DATA_DIR"] == "/var/lib/usdc-watcher", service
    assert _service_environment(rendered.stdout, "api")["WATCHER_API_HOST"] == "0.0.0.0"
    assert _service_environment(rendered.stdout, "watcher")["WATCHER_METRICS_HOST"] == "0.0.0.0"
    # The others get none of it: .env's secrets stay with the two processes that read them.
    for service in ("postgres", "prometheus", "grafana"):
        block = re.search(rf"^  {service}:\n((?:    .*\n)+)", rendered.stdout, re.MULTILINE)
        assert block and "X402_" not in block.group(1), service


def test_compose_without_dotenv_refuses_and_says_which_file(tmp_path: Path) -> None:
    """As the file's header and docs/operations.md say: no .env, no configuration, no start
    (`cp .env.example .env` first)."""
    project = _compose_project(tmp_path, None)
    result = _run(_tool("docker-compose"), "config", "-q", cwd=project)
    assert result.returncode != 0
    assert f"Couldn't find env file: {project / '.env'}" in result.stderr
    header = (ROOT / "docker-compose.yml").read_text().split("\nx-watcher-env")[0]
    assert "cp .env.example .env" in header and "Couldn't find env file" in header
    ops = (ROOT / "docs" / "operations.md").read_text()
    assert "cp .env.example .env" in ops and "Couldn't find env file" in ops


def test_prometheus_config_and_alert_rules_pass_promtool() -> None:
    promtool = _tool("promtool")
    config = _run(promtool, "check", "config", "prometheus.yml", cwd=DEPLOY / "prometheus")
    assert config.returncode == 0, config.stdout + config.stderr
    tests = _run(promtool, "test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "SUCCESS" in tests.stdout


def _exposed_names() -> set[str]:
    names: set[str] = set()
    collectors = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    for family in (f for c in collectors for f in c.collect()):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def test_alerts_and_dashboard_only_use_metrics_the_watcher_exports() -> None:
    exposed = _exposed_names()
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "watcher.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set(re.findall(r"\bwatcher_[a-z_]+", alerts + "\n".join(exprs)))
    assert used, "no watcher metric referenced"
    assert used <= exposed, f"unknown metrics: {sorted(used - exposed)}"
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("head lag", "credited", "rpc", "402", "tokens"):
        assert topic in titles
    alert_names = set(re.findall(r"alert: (\w+)", alerts))
    tested = set(
        re.findall(r"alertname: (\w+)", (DEPLOY / "prometheus" / "alerts_test.yml").read_text())
    )
    assert alert_names == tested, f"alerts without a promtool test: {alert_names - tested}"


def test_dashboard_queries_are_promql_with_any_network_selected(tmp_path: Path) -> None:
    """Grafana fills in ``$chain``; with it replaced as "All" does, promtool parses each query."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "watcher.json").read_text())
    (variable,) = dashboard["templating"]["list"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert any("$chain" in e for e in exprs)
    rules = [
        {"record": f"dashboard:query_{i}", "expr": e.replace("$chain", variable["allValue"])}
        for i, e in enumerate(exprs)
    ]
    # label_values(<metric>, chain): the metric must be one the watcher exports.
    listed = re.fullmatch(r"label_values\((watcher_[a-z_]+), chain\)", variable["query"])
    assert listed and listed.group(1) in _exposed_names()
    rules.append({"record": "dashboard:variable", "expr": listed.group(1)})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # YAML
    check = _run(_tool("promtool"), "check", "rules", str(path))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules)} rules found" in check.stdout
