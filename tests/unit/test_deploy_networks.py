"""The deployment files follow the registry of networks (watcher/networks.py).

Alerts and the dashboard name no network: thresholds come from the registry's block
time (``watcher_chain_block_seconds``) and the dashboard's networks from the metrics.
The files that must name each network (``.env.example``, ``docker-compose.yml``) fail
here when a row is added without its lines.
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
PER_NETWORK = ("PAYMENT_ADDRESS", "RPC_URL", "WS_URL")  # what compose passes for each


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


def test_compose_passes_every_network_its_variables() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    passed = set(re.findall(r"^\s+(X402_[A-Z0-9_]+): \$\{\1:-\}$", compose, re.MULTILINE))
    wanted = {f"X402_{row.env}_{s}" for row in networks.NETWORKS.values() for s in PER_NETWORK}
    assert wanted <= passed, f"missing in docker-compose.yml: {sorted(wanted - passed)}"
    # Nothing for a network the registry does not have.
    suffixes = "|".join(PER_NETWORK)
    prefixes = {m for v in passed for m in re.findall(rf"^X402_(\w+?)_(?:{suffixes})$", v)}
    assert prefixes == {row.env for row in networks.NETWORKS.values()}
