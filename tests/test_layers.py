"""Architecture rules, checked by walking the imports of every module (style.md, "Layering")."""

from __future__ import annotations

import ast
from pathlib import Path

import livewidget

PKG = Path(livewidget.__file__).parent


def imports_of(path: Path) -> set[str]:
    """Top-level names of every module imported by ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    module = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
    return found


def modules(sub: str) -> list[Path]:
    return sorted((PKG / sub).rglob("*.py"))


def test_protocol_is_sans_io_and_standard_library_only():
    """livewidget.protocol imports only the standard library (no I/O libraries) and livewidget.exceptions."""
    forbidden = {
        "asyncio",
        "aiohttp",
        "socket",
        "threading",
        "selectors",
        "websockets",
        "pandas",
        "traitlets",
        "anywidget",
        "IPython",
        "pusher",
        "requests",
        "time",
    }
    for path in modules("protocol"):
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top not in forbidden, f"{path.name} imports {name}"
            if top == "livewidget":
                assert name.startswith(("livewidget.protocol", "livewidget.exceptions")), (path.name, name)


def test_nothing_below_widgets_imports_notebook_libraries():
    """Only livewidget.widgets may import anywidget, traitlets or IPython."""
    for path in PKG.rglob("*.py"):
        if "widgets" in path.relative_to(PKG).parts:
            continue
        for name in imports_of(path):
            assert name.split(".")[0] not in {"anywidget", "traitlets", "IPython", "ipywidgets"}, (path, name)


def test_jupyter_server_and_tornado_only_in_the_extension():
    """Only livewidget.jupyter (the server extension) imports jupyter_server or tornado (issue 12)."""
    for path in PKG.rglob("*.py"):
        if "jupyter" in path.relative_to(PKG).parts:
            continue
        for name in imports_of(path):
            assert name.split(".")[0] not in {"jupyter_server", "tornado"}, (path, name)
    assert any("jupyter_server" in n.split(".")[0] for p in modules("jupyter") for n in imports_of(p))


def test_frameworks_are_imported_only_in_their_integration():
    """Keras, PyTorch, XGBoost, LightGBM and Optuna are optional extras: only livewidget.integrations
    imports them, each module only its own framework, and importing livewidget imports none."""
    import subprocess
    import sys

    frameworks = {
        "keras",
        "torch",
        "tensorflow",
        "jax",
        "xgboost",
        "lightgbm",
        "optuna",
        "lightning",
        "transformers",
    }
    own = {
        "keras.py": {"keras"},
        "xgboost.py": {"xgboost"},
        "lightgbm.py": {"lightgbm"},
        "optuna.py": {"optuna"},
        "lightning.py": {"lightning"},
        "transformers.py": {"transformers"},
    }
    for path in PKG.rglob("*.py"):
        tops = {name.split(".")[0] for name in imports_of(path)} & frameworks
        if "integrations" in path.relative_to(PKG).parts:
            assert tops <= own.get(path.name, set()), (path, tops)
        else:
            assert not tops, (path, tops)
    code = (
        "import sys, livewidget, livewidget.integrations; livewidget.LogHandler; livewidget.Feed;"
        f"print(sorted(m for m in {sorted(frameworks)!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
