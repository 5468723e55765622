"""Generate docs/api.md, the API reference, from the docstrings of livewidget's public names.

Every name in ``livewidget.__all__`` and ``livewidget.server.__all__``: its signature and docstring; for
classes, also the public methods and properties livewidget defines (not those inherited from
ipywidgets, traitlets or the standard library).

    python docs/gen_api.py           # rewrite docs/api.md
    python docs/gen_api.py --check   # exit 1 if docs/api.md is out of date (tests/test_docs.py)
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "api.md"

HEADER = """# API reference

Generated from the docstrings by `docs/gen_api.py` (do not edit by hand: run
`.venv/bin/python docs/gen_api.py`; `tests/test_docs.py` fails when this file is out of date).

Everything here is importable from `livewidget` (or `livewidget.server` for the embedded server, and
`livewidget.integrations.*` for the callbacks, each needing its framework's extra).
"""


class _Raw:
    """An annotation shown as written (``from __future__ import annotations`` makes them strings)."""

    def __init__(self, text: Any) -> None:
        self.text = text if isinstance(text, str) else inspect.formatannotation(text)

    def __repr__(self) -> str:
        return str(self.text)


def _signature(obj: Any, returns: bool = True) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    empty = inspect.Parameter.empty
    params = [
        p.replace(annotation=_Raw(p.annotation)) if p.annotation is not empty else p
        for p in sig.parameters.values()
    ]
    ret = sig.return_annotation
    shown = _Raw(ret) if returns and ret is not empty else empty
    sig = sig.replace(parameters=params, return_annotation=shown)
    return str(sig)


def _doc(obj: Any) -> str:
    doc = inspect.getdoc(obj)
    return doc.strip() if doc else "*(no docstring)*"


def _own(cls: type) -> bool:
    return cls.__module__.startswith("livewidget")


def _members(cls: type) -> list[tuple[str, str, Any]]:
    """``(name, kind, object)`` of the public methods and properties defined by livewidget classes."""
    seen: dict[str, tuple[str, str, Any]] = {}
    for klass in reversed(cls.__mro__):
        if not _own(klass):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(value, property):
                seen[name] = (name, "property", value)
            elif isinstance(value, (staticmethod, classmethod)):
                seen[name] = (name, "method", value.__func__)
            elif inspect.isfunction(value):
                seen[name] = (name, "method", value)
    return sorted(seen.values())


def _section(qualified: str, obj: Any) -> list[str]:
    lines: list[str] = []
    if inspect.isclass(obj):
        is_exc = issubclass(obj, BaseException)
        kind = "exception" if is_exc else "class"
        sig = "" if is_exc else _signature(obj, returns=False)
        lines += [f"### `{qualified}{sig}`", "", f"*{kind}*", "", _doc(obj), ""]
        for name, member_kind, member in _members(obj):
            if member_kind == "property":
                lines += [f"#### `{qualified.split('.')[-1]}.{name}` *(property)*", "", _doc(member), ""]
            else:
                sig = _signature(member).replace("(self, ", "(").replace("(self)", "()")
                lines += [f"#### `{qualified.split('.')[-1]}.{name}{sig}`", "", _doc(member), ""]
    elif callable(obj):
        lines += [f"### `{qualified}{_signature(obj)}`", "", _doc(obj), ""]
    else:
        lines += [f"### `{qualified}`", "", f"`{obj!r}`", ""]
    return lines


def generate() -> str:
    import livewidget
    import livewidget.integrations
    import livewidget.server
    from livewidget.integrations import keras, lightgbm, lightning, optuna, transformers, xgboost

    lines = [HEADER]
    for module in (
        livewidget,
        livewidget.server,
        livewidget.integrations,
        keras,
        lightning,
        transformers,
        xgboost,
        lightgbm,
        optuna,
    ):
        lines += [f"## `{module.__name__}`", "", _doc(module), ""]
        names = sorted(module.__all__, key=lambda n: (n.startswith("_"), n.lower()))
        lines += ["Contents: " + ", ".join(f"`{n}`" for n in names), ""]
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj):  # a submodule: its own section follows (its repr holds a path)
                continue
            lines += _section(f"{module.__name__}.{name}", obj)
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is out of date")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
