"""README stays true to the code: the commands it names exist and every one is listed, every
document in docs/ is linked with a line saying what it holds, and `make test`'s apt-get is
said."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from watcher import __main__ as cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _subcommands() -> set[str]:
    (sub,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def test_every_watcher_command_the_readme_names_exists() -> None:
    named = set(re.findall(r"`watcher ([a-z][a-z-]*)", README))
    named |= set(re.findall(r"^watcher ([a-z][a-z-]*)", README, re.MULTILINE))
    assert named, "README names no command"
    assert named <= _subcommands(), f"not commands: {sorted(named - _subcommands())}"


def test_the_command_list_has_every_command() -> None:
    listed = set(re.findall(r"^watcher ([a-z][a-z-]*)", _section("Commands"), re.MULTILINE))
    missing = _subcommands() - listed
    assert not missing, f"add to README's Commands block: {sorted(missing)}"


def test_every_document_is_linked_with_what_it_holds() -> None:
    table = _section("Documents")
    rows = dict(re.findall(r"^\| \[docs/([a-z0-9-]+\.md)\]\(docs/\1\) \| (.+) \|$", table, re.M))
    for doc in sorted(p.name for p in (ROOT / "docs").glob("*.md")):
        assert doc in rows, f"README's Documents table lacks docs/{doc}"
        assert len(rows[doc].split()) >= 4, f"say what docs/{doc} holds: {rows[doc]!r}"


def test_make_test_says_it_runs_apt_get_and_what_it_installs() -> None:
    script = (ROOT / "scripts" / "install_system_deps.sh").read_text(encoding="utf-8")
    # The packages the script installs: the values of its `want` table.
    packages = set(re.findall(r"^\s+\[[a-z-]+\]=([a-z-]+)$", script, re.MULTILINE))
    assert packages >= {"prometheus", "docker-compose", "systemd", "nginx", "caddy"}
    said = _section("Two commands")
    assert "apt-get" in said and "root" in said and "install_system_deps.sh" in said
    for package in packages:
        assert f"`{package}`" in said, f"README does not say make test installs {package}"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "apt-get as root" in makefile
