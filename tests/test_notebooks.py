"""Every example notebook runs top to bottom, unattended, with nbclient (a kernel from this venv).

The kernels use the embedded server of a private runtime folder (``LIVEWIDGET_RUNTIME_DIR``, a temp
folder), stopped at the end; the notebooks run in a temp copy of ``notebooks/`` (they write helper
scripts next to themselves).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 120  # s per cell
NOTEBOOK_TIMEOUT = 240  # s per notebook (pytest-timeout)

pytestmark = pytest.mark.timeout(NOTEBOOK_TIMEOUT)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private embedded-server runtime folder for the kernels; its daemon is stopped at the end."""
    folder = tmp_path_factory.mktemp("lw-run")
    saved = {k: os.environ.get(k) for k in ("LIVEWIDGET_RUNTIME_DIR",)}
    os.environ["LIVEWIDGET_RUNTIME_DIR"] = str(folder)
    try:
        yield folder
    finally:
        from livewidget._embedded import stop_embedded

        stop_embedded()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A kernel spec for this interpreter (``python3`` may resolve to another Python)."""
    base = tmp_path_factory.mktemp("kernels")
    spec = base / "kernels" / "livewidget-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec_json = {"argv": argv, "display_name": "livewidget tests", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(spec_json))
    saved = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(base), saved]))
    try:
        assert "livewidget-test" in KernelSpecManager().find_kernel_specs()
        yield "livewidget-test"
    finally:
        if saved is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = saved


def test_there_are_notebooks() -> None:
    names = {p.name for p in NOTEBOOKS}
    for stem in ("quickstart", "training_curves", "parallel_progress", "chat", "hosted_pusher"):
        assert any(stem in n for n in names), f"no {stem} notebook in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, runtime: Path, kernel_name: str, tmp_path: Path) -> None:
    work = tmp_path / path.name
    shutil.copyfile(path, work)
    nb = nbformat.read(work, as_version=4)
    env_clean = {
        k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("PUSHER_", "LIVEWIDGET_URL"))
    }
    try:
        client = NotebookClient(
            nb,
            timeout=CELL_TIMEOUT,
            kernel_name=kernel_name,
            resources={"metadata": {"path": str(tmp_path)}},
            startup_timeout=60,
        )
        client.execute()
    finally:
        os.environ.update(env_clean)
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
    # every widget cell produced a widget view
    views = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in out.get("data", {})
    ]
    assert views, "no widget was displayed"
