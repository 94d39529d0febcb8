"""``.env.example`` names every variable the code reads, and nothing else.

The rule, per kind of variable:

* flat settings (``watcher/settings.py`` fields): each one by name;
* per-network settings (``watcher/chain_settings.py``, generated from the registry): each
  suffix at least once with Base's or Ethereum's prefix (EVM) or Solana's (Solana), and
  each registry row's prefix on its own line (tests/unit/test_deploy_networks.py); every
  per-network name shown must be one the registry generates;
* ``os.environ`` reads in watcher/ and api/: by name, unless the platform sets them
  (systemd's notify socket, the XDG base directory), listed in PLATFORM below;
* ``docker-compose.yml``'s own ``${...}`` substitutions: allowed, and only those.

Each variable sits under a comment saying what it is, and a commented-out line of a
variable with a default shows that default.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

from watcher import chain_settings, networks, settings

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
# Set by the platform, not by an operator: systemd's notify protocol, the XDG base dir.
PLATFORM = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "XDG_DATA_HOME"}
EXAMPLE_PREFIXES = {"evm": ("BASE", "ETHEREUM"), "solana": ("SOLANA",)}
_ASSIGNMENT = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


def _lines() -> list[str]:
    return ENV_EXAMPLE.read_text().splitlines()


def _named() -> dict[str, tuple[bool, str]]:
    """Every variable the file names at the start of a line: name -> (commented, value)."""
    out = {}
    for line in _lines():
        if m := _ASSIGNMENT.match(line):
            out[m.group(2)] = (m.group(1) is not None, m.group(3).strip())
    return out


def _per_network() -> dict[str, tuple[str, str]]:
    """Each generated variable's name -> (family, suffix), e.g. X402_BASE_RPC_URL."""
    out = {}
    for row in networks.NETWORKS.values():
        p = chain_settings.prefix(row)
        for name in chain_settings.fields():
            if name.startswith(p) and _owner(name) == row:
                out[name.upper()] = (row.family, name[len(p) :].upper())
    return out


def _owner(field: str) -> networks.Network:
    """The row a generated field belongs to: the longest prefix (X402_BASE_SEPOLIA_ before
    X402_BASE_)."""
    rows = [r for r in networks.NETWORKS.values() if field.startswith(chain_settings.prefix(r))]
    return max(rows, key=lambda r: len(chain_settings.prefix(r)))


def _flat() -> set[str]:
    generated = set(chain_settings.fields())
    return {n.upper() for n in settings.Settings.model_fields if n not in generated}


def _environ_reads() -> set[str]:
    """Names read straight from the environment anywhere in watcher/ and api/."""
    pattern = re.compile(r"os\.(?:environ\.get|getenv)\(\s*\"(\w+)\"|os\.environ\[\"(\w+)\"\]")
    found = set()
    for path in [*(ROOT / "watcher").rglob("*.py"), *(ROOT / "api").rglob("*.py")]:
        for m in pattern.finditer(path.read_text()):
            found.add(m.group(1) or m.group(2))
    return found


def _compose_substitutions() -> set[str]:
    return set(re.findall(r"\$\{(\w+)(?::?-[^}]*)?\}", (ROOT / "docker-compose.yml").read_text()))


def test_every_variable_the_code_reads_is_in_env_example() -> None:
    named = set(_named())
    missing = sorted(_flat() - named)
    environ = _environ_reads()
    assert environ >= PLATFORM, f"no longer read, drop from PLATFORM: {PLATFORM - environ}"
    missing += sorted(environ - PLATFORM - named)
    per_network = _per_network()
    for family, prefixes in EXAMPLE_PREFIXES.items():
        suffixes = {s for f, s in per_network.values() if f == family}
        for suffix in sorted(suffixes):
            shown = [f"X402_{p}_{suffix}" for p in prefixes]
            if not set(shown) & named:
                missing.append(" or ".join(shown))
    assert not missing, f".env.example lacks: {missing}"


def test_env_example_names_nothing_the_code_does_not_read() -> None:
    known = _flat() | set(_per_network()) | (_environ_reads() - PLATFORM)
    compose_only = _compose_substitutions() - known
    unknown = sorted(set(_named()) - known - compose_only)
    assert not unknown, f".env.example names variables nothing reads: {unknown}"
    # The compose-only ones are said to be so.
    text = ENV_EXAMPLE.read_text()
    tail = text[text.index("# docker-compose.yml only") :]
    for name in set(_named()) & compose_only:
        assert f"# {name}=" in tail, f"{name} is read by docker-compose.yml only: list it there"


def test_every_variable_sits_under_a_comment_and_shows_its_default() -> None:
    lines = _lines()
    fields = settings.Settings.model_fields
    wrong = []
    for i, line in enumerate(lines):
        m = _ASSIGNMENT.match(line)
        if not m:
            continue
        block = lines[:i]
        while block and _ASSIGNMENT.match(block[-1]):
            block.pop()
        if not block or not block[-1].startswith("#"):
            wrong.append(f"line {i + 1}: {m.group(2)} has no comment above it")
        field = fields.get(m.group(2).lower())
        shown = m.group(3)
        if m.group(1) and field is not None and shown and not _same(field.default, shown):
            wrong.append(f"line {i + 1}: {m.group(2)} shows {shown!r}, not {field.default!r}")
    assert not wrong, "\n".join(wrong)


def _same(default: object, shown: str) -> bool:
    """Whether the commented-out value is the field's default (no default: anything goes)."""
    if default is None or not isinstance(default, (str, int, float, bool, Decimal)):
        return True
    if isinstance(default, bool):
        return shown.lower() == str(default).lower()
    if isinstance(default, (int, float, Decimal)):
        try:
            return Decimal(shown) == Decimal(str(default))
        except ArithmeticError:
            return False
    return shown == default


def test_the_rule_sees_a_missing_and_an_unknown_variable() -> None:
    """The check above reads the file's lines as this one does: a real line is found, a
    name the code does not know is not."""
    named = _named()
    assert named["WATCHER_METRICS_HOST"] == (True, "127.0.0.1")
    assert "X402_RELAYER_PRIVATE_KEY" in named and "X402_ETHEREUM_WS_URL" in named
    assert "X402_NOPE_RPC_URL" not in _per_network()
    assert {"POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= _compose_substitutions()
    assert "X402_BASE_SEPOLIA_RPC_URL" in _per_network()
    assert _per_network()["X402_BASE_SEPOLIA_RPC_URL"] == ("evm", "RPC_URL")
