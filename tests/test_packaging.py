"""The wheel: built from this tree, complete (JavaScript bundle, notebooks, entry point), installable
into a fresh virtual environment (no access to this venv, no Node.js) where it works.

Slow (a build, a venv, dependencies from PyPI): marked ``slow``; it runs in CI.
"""

from __future__ import annotations

import email
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import livewidget

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SMOKE = r"""
import os, shutil
assert shutil.which("node") is None, "the test must run without Node.js on PATH"
import livewidget
from livewidget.server import LocalServer
import livewidget._demo as demo

assert "site-packages" in livewidget.__file__, livewidget.__file__
static = os.path.join(os.path.dirname(livewidget.__file__), "static")
for kind in ("feed", "chart", "chat", "progress"):
    assert os.path.getsize(os.path.join(static, kind + ".js")) > 10_000, kind
    assert os.path.getsize(os.path.join(static, kind + ".css")) > 500, kind
assert str(livewidget.Feed._esm).startswith(open(os.path.join(static, "feed.js")).read()[:200])
assert len(list(demo.notebooks_source().glob("*.ipynb"))) >= 5
with LocalServer() as server:
    feed = livewidget.Feed("smoke", host=server.host, port=server.port, app_id=server.app_id,
                           key=server.key, secret=server.secret)
    livewidget.publish("smoke", "hello", {"n": 1}, host=server.host, port=server.port,
                       app_id=server.app_id, key=server.key, secret=server.secret)
    feed.wait(1, timeout=30)
    assert feed.df["n"].tolist() == [1], feed.df
    feed.close()
print("smoke ok", livewidget.__version__)
"""


def _build_wheel(out: Path) -> Path:
    try:
        import build  # noqa: F401

        cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)]
    except ImportError:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(REPO)]
    subprocess.run(cmd, check=True, timeout=300, capture_output=True)
    wheels = list(out.glob("livewidget-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_versions_agree() -> None:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["version"] == livewidget.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", livewidget.__version__)


def test_wheel_contents_and_fresh_venv(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path / "dist")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(zf.read(info))
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        licence = [n for n in names if "licen" in n.lower()]
    for required in (
        "livewidget/__init__.py",
        "livewidget/py.typed",
        "livewidget/_demo.py",
        "livewidget/server/__init__.py",
        "livewidget/jupyter/__init__.py",
        "livewidget/jupyter/_handlers.py",
    ):
        assert required in names, f"{required} missing from {wheel.name}"
    # installing the wheel enables the Jupyter server extension (the jupyter route, issue 12)
    config = next(
        n for n in names if n.endswith(".data/data/etc/jupyter/jupyter_server_config.d/livewidget.json")
    )
    with zipfile.ZipFile(wheel) as zf:
        enabled = json.loads(zf.read(config))
    assert enabled == {"ServerApp": {"jpserver_extensions": {"livewidget.jupyter": True}}}
    # every widget class's own ES module and stylesheet (anywidget loads one `_esm` per class)
    package = Path(livewidget.__file__).parent
    for cls in (livewidget.Feed, livewidget.LiveChart, livewidget.Chat, livewidget.ProgressBoard):
        kind = cls._kind.default_value
        for built in (package / "static" / f"{kind}.js", package / "static" / f"{kind}.css"):
            assert built.exists(), built
            missing = f"{built.name} ({cls.__name__}'s) missing from {wheel.name}"
            assert f"livewidget/static/{built.name}" in names, missing
    notebooks = {p.name for p in (REPO / "notebooks").glob("*.ipynb")}
    assert notebooks and {f"livewidget/notebooks/{n}" for n in notebooks} <= names
    assert not [n for n in names if "node_modules" in n or n.startswith(("tests/", "js/", "bench/"))]
    assert meta["Version"] == livewidget.__version__
    assert meta["License-Expression"] == "BSD-3-Clause" or "BSD" in (meta["License"] or "")
    assert any("License :: OSI Approved" in c for c in meta.get_all("Classifier") or [])
    assert licence, "no licence file in the wheel"
    assert "livewidget = livewidget.cli:main" in entry_points

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHER_", "LIVEWIDGET_", "PYTHON"))}
    env["LIVEWIDGET_RUNTIME_DIR"] = str(tmp_path / "run")
    env["PATH"] = str(venv / "bin")  # no Node.js, no project venv
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=600, env=env, cwd=tmp_path
    )
    smoke = subprocess.run(
        [str(py), "-c", SMOKE], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "smoke ok" in smoke.stdout
    version = subprocess.run(
        [str(venv / "bin" / "livewidget"), "--version"], env=env, capture_output=True, text=True, timeout=60
    )
    assert version.stdout.strip() == livewidget.__version__, version
    # installed, the extension's enabling file is where every Jupyter server of this environment reads
    enabling = venv / "etc" / "jupyter" / "jupyter_server_config.d" / "livewidget.json"
    extensions = json.loads(enabling.read_text())["ServerApp"]["jpserver_extensions"]
    assert extensions == {"livewidget.jupyter": True}
