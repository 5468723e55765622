"""``LiveChart`` in a real JupyterLab and Chromium: fed by a background process while a cell runs.

The notebook starts a separate Python process that publishes points with :func:`livewidget.points`
(several points per event) and waits for it in a running cell: the browser's own pusher-js connection
draws them meanwhile (checked through the chart's ``data-*`` attributes, uPlot's legend and canvas),
bad points are counted and do not break the chart, the kernel records every point (``chart.df``),
and a page opened later draws the recorded window first, then goes on live.

Screenshots (light and dark) go to ``test-artifacts/``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pusher
import pytest

from .conftest import ARTIFACTS, NotebookPage, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CHART = ".jp-NotebookPanel:visible .lw-chart"
POINTS = 400  # good points the process publishes (two runs, alternating)

PUBLISHER = """
import sys, time, math
import livewidget

n, delay = int(sys.argv[1]), float(sys.argv[2])
with livewidget.points("metrics") as pts:
    for i in range(n):
        pts.add(step=i, loss=math.exp(-i / 120) + 0.02 * math.sin(i), acc=1 - math.exp(-i / 90),
                run="a" if i % 2 else "b")
        if i == n // 4:
            livewidget.publish("metrics", "point", "not a point")      # not an object: skipped
            pts.add(loss=1.0, run="a")                                   # no x: skipped
            pts.add(step=i + 0.5, loss="oops", run="a")                  # only a bad value: a gap
        time.sleep(delay)
print("PUBLISHED", n, flush=True)
"""


def attrs(nb: NotebookPage) -> dict[str, str]:
    """The chart root's data-* attributes (first chart of the visible notebook)."""
    return dict(
        nb.evaluate_panel(
            "const el = panel.node.querySelector('.lw-chart'); return el ? {...el.dataset} : {};"
        )
    )


def number(nb: NotebookPage, name: str) -> int:
    value = attrs(nb).get(name, "")
    return int(value) if value.isdigit() else -1


def canvas_is_drawn(nb: NotebookPage) -> bool:
    """Some pixels of uPlot's canvas differ from the first one: lines were drawn."""
    return bool(
        nb.evaluate_panel(
            """
            const c = panel.node.querySelector('.lw-chart canvas');
            if (!c || !c.width) return false;
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let differ = 0;
            for (let i = 0; i < d.length; i += 16) {
                if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2] || d[i + 3] !== d[3]) differ++;
            }
            return differ > 200;
            """
        )
    )


def legend(nb: NotebookPage) -> list[dict[str, Any]]:
    return list(
        nb.evaluate_panel(
            """
            return [...panel.node.querySelectorAll('.lw-chart .u-legend .u-series')].map((s) => ({
                label: s.querySelector('.u-label')?.textContent ?? '',
                value: s.querySelector('.u-value')?.textContent ?? '',
                off: s.classList.contains('u-off')}));
            """
        )
    )


def test_chart_fed_by_a_background_process_while_a_cell_runs(
    notebooks: Any, sdk: pusher.Pusher, frontend: str
) -> None:
    nb = notebooks(
        "chart_live.ipynb",
        [
            "import json, subprocess, sys, time\nimport livewidget\n"
            'chart = livewidget.LiveChart("metrics", x="step", y=["loss", "acc"], by="run",\n'
            '                             title="training", y_label="value")\nchart',
            f"open('publisher.py', 'w').write({PUBLISHER!r})\n"
            f"proc = subprocess.Popen([sys.executable, 'publisher.py', '{POINTS}', '0.02'])\n"
            'print("STARTED", flush=True)\n'
            "proc.wait(timeout=120)\n"
            'print("DONE", proc.returncode)',
        ],
    )
    nb.run_all()
    nb.widget(".lw-chart", timeout=30)
    nb.wait_output(1, "STARTED", timeout=30)
    nb.page.locator(f'{CHART} .lw-state[data-state="connected"]').wait_for(state="visible", timeout=15_000)

    # Points arrive and are drawn while the cell waits for the process.
    wait_until(lambda: number(nb, "points") >= 60, 20, "points drawn while the cell runs", interval=0.2)
    assert nb.is_running(1), f"the cell should still be running: {nb.cell_state(1)}"
    assert attrs(nb)["xKind"] == "number"
    assert canvas_is_drawn(nb), "uPlot's canvas should show lines"
    labels = [s["label"] for s in legend(nb)]
    assert {"b · loss", "b · acc", "a · loss", "a · acc"} <= set(labels), labels
    nb.screenshot("chart-live-light")
    nb.screenshot("chart-live-light-widget", CHART)

    # Bad points: counted in a visible badge, the chart goes on.
    wait_until(lambda: number(nb, "skipped") >= 3, 30, "the bad points to be counted", interval=0.2)
    badge = nb.page.locator(f"{CHART} .lw-chart-skipped").first
    assert badge.is_visible() and badge.inner_text().strip() == "3 skipped", badge.inner_text()
    still = number(nb, "points")
    wait_until(lambda: number(nb, "points") > still, 10, "points after the bad ones", interval=0.2)

    nb.wait_cell_done(1, timeout=60)
    assert "DONE 0" in nb.output_text(1)
    drawn, deadline = -1, time.monotonic() + 10
    while (drawn := number(nb, "points")) != POINTS + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    # On failure, the chart's counters and the connection's state tell lost points from counted twice.
    assert drawn == POINTS + 1, f"{drawn} points drawn, not {POINTS + 1} (the gap included): {attrs(nb)}"
    assert number(nb, "received") == POINTS
    assert number(nb, "series") == 4
    error = nb.page.locator(f"{CHART} .lw-error").first
    assert not error.is_visible() or not error.inner_text().strip()
    assert not [line for line in nb.console if line.startswith("pageerror")], nb.console

    # The kernel recorded every point, bad ones included, once.
    record = nb.kernel_json(
        "df = chart.df\n"
        "print(json.dumps({'len': len(df), 'skipped': chart.skipped, 'bad': chart.bad_values,\n"
        "    'steps': int(df['step'].notna().sum()), 'runs': sorted(df['run'].dropna().unique())}))"
    )
    assert record == {"len": POINTS + 3, "skipped": 3, "bad": 0, "steps": POINTS + 1, "runs": ["a", "b"]}

    # Hover shows values in the legend; a legend click hides a series.
    box = nb.page.locator(f"{CHART} .u-over").first.bounding_box()
    assert box is not None
    nb.page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    wait_until(
        lambda: any(s["label"] == "a · loss" and s["value"] not in ("", "\u2013") for s in legend(nb)),
        5,
        "hover values in the legend",
    )
    nb.screenshot("chart-hover-light-widget", CHART)
    nb.page.locator(f"{CHART} .u-legend .u-series", has_text="a · acc").first.click()
    wait_until(lambda: any(s["label"] == "a · acc" and s["off"] for s in legend(nb)), 5, "series hidden")

    # A drag zooms and pauses; new points do not move the view; a click resumes.
    nb.page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5)
    nb.page.mouse.down()
    nb.page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.5, steps=5)
    nb.page.mouse.up()
    wait_until(lambda: attrs(nb).get("paused") == "true", 5, "the view to pause on zoom")
    resume = nb.page.locator(f"{CHART} .lw-chart-resume").first
    assert resume.is_visible()
    paints = number(nb, "paints")
    sdk.trigger(["metrics"], "point", [{"step": 1000 + i, "loss": 0.01, "run": "a"} for i in range(5)])
    wait_until(lambda: number(nb, "received") == POINTS + 5, 10, "points received while paused")
    assert number(nb, "paints") == paints, "a paused view does not redraw with new data"
    wait_until(lambda: "5 new" in resume.inner_text(), 5, "the paused badge to count new points")
    nb.screenshot("chart-paused-light-widget", CHART)
    nb.page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    wait_until(lambda: attrs(nb).get("paused") == "false", 5, "a click to resume the live view")
    wait_until(lambda: number(nb, "paints") > paints, 5, "the resumed view to redraw")

    # Reopened in a new page (same kernel): the recorded window is drawn before anything new arrives.
    nb.save()
    kernel = nb.kernel_id()
    time.sleep(2.5)  # the kernel refreshes the record for later views every 2 s
    again = notebooks("chart_live.ipynb")
    assert again.kernel_id() == kernel
    again.widget(".lw-chart", timeout=30)
    wait_until(lambda: number(again, "points") == POINTS + 6, 15, "the recorded window in the new page")
    assert number(again, "seeded") == POINTS + 6 and number(again, "received") == 0
    assert number(again, "skipped") == 3, "the kernel's counts come with the record"
    assert canvas_is_drawn(again)
    again.page.locator(f'{CHART} .lw-state[data-state="connected"]').wait_for(state="visible", timeout=15_000)
    sdk.trigger(["metrics"], "point", {"step": 2000, "loss": 0.5, "acc": 0.9, "run": "c"})
    wait_until(lambda: number(again, "received") == 1, 10, "a live point in the reopened page")
    wait_until(lambda: number(again, "series") == 6, 5, "the new run's series")
    wait_until(lambda: number(nb, "received") == POINTS + 6, 10, "the first page is live too")
    again.screenshot("chart-reopened-light-widget", CHART)
    try:
        again.set_theme("JupyterLab Dark")
        wait_until(lambda: canvas_is_drawn(again), 5, "the chart redrawn in the dark theme")
        again.screenshot("chart-reopened-dark")
        again.screenshot("chart-reopened-dark-widget", CHART)
        colors = again.evaluate_panel(
            "const el = panel.node.querySelector('.lw-chart');return getComputedStyle(el).backgroundColor;"
        )
        assert colors not in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)"), colors
    finally:
        again.set_theme("JupyterLab Light")


def test_bad_points_first_do_not_break_the_chart(notebooks: Any, sdk: pusher.Pusher, frontend: str) -> None:
    channel = f"junk-{uuid.uuid4().hex[:6]}"
    nb = notebooks(
        "chart_junk.ipynb",
        [
            "import livewidget\n"
            f'chart = livewidget.LiveChart("{channel}", x="t", y="v", window=50, kind="scatter")\nchart',
        ],
    )
    nb.run_all()
    nb.widget(".lw-chart", timeout=30)
    nb.page.locator(f'{CHART} .lw-state[data-state="connected"]').wait_for(state="visible", timeout=15_000)
    wait_until(lambda: nb.kernel_status() == "idle", 30, "the kernel to be idle")
    junk: list[Any] = ["text", 12, None, [1, 2], {"t": "x", "v": 1}, {"t": 1}, {"t": 2, "v": "NaN"}]
    for item in junk:
        sdk.trigger([channel], "point", item)
    skipped = len(junk) + 1  # the list holds two points
    wait_until(lambda: number(nb, "skipped") == skipped, 10, "every junk point counted")
    assert number(nb, "points") == 1, "the NaN point is a gap row, nothing else is drawn"
    sdk.trigger([channel], "point", [{"t": i, "v": i * i} for i in range(100)])
    wait_until(lambda: number(nb, "points") == 50, 10, "the good points, windowed to 50")
    assert canvas_is_drawn(nb)
    assert not [line for line in nb.console if line.startswith("pageerror")], nb.console
    assert nb.kernel_json("import json; print(json.dumps([chart.skipped, len(chart.df)]))") == [
        skipped,
        skipped + 100,
    ]
    nb.screenshot("chart-junk-light-widget", CHART)


def test_kinds_time_axis_log_scale_and_backfill(notebooks: Any, frontend: str) -> None:
    """Every kind draws; from_dataframe backfills (time axis); log scale and limits; both themes."""
    nb = notebooks(
        "chart_kinds.ipynb",
        [
            "import numpy as np, pandas as pd\nimport livewidget\n"
            "idx = pd.date_range('2024-03-01', periods=240, freq='min', name='time')\n"
            "df = pd.DataFrame({'cpu': 50 + 20 * np.sin(np.arange(240) / 20),\n"
            "                   'mem': 30 + np.arange(240) / 10}, index=idx)\n"
            "area = livewidget.LiveChart.from_dataframe(df, kind='area', title='host metrics',"
            " y_label='%', height=260)\narea",
            "steps = pd.DataFrame({'step': range(1, 301), 'loss': 2 * np.exp(-np.arange(300) / 60) + 0.01})\n"
            "log = livewidget.LiveChart.from_dataframe(steps, x='step', y='loss', log_y=True, height=240,"
            " title='loss (log)')\nlog",
            "bars = livewidget.LiveChart.from_dataframe(pd.DataFrame({'bucket': range(24),"
            " 'requests': (np.arange(24) * 37) % 101}), x='bucket', kind='bar', ylim=(0, 120),"
            " height=220, title='requests per hour')\nbars",
            "rng = np.random.default_rng(1)\n"
            "sc = livewidget.LiveChart.from_dataframe(pd.DataFrame({'x': rng.normal(size=500),"
            " 'y': rng.normal(size=500), 'g': rng.choice(['left', 'right'], 500)}), x='x', y='y', by='g',"
            " kind='scatter', height=240, title='scatter by group')\nsc",
        ],
    )
    nb.run_all()
    nb.wait_cell_done(3, timeout=60)
    charts = nb.page.locator(CHART)
    wait_until(lambda: charts.count() == 4, 30, "four charts")

    def all_attrs() -> list[dict[str, str]]:
        return list(
            nb.evaluate_panel(
                "return [...panel.node.querySelectorAll('.lw-chart')].map((e) => ({...e.dataset}));"
            )
        )

    try:
        wait_until(
            lambda: [a.get("points") for a in all_attrs()] == ["240", "300", "24", "500"],
            30,
            "every chart's points",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {all_attrs()}") from None
    kinds = all_attrs()
    assert kinds[0]["xKind"] == "time" and kinds[1]["xKind"] == "number"
    assert kinds[3]["series"] == "2"
    drawn = nb.evaluate_panel(
        """
        return [...panel.node.querySelectorAll('.lw-chart canvas')].map((c) => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 16) if (d[i + 3] !== 0) n++;
            return n;
        });
        """
    )
    assert len(drawn) == 4 and all(n > 100 for n in drawn), drawn
    nb.screenshot("chart-kinds-light")
    for i in range(4):
        charts.nth(i).scroll_into_view_if_needed()
        charts.nth(i).screenshot(path=str(ARTIFACTS / f"chart-kind-{i}-light.png"))
    # The plot follows the width of the notebook.
    width = nb.evaluate_panel("return panel.node.querySelector('.lw-chart canvas').clientWidth;")
    nb.page.set_viewport_size({"width": 900, "height": 900})
    wait_until(
        lambda: (
            nb.evaluate_panel("return panel.node.querySelector('.lw-chart canvas').clientWidth;")
            < width - 200
        ),
        10,
        "the chart to shrink with the page",
    )
    nb.page.set_viewport_size({"width": 1280, "height": 900})
    try:
        nb.set_theme("JupyterLab Dark")
        for i in range(4):
            charts.nth(i).scroll_into_view_if_needed()
            charts.nth(i).screenshot(path=str(ARTIFACTS / f"chart-kind-{i}-dark.png"))
    finally:
        nb.set_theme("JupyterLab Light")
