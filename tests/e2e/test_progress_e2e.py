"""``ProgressBoard`` in a real JupyterLab and Chromium: a pool's workers, live while the cell runs.

The notebook shows a board, then a cell drives a real ``multiprocessing.Pool`` of four workers, each with
its own :func:`livewidget.progress` (one of them fails). The browser's own pusher-js connection must show
the jobs and their progress while that cell is still running (the kernel is busy, so nothing can come
through the comm), grouped under their parent (``LIVEWIDGET_PARENT_JOB``); at the end the board shows
three workers ``done`` and one ``failed`` with its error, and ``board.df`` agrees. The "clear finished"
button hides them at once and the kernel forgets them.

Screenshots (light and dark) go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from .conftest import NotebookPage, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BOARD = ".jp-NotebookPanel:visible .lw-board"
STEPS = 60  # iterations per worker
STEP = 0.1  # s per iteration: a worker runs about 6 s
FAIL_AT = 25  # the failing worker raises at this iteration

WORKERS = f"""
import time

import livewidget


def work(args):
    i, channel, fail = args
    with livewidget.progress(total={STEPS}, desc=f"worker {{i}}", channel=channel, mininterval=0.1) as bar:
        for k in range({STEPS}):
            time.sleep({STEP})
            if fail and k == {FAIL_AT}:
                raise ValueError(f"worker {{i}} broke at step {{k}}")
            bar.update(1)
    return i
"""


def jobs(nb: NotebookPage) -> list[dict[str, Any]]:
    """Every ``.lw-job`` of the board: ``{job, parent, status, n, text, error}``."""
    return list(
        nb.evaluate_panel(
            """
            return [...panel.node.querySelectorAll('.lw-board .lw-job')].map((r) => ({
                job: r.dataset.job, parent: r.dataset.parent ?? null, status: r.dataset.status,
                n: Number(r.dataset.n), text: r.querySelector('.lw-n')?.textContent ?? '',
                desc: r.querySelector('.lw-name')?.textContent ?? '',
                error: (d => d && !d.hidden ? d.textContent : '')(r.querySelector('.lw-detail'))}));
            """
        )
    )


def test_board_follows_a_pool_of_workers_live(notebooks: Any, lab: Any, frontend: str) -> None:
    mark = uuid.uuid4().hex[:8]
    channel = f"progress-e2e-{mark}"
    parent = f"pool-{mark}"
    module = f"lw_workers_{mark}"
    (lab.root / f"{module}.py").write_text(WORKERS)
    nb = notebooks(
        "progress_live.ipynb",
        [
            "import json, os, multiprocessing\nimport livewidget\n"
            f"board = livewidget.ProgressBoard({channel!r})\nboard",
            f"import {module}\n"
            f"os.environ['LIVEWIDGET_PARENT_JOB'] = {parent!r}\n"
            'print("POOL", flush=True)\n'
            "with multiprocessing.Pool(4) as pool:\n"
            f"    args = [(i, {channel!r}, i == 3) for i in range(4)]\n"
            f"    pending = [pool.apply_async({module}.work, (a,)) for a in args]\n"
            "    results = []\n"
            "    for p in pending:\n"
            "        try:\n"
            "            results.append(p.get(timeout=120))\n"
            "        except ValueError as exc:\n"
            "            results.append(str(exc))\n"
            'print("RESULTS", results, flush=True)',
        ],
    )
    nb.run_all()
    nb.widget(".lw-board", timeout=30)
    nb.page.locator(f'{BOARD} .lw-state[data-state="connected"]').wait_for(state="attached", timeout=15_000)
    nb.wait_output(1, "POOL", timeout=30)

    # While the cell runs: the four workers appear under one group, and their n goes up.
    wait_until(lambda: len([j for j in jobs(nb) if j["parent"] == parent]) == 4, 20, "four worker rows")
    first = {j["job"]: j["n"] for j in jobs(nb)}
    assert nb.is_running(1), f"the pool cell ended before the rows appeared: {nb.cell_state(1)}"
    wait_until(
        lambda: sum(j["n"] for j in jobs(nb)) > sum(first.values()) + 4, 10, "n to increase on the board"
    )
    group = nb.page.locator(f'{BOARD} .lw-group[data-parent="{parent}"]')
    assert group.count() == 1
    assert group.get_attribute("data-jobs") == "4"
    during = jobs(nb)
    assert all(j["text"].endswith(f"/{STEPS}") for j in during), during
    assert nb.is_running(1), f"the pool cell ended too early: {nb.cell_state(1)}"
    group.locator(".lw-group-head").click()  # expand to the workers
    wait_until(lambda: nb.page.locator(f"{BOARD} .lw-children").first.is_visible(), 5, "the group to open")
    nb.screenshot("progress-live-light")
    nb.screenshot("progress-live-light-widget", BOARD)
    assert nb.is_running(1), "the screenshots should show the board while the cell runs"

    # The end: three done and one failed, with its error text.
    nb.wait_cell_done(1, timeout=90)
    assert "RESULTS" in nb.output_text(1)

    def statuses() -> list[str]:
        return sorted(j["status"] for j in jobs(nb) if j["parent"] == parent)

    wait_until(lambda: statuses() == ["done", "done", "done", "failed"], 15, "3 done + 1 failed")
    final = {j["desc"]: j for j in jobs(nb)}
    failed = final["worker 3"]
    assert failed["status"] == "failed"
    assert f"ValueError: worker 3 broke at step {FAIL_AT}" in failed["error"]
    assert failed["n"] == FAIL_AT
    for i in range(3):
        assert final[f"worker {i}"]["text"] == f"{STEPS}/{STEPS}", final
    assert group.get_attribute("data-status") == "failed"
    assert (
        f"ValueError: worker 3 broke at step {FAIL_AT}"
        in group.locator(".lw-group-head .lw-detail").inner_text()
    )
    root = nb.page.locator(BOARD).first
    assert (root.get_attribute("data-done"), root.get_attribute("data-failed")) == ("3", "1")

    # board.df agrees with the browser.
    def frame() -> dict[str, Any]:
        return nb.kernel_json(
            "df = board.df\n"
            "print(json.dumps({'rows': df[['job', 'parent', 'desc', 'n', 'total', 'status', 'error']]"
            ".astype(object).where(df.notna(), None).values.tolist()}))"
        )

    wait_until(lambda: len(frame()["rows"]) == 4, 10, "board.df to hold the four jobs")
    rows = {r[2]: r for r in frame()["rows"]}
    for desc, j in final.items():
        job, par, _, n, total, status, error = rows[desc]
        assert (job, par, status, n, total) == (j["job"], parent, j["status"], j["n"], STEPS)
        assert (error or "") == (j["error"] or ""), (error, j)

    nb.screenshot("progress-done-light")
    nb.screenshot("progress-done-light-widget", BOARD)
    try:
        nb.set_theme("JupyterLab Dark")
        time.sleep(0.3)
        nb.screenshot("progress-done-dark-widget", BOARD)
    finally:
        nb.set_theme("JupyterLab Light")

    # Clear finished: gone in the browser at once, then from the kernel's table too.
    nb.page.locator(f"{BOARD} .lw-clear").first.click()
    wait_until(lambda: jobs(nb) == [], 2, "the finished jobs to be hidden")
    wait_until(lambda: nb.kernel_json("print(json.dumps(len(board.df)))") == 0, 10, "board.df to be cleared")
    assert json.loads(json.dumps(jobs(nb))) == []
