"""The browser side: the JavaScript unit tests (``js/test``, under Node) and the committed bundle.

``livewidget/static/widget.js`` and ``widget.css`` are built by ``npm run build`` in ``js/`` and committed,
so installing the package needs no Node. These tests check that the bundle is what the sources build
(byte for byte: the build is deterministic), that it is a self-contained ES module, that it loads nothing
from a CDN, and that no secret is handled in browser code. Node and ``js/node_modules`` are installed by
``scripts/setup.sh``; when they are missing the Node tests fail (they never skip).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JS_DIR = ROOT / "js"
STATIC = ROOT / "livewidget" / "static"
BUNDLE = STATIC / "widget.js"
CSS = STATIC / "widget.css"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is not installed (needed for the JavaScript tests): run scripts/setup.sh")
    for package in ("esbuild", "happy-dom", "pusher-js"):
        if not (JS_DIR / "node_modules" / package / "package.json").is_file():
            pytest.fail(
                f"{package} is not installed in {JS_DIR}/node_modules: run `npm ci` in js/ (scripts/setup.sh)"
            )
    return node


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=JS_DIR, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.node
@pytest.mark.timeout(180)
def test_javascript_unit_tests_pass() -> None:
    """`node --test` over js/test/*.test.js passes, and runs some tests."""
    files = sorted(str(p.relative_to(JS_DIR)) for p in (JS_DIR / "test").glob("*.test.js"))
    assert files, "no js/test/*.test.js"
    proc = _run([_node(), "--test", *files], timeout=170)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"JavaScript tests failed (cd js && npm test):\n{output[-6000:]}"
    passed = re.search(r"^# pass (\d+)$", output, re.MULTILINE)
    failed = re.search(r"^# fail (\d+)$", output, re.MULTILINE)
    assert passed and int(passed.group(1)) > 0, f"no JavaScript test ran:\n{output[-3000:]}"
    assert failed and failed.group(1) == "0", output[-6000:]


@pytest.mark.node
@pytest.mark.timeout(60)
def test_committed_bundle_is_what_the_sources_build(tmp_path: Path) -> None:
    """`npm run build`, run twice into a temporary directory, gives the committed files byte for byte."""
    _node()
    script = json.loads((JS_DIR / "package.json").read_text())["scripts"]["build"]
    command, *args = shlex.split(script)
    assert command == "esbuild", script
    assert any(a.startswith("--outfile=") for a in args), script
    esbuild = JS_DIR / "node_modules" / ".bin" / "esbuild"
    builds = []
    for i in range(2):
        out = tmp_path / str(i) / "widget.js"
        argv = [f"--outfile={out}" if a.startswith("--outfile=") else a for a in args]
        proc = _run([str(esbuild), *argv], timeout=50)
        assert proc.returncode == 0, proc.stderr
        builds.append((out.read_bytes(), out.with_suffix(".css").read_bytes()))
    assert builds[0] == builds[1], "the build is not deterministic"
    js, css = builds[0]
    stale = "livewidget/static/ is stale: run `npm run build` in js/ and commit the result"
    assert BUNDLE.read_bytes() == js, stale
    assert CSS.read_bytes() == css, stale


def test_bundle_is_a_self_contained_es_module() -> None:
    """One ES module with a default export ({initialize, render}), importing nothing."""
    text = BUNDLE.read_text(encoding="utf-8")
    assert len(text) > 10_000, "widget.js looks like a placeholder: run `npm run build` in js/"
    assert re.search(r"export\s*\{\s*\w+\s+as\s+default\s*\}\s*;", text), "no default export"
    assert not re.search(r"(^|[;}\s])import\s*[\w{*\"'`]", text), "the bundle imports another module"
    assert "require(" not in text, "CommonJS require() left in the bundle"
    assert "initialize" in text
    assert "render" in text


# pusher-js URLs that may appear in the bundle: its licence banner and an error message, and its CDN
# defaults (`cdn_http`/`cdn_https`), used only by the SockJS transport, which connection.js disables.
ALLOWED_URLS = {"https://pusher.com", "http://js.pusher.com", "https://js.pusher.com"}
ALLOWED_URL_PREFIX = "https://github.com/pusher/pusher-js/"


def test_bundle_loads_nothing_from_a_cdn() -> None:
    """No dynamic import, no CDN, no URL but pusher-js's own; the CSS loads no font or image."""
    text = BUNDLE.read_text(encoding="utf-8")
    assert "import(" not in text
    assert "importScripts" not in text
    for cdn in ("unpkg", "jsdelivr", "esm.sh", "cdnjs", "skypack", "jspm.io", "googleapis"):
        assert cdn not in text.lower(), cdn
    names = {m.group(0) for m in re.finditer(r"\w*cdn\w*", text, re.IGNORECASE)}
    assert names <= {"cdn_http", "cdn_https"}, names
    urls = set(re.findall(r"https?://[^\s\"'`)]+", text))
    unknown = {u for u in urls if u.rstrip("/") not in ALLOWED_URLS and not u.startswith(ALLOWED_URL_PREFIX)}
    assert not unknown, sorted(unknown)
    # ...and the one pusher-js transport that would fetch a script from js.pusher.com stays off.
    connection = (JS_DIR / "src" / "connection.js").read_text(encoding="utf-8")
    assert re.search(r"disabledTransports.*\"sockjs\"", connection)
    css = CSS.read_text(encoding="utf-8")
    assert "@import" not in css
    assert "url(" not in css


SECRET_NAMES = {"shared_secret", "secretbox"}  # pusher-js: encrypted channels' per-channel key, NaCl


def test_no_secret_in_browser_code() -> None:
    """Browser code never mentions a secret, except in comments and pusher-js's encrypted-channel names."""
    files = sorted((JS_DIR / "src").rglob("*.*")) + sorted(STATIC.glob("*.*"))
    assert BUNDLE in files
    found = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith(("//", "/*", "*")):
                continue
            for match in re.finditer(r"\w*secret\w*", line, re.IGNORECASE):
                if match.group(0) not in SECRET_NAMES:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)}")
    assert not found, found
