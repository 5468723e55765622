"""docs/api.md is generated from the docstrings (docs/gen_api.py) and must be up to date."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import livewidget
import livewidget.server

REPO = Path(__file__).resolve().parents[1]


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("gen_api", REPO / "docs" / "gen_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_up_to_date() -> None:
    expected = _generator().generate()  # type: ignore[attr-defined]
    actual = (REPO / "docs" / "api.md").read_text()
    assert actual == expected, "docs/api.md is out of date: run .venv/bin/python docs/gen_api.py"


def test_every_public_name_is_documented() -> None:
    text = (REPO / "docs" / "api.md").read_text()
    for module in (livewidget, livewidget.server):
        for name in module.__all__:
            assert re.search(rf"^### `{re.escape(module.__name__)}\.{re.escape(name)}\b", text, re.M), name


def test_readme_images_exist() -> None:
    readme = (REPO / "README.md").read_text()
    for path in re.findall(r"\]\((docs/images/[^)]+)\)", readme):
        assert (REPO / path).exists(), f"README shows {path}, which is missing"
