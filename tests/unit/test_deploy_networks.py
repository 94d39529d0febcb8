"""The deployment files follow the registry of networks (watcher/networks.py).

Alerts and the dashboard name no network: thresholds come from the registry's block
time (``watcher_chain_block_seconds``) and the dashboard's networks from the metrics.
``.env.example`` must name each network's prefix, and fails here when a row is added
without its line; ``docker-compose.yml`` takes ``.env`` whole and names none.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from watcher import metrics, networks

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "watcher.json"


def _network_names_in(text: str) -> set[str]:
    """Networks a PromQL text selects by name (``chain="base"``, ``chain=~"base|..."``)."""
    values = re.findall(r'chain\s*=~?\s*"([^"$]*)"', text)
    return {name for value in values for name in re.split(r"[|()]", value) if name}


def test_alert_rules_name_no_network() -> None:
    alerts = (PROMETHEUS / "alerts.yml").read_text()
    assert _network_names_in(alerts) == set()
    assert "watcher_chain_block_seconds" in alerts
    # The selector check above sees through no other spelling: no row's name in a rule.
    exprs = "\n".join(re.findall(r"expr: >-\n((?:\s{10}.*\n)+)", alerts))
    assert exprs, "no multi-line alert expression found"
    assert not [n.name for n in networks.NETWORKS.values() if f'"{n.name}"' in exprs]


def test_alert_tests_use_the_registry_block_times_for_old_and_new_networks() -> None:
    tests = (PROMETHEUS / "alerts_test.yml").read_text()
    inputs = re.findall(
        r"watcher_chain_block_seconds\{chain=\"([a-z-]+)\"[^']*'\n\s+values: \"([0-9.]+)\+0x",
        tests,
    )
    assert inputs
    for name, value in inputs:
        assert float(value) == networks.get(name).block_seconds, name
    # Each threshold rule is tested per network: the three of old and added ones.
    assert {"base", "ethereum", "solana", "polygon", "arbitrum"} <= {n for n, _ in inputs}


def _chain_labelled() -> set[str]:
    names = set()
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase) and "chain" in collector._labelnames:
            names.add(collector._name)
    return names


def test_dashboard_takes_its_networks_from_the_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "chain"]
    assert variable["type"] == "query" and variable["includeAll"] and variable["multi"]
    assert variable["query"] == "label_values(watcher_chain_block_seconds, chain)"
    chained = _chain_labelled()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert _network_names_in("\n".join(exprs)) == set()
    for expr in exprs:
        for name, selector in re.findall(r"\b(watcher_[a-z_]+)(\{[^}]*\})?", expr):
            family = re.sub(r"_(total|bucket|sum|count)$", "", name)
            if name in chained or family in chained:
                assert 'chain=~"$chain"' in selector, f"{name} ignores $chain in {expr}"


def test_env_example_lists_every_network_prefix() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = re.findall(r"^#\s+X402_([A-Z0-9_]+)_\*\s+(.+)$", text, re.MULTILINE)
    assert listed == [(row.env, row.title) for row in networks.NETWORKS.values()], (
        "one line per registry row, in registry order: "
        + "; ".join(f"#   X402_{row.env}_*  {row.title}" for row in networks.NETWORKS.values())
    )
    assert "X402_<NETWORK>_" in text


def _service(compose: str, name: str) -> str:
    block = re.search(rf"^  {name}:\n((?:    .*\n|\n)+)", compose, re.MULTILINE)
    assert block, f"no service {name} in docker-compose.yml"
    return block.group(1)


def test_compose_hands_dotenv_whole_so_no_network_needs_its_own_lines() -> None:
    """The watcher and the API take .env whole (env_file): a network added to the registry
    reaches the containers with nothing edited, and so does every other variable. What
    compose sets itself is only what is true inside compose, never a network's variable
    (which would hide the operator's value)."""
    compose = (ROOT / "docker-compose.yml").read_text()
    for name in ("watcher", "api"):
        assert re.search(r"^    env_file: \.env$", _service(compose, name), re.MULTILINE), name
    anchor = re.search(r"^x-watcher-env: &watcher-env\n((?:  .*\n)+)", compose, re.MULTILINE)
    assert anchor, "the shared environment block is gone"
    fixed = set(re.findall(r"^  (\w+):", anchor.group(1), re.MULTILINE))
    assert fixed == {"WATCHER_ENV", "DATABASE_URL", "WATCHER_DATA_DIR", "WATCHER_LOG_FORMAT"}
    per_service = set()
    for name in ("watcher", "api"):
        env = re.search(r"^    environment:\n((?:      .*\n)+)", _service(compose, name), re.M)
        assert env and "<<: *watcher-env" in env.group(1), name
        per_service |= set(re.findall(r"^      ([A-Z]\w+):", env.group(1), re.MULTILINE))
    assert per_service == {
        "WATCHER_METRICS_HOST",
        "WATCHER_METRICS_PORT",
        "WATCHER_API_HOST",
        "WATCHER_API_PORT",
    }
    assert not [v for v in fixed | per_service if v.startswith("X402_")]
