"""The built wheel carries every named query and every migration, loaded from the installed
package, not the tree; its license is the PEP 639 form, built with no deprecation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import asyncpg
import pytest

from devkit.pg import SessionPostgres
from watcher import db

ROOT = Path(__file__).resolve().parents[2]

# Runs with only the unpacked wheel ahead of the interpreter's own site-packages
# (-I: no PYTHONPATH, no current directory), so `import watcher` cannot reach the tree.
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import watcher
from watcher import db
print(json.dumps({"file": watcher.__file__, "queries": {n: db.q(n) for n in db.queries()}}))
"""


def build_wheel(tmp: Path) -> Path:
    return _build(tmp)[0]


def _build(tmp: Path) -> tuple[Path, str]:
    """The wheel, and what the build printed (-v: the build backend's warnings)."""
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    # What it reads is what an sdist holds (MANIFEST.in adds migrations/).
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("watcher", "api", "migrations"):
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    out = tmp / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (wheel,) = out.glob("usdc_watcher-*.whl")
    return wheel, done.stdout + done.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    # One build for the tests that only read the wheel (each build takes seconds).
    return _build(tmp_path_factory.mktemp("wheel"))


def test_every_query_loads_from_the_built_wheel(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        assert any(n.startswith("watcher/sql/") and n.endswith(".sql") for n in zf.namelist())
        zf.extractall(site)
    done = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, str(site)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert Path(found["file"]).resolve().is_relative_to(site.resolve()), found["file"]
    assert set(found["queries"]) == set(db.queries())
    assert found["queries"] == dict(db.queries())


def test_the_image_copies_the_query_files() -> None:
    # The image installs the tree editable from /app: watcher/sql must be in what it copies.
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert copied & {"watcher", "watcher/", "watcher/sql", "watcher/sql/"}, copied
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert not [p for p in ignored if p.strip("/*") in ("watcher", "watcher/sql", "sql", "*.sql")]


def test_the_wheel_carries_every_migration_byte_for_byte(built: tuple[Path, str]) -> None:
    wheel, _ = built
    with zipfile.ZipFile(wheel) as zf:
        inside = {
            Path(n).name: zf.read(n) for n in zf.namelist() if n.startswith("watcher/migrations/")
        }
    repo = {p.name: p.read_bytes() for p in (ROOT / "migrations").glob("*.sql")}
    assert repo and inside == repo


def test_the_license_is_an_spdx_expression_with_its_file(built: tuple[Path, str]) -> None:
    wheel, output = built
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = zf.read(meta).decode().splitlines()
        (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert "MIT License" in zf.read(license_file).decode()
    assert "License-Expression: MIT" in metadata
    assert "License-File: LICENSE" in metadata
    # `license = { text = "MIT" }` drew setuptools' "project.license as a TOML table is
    # deprecated" (a 2027-02-18 deadline).
    assert "deprecat" not in output.lower(), output


async def test_an_installed_wheel_migrates_from_its_own_files(
    built: tuple[Path, str], tmp_path: Path, postgres: SessionPostgres
) -> None:
    # `pip install .` (not editable), then `watcher migrate` on an empty database, away
    # from the checkout: every migration comes from the installed package.
    wheel, _ = built
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    dsn = await postgres.create_empty()
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONPATH" and not k.startswith(("X402_", "WATCHER_", "STRIPE_"))
    }
    # The installed copy first; the venv keeps the dependencies.
    env.update(PYTHONPATH=str(target), DATABASE_URL=dsn, WATCHER_DATA_DIR=str(tmp_path / "d"))
    probe = "from watcher import db; print(db.MIGRATIONS_DIR)"
    try:
        where = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=tmp_path,  # not the checkout, whose watcher/ must not be the one imported
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert where.returncode == 0, where.stderr
        assert Path(where.stdout.strip()) == target / "watcher" / "migrations"
        migrate = subprocess.run(
            [sys.executable, "-m", "watcher", "migrate"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        conn = await asyncpg.connect(dsn)
        try:
            applied = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        finally:
            await conn.close()
    finally:
        await postgres.drop(dsn)
    expected = {m.version: m.checksum for m in db.list_migrations()}
    assert {r["version"]: r["checksum"] for r in applied} == expected


def test_a_checkout_reads_the_migrations_beside_the_package() -> None:
    # Editable installs and the test suite: migrations/ where every branch adds them.
    assert db.MIGRATIONS_DIR == ROOT / "migrations"
