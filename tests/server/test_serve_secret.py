"""``livewidget serve`` keeps the app secret off its command line and out of its output (issue 14 items
11 and 12); a missing ``redis`` extra is a one-line message, not a traceback."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from livewidget import _config, _embedded

from .test_config_cli import LIVEWIDGET, app_from, clean_env, run_serve, runtime_dir, serve
from .test_webhooks import sdk_for

__all__ = ["runtime_dir", "serve"]  # fixtures used here

pytestmark = pytest.mark.timeout(60)


def cmdline(pid: int) -> str:
    """What every local user sees of process ``pid`` (``ps``)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_generated_secret_lives_in_a_private_file_never_printed(serve: Any, runtime_dir: Path) -> None:
    server = serve("--port", "0")
    port = server.listening()
    [printed] = server.apps()
    path = runtime_dir / f"serve-{printed['app_id']}.secret"
    assert f"secret: generated, in {path} (mode 0600" in server.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert len(secret) >= 32
    assert secret not in server.output + server.errors
    assert secret not in cmdline(server.proc.pid)
    [url] = server.urls()
    assert app_from(url).secret == secret
    assert sdk_for("127.0.0.1", port, app_from(url)).trigger("c", "e", {}) == {}
    assert server.stop() == 0
    assert not path.exists()  # its credentials ended with the process


def test_secret_file_is_read_and_only_its_path_is_shown(serve: Any, tmp_path: Path) -> None:
    path = tmp_path / "app.secret"
    path.write_text("from-a-file-0123456789\n")
    path.chmod(0o600)
    server = serve("--port", "0", "--app-id", "77", "--key", "k77", "--secret-file", str(path))
    port = server.listening()
    assert f"secret: from {path}" in server.output
    assert "from-a-file" not in server.output + server.errors + cmdline(server.proc.pid)
    assert "can be read by other users" not in server.errors
    [url] = server.urls()
    assert url == f"http://k77:from-a-file-0123456789@127.0.0.1:{port}/apps/77"
    assert sdk_for("127.0.0.1", port, app_from(url)).trigger("c", "e", {}) == {}
    assert server.stop() == 0
    assert path.read_text() == "from-a-file-0123456789\n"  # the user's file is left alone


def test_missing_secret_file_is_created_0600_and_reused(serve: Any, tmp_path: Path) -> None:
    path = tmp_path / "new.secret"
    first = serve("--port", "0", "--secret-file", str(path))
    first.listening()
    assert f"secret: new, written to {path} (mode 0600)" in first.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert secret not in first.output
    assert first.stop() == 0
    assert path.exists()  # kept: the user named it, the next run uses it
    second = serve("--port", "0", env=clean_env(LIVEWIDGET_SECRET_FILE=str(path)))
    second.listening()
    assert f"secret: from {path}" in second.output
    assert app_from(second.urls()[0]).secret == secret
    assert second.stop() == 0


def test_a_secret_file_others_can_read_gets_a_warning(serve: Any, tmp_path: Path) -> None:
    path = tmp_path / "open.secret"
    path.write_text("s3cret-open")
    path.chmod(0o644)
    server = serve("--port", "0", "--secret-file", str(path))
    server.listening()
    assert f"{path} can be read by other users; run: chmod 600 {path}" in server.errors
    assert server.stop() == 0


def test_secret_option_still_works_but_is_not_printed(serve: Any) -> None:
    server = serve("--port", "0", "--secret", "visible-in-ps-0123")
    port = server.listening()
    assert "visible-in-ps-0123" not in server.output
    assert "visible to other local users" in server.output
    assert "http://" in server.output and ":SECRET@" in server.output
    app = app_from(server.urls()[0].replace("SECRET", "visible-in-ps-0123"))
    assert sdk_for("127.0.0.1", port, app).trigger("c", "e", {}) == {}
    assert server.stop(signal.SIGINT) == 0


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--secret", "a", "--secret-file", "F"), {}, "give --secret or --secret-file, not both"),
        (("--secret-file", "EMPTY"), {}, "is empty"),
        ((), {"LIVEWIDGET_SECRET": "a", "LIVEWIDGET_SECRET_FILE": "F"}, "not both"),
        (("--config", "CONFIG", "--secret-file", "F"), {}, "either in --config or as options"),
        (("--config", "CONFIG"), {"LIVEWIDGET_SECRET_FILE": "F"}, "either in --config or as options"),
        (("--secret-file", "NODIR/x.secret"), {}, "cannot write a new secret to"),
    ],
)
def test_bad_secret_settings_exit_2_with_a_clear_message(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "f").write_text("x")
    config = tmp_path / "c.json"
    config.write_text('{"port": 0, "apps": [{"id": 1, "key": "k", "secret": "s"}]}')
    names = {"F": tmp_path / "f", "EMPTY": tmp_path / "empty", "CONFIG": config, "NODIR": tmp_path / "no"}

    def fill(value: str) -> str:
        head, _, tail = value.partition("/")
        return str(names[head]) + (f"/{tail}" if tail else "") if head in names else value

    result = run_serve(
        "--port", "0", *map(fill, args), env=clean_env(**{k: fill(v) for k, v in env.items()}), cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout


def test_help_says_how_to_keep_the_secret_private() -> None:
    out = subprocess.run([str(LIVEWIDGET), "serve", "--help"], capture_output=True, text=True, check=True)
    text = " ".join(out.stdout.split())
    assert "--secret-file PATH" in text and "LIVEWIDGET_SECRET_FILE" in text and "LIVEWIDGET_SECRET" in text
    assert "visible to every local user in the process list" in text
    assert "mode 0600" in text
    assert "The app secret is never printed" in text
    for command in ("publish", "tail"):  # --url holds the secret too
        out = subprocess.run([str(LIVEWIDGET), command, "--help"], capture_output=True, text=True, check=True)
        assert "visible to other local users in ps: prefer LIVEWIDGET_URL" in " ".join(out.stdout.split())


def test_embedded_daemon_gets_the_secret_in_its_environment_not_its_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEWIDGET_RUNTIME_DIR", str(tmp_path / "rt"))
    # a user's own `serve` setting is not the daemon's: it must neither start with it nor fail on it
    (tmp_path / "mine.secret").write_text("not-the-daemons")
    monkeypatch.setenv("LIVEWIDGET_SECRET_FILE", str(tmp_path / "mine.secret"))
    for name in ("LIVEWIDGET_URL", "PUSHER_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_config, "_process_settings", None)
    try:
        info = _embedded.ensure_embedded()
        line = cmdline(int(info["pid"]))
        assert "livewidget serve" in line
        assert info["secret"] not in line
        assert info["secret"] == json.loads((tmp_path / "rt" / "credentials.json").read_text())["secret"]
        # the banner goes to server.out (stdout), the rotated server.log holds the log records
        out = (tmp_path / "rt" / "server.out").read_text()
        assert "secret: from $LIVEWIDGET_SECRET" in out
        for name in ("server.out", "server.log"):
            text = (tmp_path / "rt" / name).read_text() if (tmp_path / "rt" / name).exists() else ""
            assert info["secret"] not in text and info["secret"][:4] + "…" not in text
    finally:
        _embedded.stop_embedded()


def test_serve_redis_without_the_extra_says_what_to_install(tmp_path: Path) -> None:
    """Simulates a missing redis-py (sys.modules['redis'] = None blocks its import)."""
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from livewidget.cli import main\n"
        "sys.exit(main(['serve', '--port', '0', '--redis', 'redis://127.0.0.1:1']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode != 0
    assert "pip install 'livewidget[redis]'" in result.stderr
    assert "Traceback" not in result.stderr and "ModuleNotFoundError" not in result.stderr
    assert "listening" not in result.stdout
    runtime = tmp_path / "runtime"  # no generated secret's file left behind
    assert not runtime.exists() or os.listdir(runtime) == []


def test_a_secret_of_the_wrong_type_in_a_config_file_is_not_echoed(tmp_path: Path) -> None:
    """Was: "secret must be a str, got 918273645546" on stderr."""
    config = tmp_path / "apps.toml"
    config.write_text('[[apps]]\nid = 1\nkey = "k"\nsecret = 918273645546\n')
    result = run_serve("--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "secret must be a str, got type int" in result.stderr
    assert "918273645546" not in result.stderr
