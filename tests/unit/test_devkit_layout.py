"""The development kit's boundaries: nothing outside tests/ imports ``tests``, and the wheel
carries the product (watcher, api) but neither devkit/ nor tests/."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parents[2]
# Scripts and the kit run without the test suite; the product never depends on it.
NOT_TESTS = ("scripts", "devkit", "watcher", "api")


def imports_of_tests(source: str) -> list[str]:
    """Every import statement in ``source`` that reaches the ``tests`` package."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [n for n in names if n == "tests" or n.startswith("tests.")]
    return found


def test_the_scan_sees_every_spelling_of_a_tests_import() -> None:
    source = (
        "import tests\nimport tests.anvil as a\nfrom tests import pg\n"
        "from tests.solana_node import Bank\n"
        "def f():\n    from tests.x402kit import PRICE\n"
        "import testsuite\nfrom devkit import tests_helpers\nfrom . import tests\n"
    )
    assert imports_of_tests(source) == [
        "tests",
        "tests.anvil",
        "tests",
        "tests.solana_node",
        "tests.x402kit",
    ]


def test_nothing_outside_tests_imports_tests() -> None:
    offenders, scanned = [], 0
    for folder in NOT_TESTS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            scanned += 1
            for name in imports_of_tests(path.read_text(encoding="utf-8")):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert scanned > 50, f"only {scanned} files scanned: did the layout move?"
    assert offenders == [], "use devkit (the development kit) instead:\n" + "\n".join(offenders)


def test_the_wheel_packages_the_product_only() -> None:
    """The packages setuptools collects with pyproject's own ``packages.find`` settings."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    packages = setuptools.find_packages(
        where=str(ROOT), include=find["include"], exclude=find.get("exclude", ())
    )
    tops = {p.split(".")[0] for p in packages}
    assert tops == {"watcher", "api"}, sorted(packages)
