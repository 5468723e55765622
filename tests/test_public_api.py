"""The public surface is small and deliberate: pinned here so a change to it is a visible decision."""

from __future__ import annotations

import livewidget
import livewidget.protocol
import livewidget.server


def test_package_exports():
    """livewidget.__all__ lists exactly the public names, all importable."""
    assert sorted(livewidget.__all__) == sorted(
        [
            "Chat",
            "ConfigurationError",
            "Feed",
            "LiveChart",
            "ChartPublisher",
            "points",
            "LivewidgetError",
            "LogHandler",
            "ProgressBoard",
            "progress",
            "PublishError",
            "Publisher",
            "Settings",
            "connect",
            "connection",
            "publish",
            "ProtocolError",
            "RestError",
            "ServerError",
            "SubscriptionError",
            "__version__",
        ]
    )
    for name in livewidget.__all__:
        assert hasattr(livewidget, name)


def test_server_exports():
    """livewidget.server exposes the server, the thread runner and app settings."""
    assert sorted(livewidget.server.__all__) == [
        "AppConfig",
        "LocalServer",
        "MemoryHistory",
        "PusherServer",
        "SQLiteHistory",
        "ServerLimits",
        "new_app",
        "run_forever",
    ]


def test_protocol_exports():
    """livewidget.protocol exposes the sans-I/O core."""
    assert sorted(livewidget.protocol.__all__) == sorted(
        [
            "Action",
            "AppConfig",
            "Apps",
            "Channel",
            "Close",
            "CloseCode",
            "Connection",
            "ConnectionState",
            "Hub",
            "RestResponse",
            "Send",
            "Webhook",
            "handle_rest",
        ]
    )


def test_lazy_names_resolve_to_the_right_objects():
    """Widgets and publishing load on first use and are the real classes and functions."""
    from livewidget._publish import publish
    from livewidget.widgets import Chat, Feed

    assert livewidget.Feed is Feed

    from livewidget._points import ChartPublisher, points
    from livewidget.widgets import LiveChart

    assert livewidget.LiveChart is LiveChart
    assert livewidget.ChartPublisher is ChartPublisher
    assert livewidget.points is points
    assert livewidget.Chat is Chat
    assert livewidget.publish is publish
    assert callable(livewidget.publish)

    from livewidget._progress import progress
    from livewidget.widgets import ProgressBoard

    assert livewidget.ProgressBoard is ProgressBoard
    assert livewidget.progress is progress


def test_integrations_names():
    """Issue 16's names: one module per framework, each importable on its own (lazily)."""
    import inspect

    import livewidget.integrations
    from livewidget.integrations import keras, lightgbm, lightning, optuna, transformers, xgboost

    assert sorted(livewidget.integrations.__all__) == [
        "keras",
        "lightgbm",
        "lightning",
        "optuna",
        "transformers",
        "xgboost",
    ]
    assert keras.__all__ == ["LiveCallback"] and xgboost.__all__ == ["LiveCallback"]
    assert lightning.__all__ == ["LiveCallback"] and transformers.__all__ == ["LiveCallback"]
    assert optuna.__all__ == ["LiveCallback"] and lightgbm.__all__ == ["live_callback"]
    for cls, default in (
        (keras.LiveCallback, "train"),
        (lightning.LiveCallback, "train"),
        (transformers.LiveCallback, "train"),
        (xgboost.LiveCallback, "boost"),
        (optuna.LiveCallback, "study"),
    ):
        assert inspect.signature(cls).parameters["channel"].default == default
    assert inspect.signature(lightgbm.live_callback).parameters["channel"].default == "boost"
    assert list(inspect.signature(livewidget.LogHandler).parameters)[:2] == ["channel", "level"]
