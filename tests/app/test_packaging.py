"""A built wheel carries its migrations: installed anywhere, it migrates from any folder."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_an_installed_wheel_migrates_from_another_folder(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("stoplist-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(site)
    assert "app/migrations/env.py" in names
    assert "app/migrations/script.py.mako" in names
    assert any(n.startswith("app/migrations/versions/") for n in names)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import app, sys; assert app.__file__.startswith(sys.argv[1]), app.__file__;"
        "from app.settings import load_settings; from app.db import run_migrations;"
        "run_migrations(load_settings()); print('migrated')"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(site),
        "STOPLIST_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'w.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-c", code, str(site)],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "migrated" in done.stdout
