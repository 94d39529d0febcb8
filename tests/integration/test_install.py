"""deploy/install.sh, run in order in a scratch root as docs/operations.md says, then the
installed units checked by systemd-analyze against that root.

What needs root on a real machine (useradd, chown, systemctl daemon-reload and --now) is
skipped with --no-root-steps; the rest runs as written: directories and modes, the code
and its venv (our package only: --no-deps, the dependencies are the test's own), the env
file, the units, and ``systemctl --root enable``. The scratch root starts with the
machine's systemd units, as a clean machine has them, and nothing else.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from watcher import db

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install.sh"
UNITS = {
    "usdc-watcher.service": "watcher.service",
    "usdc-watcher-api.service": "watcher-api.service",
}
DOTENV = "WATCHER_ENV=production\nX402_BASE_CONFIRMATIONS=9\n"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: run `make install` (scripts/install_system_deps.sh)"
    return path


def _install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(INSTALL), *args], capture_output=True, text=True, timeout=600, check=False
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.timeout(700)
def test_install_steps_in_a_scratch_root_give_units_systemd_accepts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    env = tmp_path / "production.env"
    env.write_text(DOTENV)
    done = _install(
        "--root", str(root), "--no-root-steps", "--env-file", str(env),
        "--python", sys.executable, "--pip-args", "--no-deps",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    steps = [line for line in done.stdout.splitlines() if line.startswith("==> ")]
    assert [s.split()[1] for s in steps] == [f"{i}/6" for i in range(1, 7)]
    assert "skipped (--no-root-steps)" in done.stdout.split("==> 2/6")[0]
    # Directories and the configuration, with the modes the units rely on.
    etc, data = root / "etc/usdc-watcher", root / "var/lib/usdc-watcher"
    assert (_mode(etc), _mode(data)) == (0o750, 0o700)
    assert (etc / "watcher.env").read_text() == DOTENV and _mode(etc / "watcher.env") == 0o640
    for installed, source in UNITS.items():
        unit = root / "etc/systemd/system" / installed
        assert unit.read_text() == (ROOT / "deploy" / source).read_text()
        assert _mode(unit) == 0o644
        wants = root / "etc/systemd/system/multi-user.target.wants" / installed
        assert wants.is_symlink() and str(wants.readlink()) == f"/etc/systemd/system/{installed}"
    # The code runs from /opt/usdc-watcher, with its migrations next to it.
    app = root / "opt/usdc-watcher"
    assert not (app / ".env").exists() and not (app / ".git").exists()
    probe = subprocess.run(
        [
            str(app / ".venv/bin/python"),
            "-c",
            "import sys; sys.path.append(sys.argv[1]); import watcher, watcher.db as d; "
            "print(watcher.__file__, len(d.list_migrations()))",
            sysconfig.get_paths()["purelib"],  # the dependencies, after the venv's own
        ],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # not the tree's
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    where, migrations = probe.stdout.split()
    assert Path(where) == app / "watcher/__init__.py"
    assert int(migrations) == len(db.list_migrations())
    # systemd reads the installed units against that root: ExecStart, the user's
    # directories, every directive.
    verify = subprocess.run(
        [_tool("systemd-analyze"), "verify", f"--root={root}", *UNITS],
        capture_output=True, text=True, timeout=60, check=False, cwd="/",
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stderr.strip() == "", verify.stderr
    # And it would have said so if the venv were missing.
    (app / ".venv/bin/watcher").rename(app / ".venv/bin/watcher.gone")
    broken = subprocess.run(
        [_tool("systemd-analyze"), "verify", f"--root={root}", "usdc-watcher.service"],
        capture_output=True, text=True, timeout=60, check=False, cwd="/",
    )  # fmt: skip
    assert broken.returncode != 0
    assert "/opt/usdc-watcher/.venv/bin/watcher is not executable" in broken.stderr


def test_install_without_a_configuration_stops_first_and_says_how(tmp_path: Path) -> None:
    root = tmp_path / "root"
    done = _install(
        "--root", str(root), "--no-root-steps", "--env-file", str(tmp_path / "missing.env")
    )
    assert done.returncode == 2
    assert f"{tmp_path / 'missing.env'} does not exist" in done.stderr
    assert "cp " in done.stderr and ".env.example" in done.stderr
    assert not root.exists()  # nothing half-installed


def test_install_refuses_unknown_options() -> None:
    done = _install("--prefix", "/x")
    assert done.returncode == 2 and "unknown option --prefix" in done.stderr


@pytest.mark.timeout(900)
def test_install_run_twice_keeps_the_env_and_copies_no_other_secret(tmp_path: Path) -> None:
    # A checkout at a path with a space, holding a stray env file besides the example.
    source = tmp_path / "my checkout"
    files = (
        subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    (source / ".env.production").write_text("X402_ADMIN_KEY=secret-in-the-checkout\n")
    root = tmp_path / "scratch root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    first, second = tmp_path / "first.env", tmp_path / "second.env"
    first.write_text(DOTENV)
    second.write_text("WATCHER_ENV=development\n")
    args = ("--root", str(root), "--no-root-steps", "--source", str(source),
            "--python", sys.executable, "--pip-args", "--no-deps")  # fmt: skip
    done = _install(*args, "--env-file", str(first))
    assert done.returncode == 0, done.stdout + done.stderr
    app, env = root / "opt/usdc-watcher", root / "etc/usdc-watcher/watcher.env"
    assert not (app / ".env.production").exists()  # /opt is world-readable
    assert (app / ".env.example").read_text() == (ROOT / ".env.example").read_text()
    # An operator loosened the installed file; the second run keeps its content and
    # takes back what others and the service's group must not have.
    env.chmod(0o666)
    again = _install(*args, "--env-file", str(second))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "kept the existing one" in again.stdout
    assert env.read_text() == DOTENV and _mode(env) == 0o640
    assert _mode(root / "var/lib/usdc-watcher") == 0o700
