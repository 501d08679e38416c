"""pycni as a user installs it: ``python -m build``, then the wheel in a venv of its own.

The wheel is built the way ``python -m build`` does by default (an sdist first, the wheel from
the unpacked sdist), so a module missing from either shows here. The installed command then
runs from a directory outside the repo, with none of the repo's paths on ``sys.path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import shim
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _run(*args: str, cwd: Path, timeout: float = 120) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, (
        f"{' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    return proc.stdout


def _source_modules() -> set[str]:
    return {
        str(path.relative_to(REPO))
        for path in (REPO / "shim").rglob("*.py")
        if "__pycache__" not in path.parts
    }


def test_wheel_installs_a_working_pycni_command(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "build", "--outdir", str(dist), str(REPO), cwd=tmp_path)
    wheels = list(dist.glob("pycni-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {sorted(p.name for p in dist.iterdir())}"
    wheel = wheels[0]
    assert wheel.name == f"pycni-{shim.__version__}-py3-none-any.whl"

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(f"pycni-{shim.__version__}.dist-info/entry_points.txt").decode()
    missing = _source_modules() - names
    assert not missing, f"the wheel lacks {sorted(missing)}"
    assert "pycni = shim.cli:main" in entry_points
    assert not [n for n in names if n.startswith("tests/")], "the wheel ships the tests"

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _run(str(bin_dir / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel),
         cwd=outside, timeout=300)

    pycni = str(bin_dir / "pycni")
    assert _run(pycni, "--version", cwd=outside).strip() == f"pycni, version {shim.__version__}"
    assert "serve" in _run(pycni, "--help", cwd=outside)
    assert "--socket" in _run(pycni, "serve", "--help", cwd=outside)

    # Every module imports from the installed copy, not from the checkout.
    where = _run(
        str(bin_dir / "python"), "-c",
        "import importlib, pkgutil, shim\n"
        "for m in pkgutil.walk_packages(shim.__path__, 'shim.'):\n"
        "    if m.name != 'shim.__main__': importlib.import_module(m.name)\n"
        "print(shim.__file__)",
        cwd=outside,
    ).strip()
    assert Path(where).is_relative_to(env_dir), where
