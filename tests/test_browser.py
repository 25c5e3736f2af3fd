"""The demo in a real browser: headless Debian Chromium driven by Playwright
(``/usr/bin/chromium``; no browser is ever downloaded).

Upload the sample in the demo page, watch the job's progress bar advance on
the dashboard and reach 100% with the export link, cancel a second import,
see a failure, and check that another user gets 403 for the first job.

Skipped when Chromium or Playwright is missing, except in CI
(``OFFLOAD_REQUIRE_SERVICES=1``), where that fails. With
``OFFLOAD_UPDATE_SCREENSHOT=1`` the dashboard screenshot it takes is saved
as ``docs/_static/dashboard.png``.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import sys
import threading
import typing as t
from pathlib import Path

import pytest
from examples.app import create_app
from examples.app import SAMPLE_PATH
from examples.extensions import offload
from flask import Flask
from flask import request

from flask_offload import Job
from flask_offload import JobState
from flask_offload import Offload
from flask_offload.dashboard import public_args
from flask_offload.signals import job_progress

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "_static" / "dashboard.png"
WAIT = 30  # seconds, at most, for any one thing
WAIT_MS = WAIT * 1000


def require_browser() -> t.Any:
    """Playwright's ``sync_playwright``, or skip (fail in CI) without it."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "Playwright (pip install playwright) is not installed."
    if problem is None and not (
        os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)
    ):
        problem = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)."
    if problem is not None:
        if os.environ.get("OFFLOAD_REQUIRE_SERVICES") == "1":
            pytest.fail(problem + " OFFLOAD_REQUIRE_SERVICES=1 requires it.")
        pytest.skip(problem)
    return sync_playwright


class Gate:
    """Holds a job when its progress reaches ``threshold`` until released."""

    def __init__(self, threshold: float, job_id: str | None) -> None:
        self.threshold = threshold
        self.job_id = job_id
        self.reached = threading.Event()
        self.release = threading.Event()


class Gates:
    """Hold demo jobs at chosen points of their progress, so that the test
    sees a bar part-way without depending on timing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Gate] = []

    def add(self, threshold: float, job_id: str | None = None) -> Gate:
        """A gate for the given job, or for the next job to reach it."""
        gate = Gate(threshold, job_id)
        with self._lock:
            self._pending.append(gate)
        return gate

    def release_all(self) -> None:
        with self._lock:
            gates, self._pending = self._pending, []
        for gate in gates:
            gate.release.set()

    def on_progress(self, sender: Flask, job: Job) -> None:
        progress = job.progress or 0.0
        with self._lock:
            for gate in self._pending:
                if gate.job_id in (None, job.id) and progress >= gate.threshold:
                    self._pending.remove(gate)
                    gate.job_id = job.id
                    break
            else:
                return
        gate.reached.set()
        assert gate.release.wait(WAIT), "the test never released the job"


@pytest.fixture
def demo_app(tmp_path: Path) -> t.Iterator[Flask]:
    app = create_app(
        {"TESTING": True, "DEMO_DATA_DIR": str(tmp_path / "data"), "DEMO_SLOWDOWN": 0}
    )
    yield app
    with app.app_context():
        assert offload.join(WAIT), "demo jobs still running after the test"
        offload.shutdown(wait=True, timeout=10)


def test_upload_watch_cancel_and_refuse_in_chromium(
    demo_app: Flask, serve: t.Any, tmp_path: Path
) -> None:
    sync_playwright = require_browser()
    server = serve(demo_app)
    gates = Gates()
    bad = tmp_path / "bad_orders.csv"
    bad.write_text("order_id,customer,quantity\nORD-1,Acme Foods,3\n")

    def row(job_id: str) -> str:
        return f'tr[data-job-id="{job_id}"]'

    with (
        job_progress.connected_to(gates.on_progress, sender=demo_app),
        sync_playwright() as p,
    ):
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a new, empty profile
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1180, "height": 600},
        )
        try:
            browser.set_default_timeout(WAIT_MS)
            demo = browser.new_page()
            dashboard = browser.new_page()

            def upload(path: str | Path) -> str:
                """Upload through the demo page; the job's id."""
                demo.set_input_files("#file", str(path))
                with demo.expect_response(
                    lambda r: r.url.endswith("/orders/import")
                ) as r:
                    demo.click("#import-form button[type=submit]")
                assert r.value.status == 202
                job_id: str = r.value.json()["id"]
                assert r.value.headers["location"] == f"/offload/jobs/{job_id}"
                return job_id

            # The page signs in the first user in the list, alice.
            demo.goto(server.url + "/")
            demo.wait_for_selector("#signed-in[data-user=alice]")

            # 1. Upload the sample; the job is held at 30% and then at 70%.
            first = gates.add(0.3)
            job_a = upload(SAMPLE_PATH)
            assert first.reached.wait(WAIT)
            assert first.job_id == job_a
            second = gates.add(0.7, job_a)
            dashboard.goto(server.url + "/offload/")
            bar = dashboard.locator(f"{row(job_a)} progress")
            assert dashboard.get_attribute(row(job_a), "data-state") == "RUNNING"
            held_at = float(bar.get_attribute("value") or "nan")
            assert 0.3 <= held_at < 0.7
            first.release.set()
            assert second.reached.wait(WAIT)
            # Updated in place by polling, without reloading the page.
            dashboard.wait_for_function(
                "([selector, low]) => document.querySelector(selector).value >= low",
                arg=[f"{row(job_a)} progress", 0.7],
            )
            assert float(bar.get_attribute("value") or "nan") > held_at
            second.release.set()
            dashboard.wait_for_selector(f'{row(job_a)}[data-state="SUCCEEDED"]')
            assert bar.get_attribute("value") == "1"
            assert (
                dashboard.text_content(f"{row(job_a)} [data-field=percent]") == "100%"
            )
            link = dashboard.locator(f"{row(job_a)} a[data-role=result-link]")
            assert link.text_content() == "export"
            href = link.get_attribute("href") or ""
            assert href.startswith("/exports/orders-summary-") and job_a in href
            assert dashboard.locator(f"{row(job_a)} [data-action=cancel]").count() == 0
            # The demo page got there too, with its own link.
            demo.wait_for_selector("#status[data-state=SUCCEEDED]")
            assert demo.get_attribute("#export-link", "href") == href

            # 2. A second import, cancelled from the dashboard while it runs.
            gate = gates.add(0.3)
            job_b = upload(SAMPLE_PATH)
            assert gate.reached.wait(WAIT)
            assert gate.job_id == job_b
            # From the keyboard: the place stays on the row, not the page's top.
            cancel = dashboard.locator(f"{row(job_b)} [data-action=cancel]")
            cancel.focus()
            with dashboard.expect_response(lambda r: r.url.endswith("/cancel")) as r:
                dashboard.keyboard.press("Enter")
            assert r.value.status == 200
            gate.release.set()
            dashboard.wait_for_selector(f'{row(job_b)}[data-state="CANCELLED"]')
            assert dashboard.locator(f"{row(job_b)} [data-action=cancel]").count() == 0
            focused = dashboard.evaluate(
                "[document.activeElement.dataset.field,"
                " document.activeElement.closest('tr')?.dataset.jobId]"
            )
            assert focused == ["state", job_b]
            assert "JobCancelled" in (
                dashboard.text_content(f"{row(job_b)} [data-field=error]") or ""
            )

            # 3. A file that is not an orders file fails, with its error shown.
            job_c = upload(bad)
            dashboard.wait_for_selector(f'{row(job_c)}[data-state="FAILED"]')
            error = dashboard.text_content(f"{row(job_c)} [data-field=error]") or ""
            assert error.startswith("InvalidOrders: The file has no 'unit_price'")

            # 4. One more, held at 60%, for the screenshot in the docs.
            gate = gates.add(0.6)
            job_d = upload(SAMPLE_PATH)
            assert gate.reached.wait(WAIT)
            assert gate.job_id == job_d
            dashboard.wait_for_function(
                "([selector, low]) => document.querySelector(selector)?.value >= low",
                arg=[f"{row(job_d)} progress", 0.6],
            )
            dashboard.wait_for_function(
                "() => document.querySelectorAll('tr[data-job-id]').length === 4"
            )
            dashboard.wait_for_selector("#offload-live[data-live=on]")
            shot = tmp_path / "dashboard.png"
            dashboard.screenshot(path=str(shot), full_page=True)
            gate.release.set()
            dashboard.wait_for_selector(f'{row(job_d)}[data-state="SUCCEEDED"]')
            states = dashboard.eval_on_selector_all(
                "tr[data-job-id]", "rows => rows.map(r => r.dataset.state)"
            )
            assert states == ["SUCCEEDED", "FAILED", "CANCELLED", "SUCCEEDED"]

            # 5. Carol may not see alice's job.
            demo.select_option("#user", label="carol (id 1003)")
            demo.wait_for_selector("#signed-in[data-user=carol]")
            refused = dashboard.goto(f"{server.url}/offload/jobs/{job_a}")
            assert refused is not None and refused.status == 403
            dashboard.goto(server.url + "/offload/")
            assert dashboard.locator("tr[data-job-id]").count() == 0
            assert dashboard.is_visible("#offload-empty")
        finally:
            gates.release_all()
            browser.close()

    with demo_app.app_context():
        assert offload.get_job(job_a).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    assert shot.stat().st_size > 10_000
    if os.environ.get("OFFLOAD_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)


def test_odd_arguments_keep_the_page_live_in_chromium(serve: t.Any) -> None:
    """A job with a NaN argument does not stop the page from updating (the
    list of jobs stays valid for JSON.parse), and arguments read the same
    before and after the page's script updates them.
    """
    sync_playwright = require_browser()
    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", OFFLOAD_DASHBOARD=True)
    offload = Offload(app)
    offload.authorize(lambda job: True)
    release = threading.Event()

    @public_args
    @offload.task
    def resample(ratio: float, customer: str = "") -> None:
        assert release.wait(WAIT)

    @app.post("/start")
    def start() -> t.Any:
        ratio = float(request.args["ratio"])
        customer = request.args.get("customer", "")
        return offload.accepted(resample.submit(ratio, customer=customer))

    def row(job_id: str) -> str:
        return f'tr[data-job-id="{job_id}"]'

    server = serve(app)
    try:
        named = server.post(
            "/start", params={"ratio": "0.5", "customer": "Smith & O'Brien <Ltd>"}
        ).json()["id"]
        # The text the server renders, before any script runs.
        page_html = server.get("/offload/").text
        match = re.search(r'data-field="args">([^<]*)</div>', page_html)
        assert match is not None
        rendered = html.unescape(match.group(1))
        assert "Smith & O'Brien <Ltd>" in rendered
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_page()
                page.set_default_timeout(WAIT_MS)
                page.goto(server.url + "/offload/")
                page.wait_for_selector("#offload-live[data-live=on]")
                args = page.text_content(f"{row(named)} [data-field=args]")
                assert args == rendered
                odd = server.post("/start", params={"ratio": "nan"}).json()["id"]
                # Added by polling: only if the list parses.
                page.wait_for_selector(row(odd))
                assert page.text_content(f"{row(odd)} [data-field=args]") == (
                    '{"args":["nan"],"kwargs":{"customer":""}}'
                )
                release.set()
                for job_id in (named, odd):
                    page.wait_for_selector(f'{row(job_id)}[data-state="SUCCEEDED"]')
                assert page.get_attribute("#offload-live", "data-live") == "on"
            finally:
                browser.close()
    finally:
        release.set()
        with app.app_context():
            assert offload.join(WAIT)
            offload.shutdown()


def test_missing_chromium_skips_locally_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", str(tmp_path / "none"))
    monkeypatch.delenv("OFFLOAD_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Chromium is not installed"):
        require_browser()
    monkeypatch.setenv("OFFLOAD_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="OFFLOAD_REQUIRE_SERVICES=1"):
        require_browser()
