"""The one build step pyproject.toml cannot say: migrations/*.sql into the wheel.

The migration files stay at the top of the repository (migrations/, where every branch
adds them); a non-editable install finds them as ``watcher/migrations/`` inside the
package (watcher/db.py looks there first). Everything else is in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithMigrations(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads migrations/ in the checkout
            return
        files = sorted((ROOT / "migrations").glob("*.sql"))
        if not files:  # a wheel without its schema would start and fail at the first query
            raise SystemExit(f"setup.py: no migrations/*.sql under {ROOT}")
        target = Path(self.build_lib) / "watcher" / "migrations"
        target.mkdir(parents=True, exist_ok=True)
        for sql in files:
            shutil.copyfile(sql, target / sql.name)


setup(cmdclass={"build_py": BuildWithMigrations})
