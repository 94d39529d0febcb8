"""The built wheel carries every named query: loaded from the installed package, not the tree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

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
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("watcher", "api"):
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    out = tmp / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("usdc_watcher-*.whl")
    return wheel


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
