"""The job status URLs and the dashboard (``OFFLOAD_DASHBOARD``), on a real
server: each endpoint, authorization, CSRF refusals, ``offload.accepted``,
and that no header, cookie or token value ever appears in a response.
"""

from __future__ import annotations

import json
import re
import threading
import time
import typing as t
from datetime import datetime
from html.parser import HTMLParser

import pytest
import requests
from flask import abort
from flask import Flask
from flask import request
from flask import session
from flask import url_for
from itsdangerous import TimestampSigner
from itsdangerous import URLSafeTimedSerializer

from flask_offload import current_job
from flask_offload import Job
from flask_offload import JobState
from flask_offload import Offload
from flask_offload.dashboard import CSRF_MAX_AGE
from flask_offload.dashboard import CSRF_SALT
from flask_offload.dashboard import public_result

WAIT = 10  # seconds any single job or event may take, at most


@pytest.fixture
def app(app: Flask) -> Flask:
    app.config["OFFLOAD_DASHBOARD"] = True
    return app


class Jobs:
    """Functions the test app's ``/submit/<kind>`` view runs as jobs, and the
    events that hold them.
    """

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.funcs: dict[str, t.Callable[..., t.Any]] = {}


@pytest.fixture
def jobs(app: Flask, offload: Offload) -> t.Iterator[Jobs]:
    """An app where ``POST /login/<name>`` signs in (Flask-Login's session
    key) and ``POST /submit/<kind>`` submits a job as that user; the
    authorize callback lets users see their own jobs.
    """
    j = Jobs()

    def held() -> str:
        current_job.set_progress(0.25, "a quarter done")
        j.started.set()
        assert j.release.wait(WAIT)
        return "the held job's result"

    def quick(value: t.Any = None) -> t.Any:
        return value

    def failing() -> None:
        raise LookupError("No such order: 42.")

    j.funcs.update(held=held, quick=quick, failing=failing)

    @app.post("/login/<name>")
    def login(name: str) -> str:
        session["_user_id"] = name  # where Flask-Login keeps it
        return name

    @app.post("/submit/<kind>")
    def submit(kind: str) -> dict[str, t.Any]:
        args = request.get_json(silent=True) or []
        job = offload.submit(j.funcs[kind], *args)
        return {"id": job.id}

    @offload.authorize
    def may_see(job: Job) -> bool:
        return job.user_id is not None and job.user_id == session.get("_user_id")

    yield j
    j.release.set()


def login(server: t.Any, name: str) -> None:
    assert server.post(f"/login/{name}").status_code == 200


def submit(server: t.Any, kind: str, *args: t.Any) -> str:
    response = server.post(f"/submit/{kind}", json=list(args))
    assert response.status_code == 200, response.text
    job_id: str = response.json()["id"]
    return job_id


def wait_done(app: Flask, offload: Offload, job_id: str) -> Job:
    with app.app_context():
        job = offload.get_job(job_id)
    assert job is not None and job.wait(WAIT)
    return job


def run_failing(
    app: Flask,
    offload: Offload,
    serve: t.Any,
    jobs: Jobs,
    func: t.Callable[[], None],
) -> tuple[t.Any, str]:
    """Submit ``func`` as ann's job through a real server and wait for it to
    fail; return the server and the job's id.
    """
    jobs.funcs[func.__name__] = func
    server = serve(app)
    login(server, "ann")
    job_id = submit(server, func.__name__)
    wait_done(app, offload, job_id)
    return server, job_id


def csrf_from_page(server: t.Any) -> str:
    page = server.get("/offload/")
    assert page.status_code == 200
    match = re.search(r'<meta name="offload-csrf-token" content="([^"]+)">', page.text)
    assert match is not None
    return match.group(1)


class Rows(HTMLParser):
    """The job rows of the dashboard page, by their stable markup hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, t.Any]] = {}
        self._row: dict[str, t.Any] | None = None
        self._field: str | None = None
        self._in_template = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "template":
            self._in_template = True
        if tag == "tr" and "data-job-id" in a and not self._in_template:
            self._row = {"state": a["data-state"], "text": {}, "cancel": False}
            self.rows[str(a["data-job-id"])] = self._row
        if self._row is None:
            return
        if tag == "progress":
            self._row["progress"] = a.get("value")
        if tag == "button" and a.get("data-action") == "cancel":
            self._row["cancel"] = True
        if tag == "a" and a.get("data-role") == "result-link":
            self._row.setdefault("links", []).append(a["href"])
        self._field = a.get("data-field")

    def handle_endtag(self, tag: str) -> None:
        if tag == "template":
            self._in_template = False
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._field and data.strip():
            self._row["text"][self._field] = data.strip()


def parse_rows(html: str) -> dict[str, dict[str, t.Any]]:
    parser = Rows()
    parser.feed(html)
    return parser.rows


# -- GET /jobs/<id> ----------------------------------------------------------


def test_status_of_a_running_then_finished_job(
    app: Flask, offload: Offload, serve: t.Any, jobs: Jobs
) -> None:
    server = serve(app)
    login(server, "ann")
    job_id = submit(server, "held")
    assert jobs.started.wait(WAIT)

    response = server.get(f"/offload/jobs/{job_id}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    status = response.json()
    assert status["id"] == job_id
    assert status["name"].endswith("held")
    assert status["state"] == "RUNNING"
    assert status["progress"] == 0.25
    assert status["message"] == "a quarter done"
    assert status["error"] is None
    assert status["cancellable"] is True and status["cancel_requested"] is False
    assert status["url"] == f"/offload/jobs/{job_id}"
    assert status["cancel_url"] == f"/offload/jobs/{job_id}/cancel"
    submitted = datetime.fromisoformat(status["submitted_at"])
    started = datetime.fromisoformat(status["started_at"])
    assert submitted.utcoffset() is not None and submitted <= started
    assert status["finished_at"] is None
    assert status["duration"] >= 0
    assert status["submitted_from"].endswith("in submit")
    assert "result" not in status

    jobs.release.set()
    wait_done(app, offload, job_id)
    response = server.get(f"/offload/jobs/{job_id}")
    status = response.json()
    assert status["state"] == "SUCCEEDED"
    assert status["cancellable"] is False
    finished = datetime.fromisoformat(status["finished_at"])
    assert status["duration"] == pytest.approx(
        (finished - started).total_seconds(), abs=1e-5
    )
    # The task did not make its result public.
    assert "result" not in status and "held job's result" not in response.text


def test_failed_job_shows_error_type_and_message(
    app: Flask, offload: Offload, serve: t.Any, jobs: Jobs
) -> None:
    server = serve(app)
    login(server, "ann")
    job_id = submit(server, "failing")
    wait_done(app, offload, job_id)
    status = server.get(f"/offload/jobs/{job_id}").json()
    assert status["state"] == "FAILED"
    assert status["error"] == {"type": "LookupError", "message": "No such order: 42."}
    rows = parse_rows(server.get("/offload/").text)
    assert rows[job_id]["state"] == "FAILED"
    assert rows[job_id]["text"]["error"] == "LookupError: No such order: 42."
    assert rows[job_id]["cancel"] is False


def test_unknown_job_is_404(app: Flask, serve: t.Any, jobs: Jobs) -> None:
    server = serve(app)
    login(server, "ann")
    response = server.get("/offload/jobs/0123456789abcdef0123456789abcdef")
    assert response.status_code == 404
    assert response.json()["error"] == "Not Found"
    assert "There is no job" in response.json()["message"]
    # A browser gets Flask's HTML error page.
    html = server.get("/offload/jobs/nope", headers={"Accept": "text/html"})
    assert html.status_code == 404 and html.headers["Content-Type"].startswith(
        "text/html"
    )


# -- public results -------------------------------------------------------------


def test_results_are_shown_only_for_public_tasks(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    @public_result
    @offload.task
    def above() -> dict[str, t.Any]:
        return {
            "rows": 3,
            "ratio": 0.5,
            "export_url": "/exports/a.csv",
            "report_url": "https://example.com/r",
            "url": "/plain",
            "evil_url": "javascript:alert(1)",
            "other_url": "//evil.example/x",
            "note_url": 5,
        }

    @offload.task
    @public_result
    def below() -> list[int]:
        return [1, 2, 3]

    @public_result
    def plain() -> str:
        return "plain result"

    @public_result
    def not_json() -> object:
        return {1, 2}

    @public_result
    def huge() -> str:
        return "x" * 100_000

    @offload.task
    def private() -> str:
        return "secret result"

    names: dict[str, str] = {}

    @app.post("/run")
    def run() -> dict[str, str]:
        for f in (above, below, plain, not_json, huge, private):
            job = offload.submit(f)
            names[f.__name__] = job.id
        return names

    offload.authorize(lambda job: True)
    server = serve(app)
    server.post("/run")
    with app.app_context():
        assert offload.join(WAIT)
    status = {n: server.get(f"/offload/jobs/{i}").json() for n, i in names.items()}
    assert all(s["state"] == "SUCCEEDED" for s in status.values())
    assert status["above"]["result"]["rows"] == 3
    assert status["above"]["result_links"] == [
        {"label": "export", "url": "/exports/a.csv"},
        {"label": "report", "url": "https://example.com/r"},
        {"label": "result", "url": "/plain"},
    ]
    assert status["below"]["result"] == [1, 2, 3]
    assert status["plain"]["result"] == "plain result"
    for hidden in ("not_json", "huge", "private"):
        assert "result" not in status[hidden], hidden

    page = server.get("/offload/")
    rows = parse_rows(page.text)
    above_row = rows[names["above"]]
    assert above_row["links"] == ["/exports/a.csv", "https://example.com/r", "/plain"]
    assert above_row["text"]["summary"] == "rows: 3 · ratio: 0.5"
    assert rows[names["below"]]["text"]["summary"] == "3 items"
    assert 'href="javascript:' not in page.text
    assert 'href="//evil' not in page.text
    assert "secret result" not in page.text


# -- GET /jobs and the page -----------------------------------------------------


def test_list_filters_and_paginates(
    app: Flask, offload: Offload, serve: t.Any, jobs: Jobs
) -> None:
    server = serve(app)
    login(server, "ann")
    failed = [submit(server, "failing") for _ in range(2)]
    done = [submit(server, "quick", n) for n in range(5)]
    for job_id in failed + done:
        wait_done(app, offload, job_id)
    running = submit(server, "held")
    assert jobs.started.wait(WAIT)
    newest_first = [running, *reversed(done), *reversed(failed)]

    listing = server.get("/offload/jobs").json()
    assert [j["id"] for j in listing["jobs"]] == newest_first
    assert listing["total"] == 8 and listing["pages"] == 1
    assert listing["counts"] == {
        "PENDING": 0,
        "RUNNING": 1,
        "SUCCEEDED": 5,
        "FAILED": 2,
        "CANCELLED": 0,
    }
    assert listing["next"] is None and listing["prev"] is None

    page1 = server.get("/offload/jobs", params={"per_page": 3}).json()
    assert [j["id"] for j in page1["jobs"]] == newest_first[:3]
    assert page1["pages"] == 3 and page1["prev"] is None
    page2 = server.get(page1["next"]).json()
    assert [j["id"] for j in page2["jobs"]] == newest_first[3:6]
    assert page2["prev"] == "/offload/jobs?page=1&per_page=3"
    page3 = server.get(page2["next"]).json()
    assert [j["id"] for j in page3["jobs"]] == newest_first[6:]
    assert page3["next"] is None
    past = server.get("/offload/jobs?page=9&per_page=3").json()
    assert past["jobs"] == []
    # Past the last page (its jobs expired meanwhile): a way back.
    assert past["prev"] == "/offload/jobs?page=3&per_page=3"
    past_page = server.get("/offload/?page=9&per_page=3").text
    assert 'href="/offload/?page=3&amp;per_page=3">Newer' in past_page

    succeeded = server.get("/offload/jobs", params={"state": "succeeded"}).json()
    assert [j["id"] for j in succeeded["jobs"]] == list(reversed(done))
    assert succeeded["state"] == "SUCCEEDED" and succeeded["total"] == 5
    filtered = server.get("/offload/jobs?state=FAILED&per_page=1").json()
    assert filtered["next"] == "/offload/jobs?page=2&per_page=1&state=FAILED"

    for bad in ("state=DONE", "page=0", "page=x", "per_page=0", "per_page=1000"):
        response = server.get(f"/offload/jobs?{bad}")
        assert response.status_code == 400, bad
        assert response.json()["message"].startswith("'"), bad

    # The page: one row per job with the stable hooks; cancel only while
    # a job may still be cancelled.
    page = server.get("/offload/")
    assert page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    rows = parse_rows(page.text)
    assert list(rows) == newest_first
    assert rows[running]["state"] == "RUNNING"
    assert rows[running]["progress"] == "0.25"
    assert rows[running]["text"]["percent"] == "25%"
    assert rows[running]["text"]["message"] == "a quarter done"
    assert rows[running]["cancel"] is True
    assert all(rows[i]["state"] == "SUCCEEDED" for i in done)
    assert all(rows[i]["progress"] == "1.0" for i in done)
    assert not any(rows[i]["cancel"] for i in done + failed)
    assert 'data-count="SUCCEEDED">5<' in page.text
    filtered_page = parse_rows(server.get("/offload/?state=FAILED").text)
    assert list(filtered_page) == list(reversed(failed))
    paged = server.get("/offload/?per_page=3&page=2").text
    assert list(parse_rows(paged)) == newest_first[3:6]
    assert "Page 2 of 3" in paged

    # What the page loads is served by the blueprint.
    for path, kind in (
        ("/offload/offload-static/dashboard.js", "javascript"),
        ("/offload/offload-static/dashboard.css", "text/css"),
    ):
        asset = server.get(path)
        assert asset.status_code == 200 and kind in asset.headers["Content-Type"]
        assert path in page.text
    # Nothing from another host (no CDN).
    assert not re.search(r'(src|href)="(https?:)?//', page.text)
    jobs.release.set()


def test_messages_are_escaped(app: Flask, offload: Offload, serve: t.Any) -> None:
    def shouty() -> None:
        current_job.set_progress(0.5, '<img src=x onerror="alert(1)">')
        raise ValueError("<script>alert(2)</script>")

    @app.post("/run")
    def run() -> str:
        return offload.submit(shouty).id

    offload.authorize(lambda job: True)
    server = serve(app)
    job_id = server.post("/run").text
    wait_done(app, offload, job_id)
    page = server.get("/offload/").text
    assert "<img src=x" not in page and "<script>alert" not in page
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page
    assert "ValueError: &lt;script&gt;alert(2)&lt;/script&gt;" in page


# -- authorization ----------------------------------------------------------------


def test_no_authorize_callback_refuses_everything(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    @app.post("/run")
    def run() -> str:
        return offload.submit(lambda: None).id

    server = serve(app)
    job_id = server.post("/run").text
    wait_done(app, offload, job_id)
    # The same answer, saying what to do, whether the job exists or not and
    # before the CSRF token is looked at.
    for response in (
        server.get("/offload/"),
        server.get("/offload/jobs"),
        server.get(f"/offload/jobs/{job_id}"),
        server.get("/offload/jobs/0123456789abcdef0123456789abcdef"),
        server.post(f"/offload/jobs/{job_id}/cancel"),
        server.post("/offload/jobs/unknown/cancel", headers={"X-CSRF-Token": "x"}),
    ):
        assert response.status_code == 403, response.url
        if response.headers["Content-Type"] == "application/json":
            assert "'@offload.authorize' callback" in response.json()["message"]
        else:
            assert "@offload.authorize" in response.text
    # The page's script and style sheet are not job data.
    assert server.get("/offload/offload-static/dashboard.js").status_code == 200


def test_users_see_and_cancel_only_their_own_jobs(
    app: Flask, offload: Offload, serve: t.Any, jobs: Jobs
) -> None:
    ann, bob = serve(app), serve(app)
    login(ann, "ann")
    login(bob, "bob")
    ann_job = submit(ann, "held")
    assert jobs.started.wait(WAIT)
    bob_job = submit(bob, "quick")
    wait_done(app, offload, bob_job)

    assert ann.get(f"/offload/jobs/{ann_job}").status_code == 200
    refused = bob.get(f"/offload/jobs/{ann_job}")
    assert refused.status_code == 403
    assert refused.json()["message"] == "You may not see this job."
    assert "a quarter done" not in refused.text
    assert [j["id"] for j in ann.get("/offload/jobs").json()["jobs"]] == [ann_job]
    assert [j["id"] for j in bob.get("/offload/jobs").json()["jobs"]] == [bob_job]
    assert bob.get("/offload/jobs").json()["counts"]["RUNNING"] == 0
    assert list(parse_rows(bob.get("/offload/").text)) == [bob_job]
    assert ann_job not in bob.get("/offload/").text

    # With a valid token of his own, bob still may not cancel ann's job.
    token = csrf_from_page(bob)
    cancel = bob.post(
        f"/offload/jobs/{ann_job}/cancel", headers={"X-CSRF-Token": token}
    )
    assert cancel.status_code == 403
    with app.app_context():
        assert offload.get_job(ann_job).cancel_requested is False  # type: ignore[union-attr]

    # Anonymous: nothing.
    anonymous = requests.get(f"{ann.url}/offload/jobs/{ann_job}", timeout=WAIT)
    assert anonymous.status_code == 403
    assert requests.get(f"{ann.url}/offload/jobs", timeout=WAIT).json()["jobs"] == []
    jobs.release.set()


# -- cancelling and CSRF ----------------------------------------------------------


def test_cancel_needs_a_valid_csrf_token(
    app: Flask, offload: Offload, serve: t.Any, jobs: Jobs
) -> None:
    server = serve(app)
    login(server, "ann")
    job_id = submit(server, "held")
    assert jobs.started.wait(WAIT)
    url = f"/offload/jobs/{job_id}/cancel"
    token = csrf_from_page(server)

    missing = server.post(url)
    assert missing.status_code == 400
    assert "X-CSRF-Token" in missing.json()["message"]
    assert server.post(url, data={"csrf_token": ""}).status_code == 400

    def refused(token: str) -> str:
        response = server.post(url, headers={"X-CSRF-Token": token})
        assert response.status_code == 403, token
        message: str = response.json()["message"]
        return message

    assert "not valid" in refused("nonsense")
    assert "not valid" in refused(token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    # Signed with the app's key but another salt: not a CSRF token.
    other_salt = URLSafeTimedSerializer(t.cast(str, app.secret_key), salt="other")
    assert "not valid" in refused(other_salt.dumps("x"))
    # Signed with another key.
    other_key = URLSafeTimedSerializer("another key", salt=CSRF_SALT)
    assert "not valid" in refused(other_key.dumps("x"))
    # A real token, but for another session.
    other = serve(app)
    login(other, "ann")
    assert "another session" in refused(csrf_from_page(other))

    # An expired one.
    class Old(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - CSRF_MAX_AGE - 60

    key = t.cast(str, app.secret_key)
    nonce = URLSafeTimedSerializer(key, salt=CSRF_SALT).loads(token)
    expired = URLSafeTimedSerializer(key, salt=CSRF_SALT, signer=Old).dumps(nonce)
    assert "expired" in refused(expired)

    with app.app_context():
        job = offload.get_job(job_id)
    assert job is not None and job.cancel_requested is False

    # The page's token works, from a header: a running job is asked to stop.
    accepted = server.post(url, headers={"X-CSRF-Token": token})
    assert accepted.status_code == 200
    assert accepted.json()["cancel_requested"] is True
    assert accepted.json()["state"] == "RUNNING"
    assert job.cancel_requested is True
    rows = parse_rows(server.get("/offload/").text)
    assert rows[job_id]["cancel"] is True
    assert "disabled>Cancelling</button>" in server.get("/offload/").text
    jobs.release.set()
    assert job.wait(WAIT)
    # Finished jobs have nothing left to cancel.
    late = server.post(url, headers={"X-CSRF-Token": token})
    assert late.status_code == 409
    assert late.json()["state"] == "SUCCEEDED"


def test_cancel_a_pending_job_from_a_form(app: Flask, serve: t.Any) -> None:
    app.config["OFFLOAD_MAX_WORKERS"] = 1
    offload = Offload(app)
    release = threading.Event()
    started = threading.Event()
    ran: list[str] = []

    def blocker() -> None:
        started.set()
        assert release.wait(WAIT)

    def never() -> None:
        ran.append("never")

    @app.post("/run")
    def run() -> dict[str, str]:
        return {"a": offload.submit(blocker).id, "b": offload.submit(never).id}

    offload.authorize(lambda job: True)
    server = serve(app)
    try:
        ids = server.post("/run").json()
        assert started.wait(WAIT)
        token = csrf_from_page(server)
        listing = server.get("/offload/jobs?state=PENDING").json()
        assert [j["id"] for j in listing["jobs"]] == [ids["b"]]
        # A form post without JavaScript: back to the dashboard.
        response = server.post(
            f"/offload/jobs/{ids['b']}/cancel",
            data={"csrf_token": token},
            headers={"Accept": "text/html"},
            allow_redirects=False,
        )
        assert response.status_code == 303
        assert response.headers["Location"] == "/offload/"
        status = server.get(f"/offload/jobs/{ids['b']}").json()
        assert status["state"] == "CANCELLED" and status["cancellable"] is False
        # The same from JavaScript (JSON): cancelling it again is a no-op.
        again = server.post(
            f"/offload/jobs/{ids['b']}/cancel", headers={"X-CSRF-Token": token}
        )
        assert again.status_code == 200 and again.json()["state"] == "CANCELLED"
    finally:
        release.set()
        with app.app_context():
            assert offload.join(WAIT)
            offload.shutdown()
    assert ran == []


def test_csrf_token_needs_a_secret_key(app: Flask, offload: Offload) -> None:
    app.secret_key = None
    offload.authorize(lambda job: True)
    client = app.test_client()
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        client.get("/offload/jobs")


# -- nothing secret -----------------------------------------------------------------

SECRETS = {
    "header": "Bearer hdr-7f3a91c2e5d84b06",
    "cookie": "cookie-51d0e8b7a3f24c69",
    "token": "tok-c8e1f6a2b9d74035",
    "argument": "arg-2b7d9e4f1a6c8350",
    "session": "sess-9a4c2e7b5f1d3086",
}


def test_no_header_cookie_or_token_value_in_any_response(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    """Jobs submitted with credentials in every place a request can carry
    them; every dashboard and status response, read with the same
    credentials, contains none of the values.
    """
    release = threading.Event()

    def handle(order: str, token: str) -> None:
        current_job.set_progress(0.5, "working")
        assert release.wait(WAIT)
        assert request.headers["Authorization"] == SECRETS["header"]

    def failing(order: str, token: str) -> None:
        raise ValueError("Order could not be handled.")

    @public_result
    def public(order: str) -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/run")
    def run() -> dict[str, str]:
        session["_user_id"] = "ann"
        session["api_key"] = SECRETS["session"]
        token = request.args["token"]
        return {
            "held": offload.submit(handle, SECRETS["argument"], token).id,
            "failed": offload.submit(failing, SECRETS["argument"], token).id,
            "public": offload.submit(public, SECRETS["argument"]).id,
        }

    offload.authorize(lambda job: job.user_id == session.get("_user_id"))
    server = serve(app)
    creds: dict[str, t.Any] = {
        "headers": {
            "Authorization": SECRETS["header"],
            "X-Api-Token": SECRETS["token"],
        },
        "cookies": {"remember_token": SECRETS["cookie"]},
    }
    responses: list[requests.Response] = []
    ids = server.post(
        "/run",
        params={"token": SECRETS["token"]},
        data={"pw": SECRETS["token"]},
        **creds,
    ).json()
    with app.app_context():
        for key in ("failed", "public"):
            assert offload.get_job(ids[key]).wait(WAIT)  # type: ignore[union-attr]
    query = {"token": SECRETS["token"]}
    for path in (
        "/offload/",
        "/offload/?state=RUNNING",
        "/offload/jobs",
        "/offload/jobs?state=FAILED",
        *(f"/offload/jobs/{i}" for i in ids.values()),
        "/offload/jobs/unknown",
        "/offload/offload-static/dashboard.js",
    ):
        responses.append(server.get(path, params=query, **creds))
    token = csrf_from_page(server)
    responses.append(server.post(f"/offload/jobs/{ids['held']}/cancel", **creds))
    creds["headers"]["X-CSRF-Token"] = token
    responses.append(server.post(f"/offload/jobs/{ids['held']}/cancel", **creds))
    creds["headers"]["X-CSRF-Token"] = "forged"
    responses.append(server.post(f"/offload/jobs/{ids['held']}/cancel", **creds))
    release.set()

    codes = [r.status_code for r in responses]
    assert codes.count(200) == len(codes) - 3 and sorted(codes)[-3:] == [400, 403, 404]
    running = next(
        r
        for r in responses
        if r.url.endswith(f"{ids['held']}?token={SECRETS['token']}")
    )
    assert running.json()["message"] == "working"
    for response in responses:
        seen = response.text + "\n".join(
            f"{k}: {v}" for k, v in response.headers.items()
        )
        for place, value in SECRETS.items():
            bare = value.removeprefix("Bearer ")
            assert bare not in seen, (
                f"{place} value in {response.request.method} {response.url}"
            )


# -- offload.accepted ------------------------------------------------------------


def test_accepted_answers_202_with_the_status_url(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    @app.post("/export")
    def export() -> t.Any:
        return offload.accepted(offload.submit(lambda: None))

    offload.authorize(lambda job: True)
    server = serve(app)
    response = server.post("/export")
    assert response.status_code == 202
    body = response.json()
    assert response.headers["Location"] == f"/offload/jobs/{body['id']}"
    assert body["status_url"] == response.headers["Location"]
    assert body["state"] in ("PENDING", "RUNNING", "SUCCEEDED")
    wait_done(app, offload, body["id"])
    status = server.get(response.headers["Location"])
    assert status.status_code == 200 and status.json()["state"] == "SUCCEEDED"
    with app.test_request_context():
        assert url_for("offload.job_status", job_id="x") == "/offload/jobs/x"


def test_accepted_follows_the_url_prefix(serve: t.Any) -> None:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="k", OFFLOAD_DASHBOARD=True, OFFLOAD_URL_PREFIX="/admin/jobs"
    )
    offload = Offload(app)
    offload.authorize(lambda job: True)

    @app.post("/go")
    def go() -> t.Any:
        return offload.accepted(offload.submit(lambda: 7))

    server = serve(app)
    try:
        response = server.post("/go")
        location = response.headers["Location"]
        assert location == f"/admin/jobs/jobs/{response.json()['id']}"
        wait_done(app, offload, response.json()["id"])
        assert server.get(location).json()["state"] == "SUCCEEDED"
        assert server.get("/admin/jobs/").status_code == 200
        assert server.get("/offload/").status_code == 404
    finally:
        with app.app_context():
            offload.shutdown()


def test_accepted_without_dashboard_says_how_to_enable_it() -> None:
    app = Flask(__name__)
    offload = Offload(app)
    with app.test_request_context():
        job = offload.submit(lambda: None)
        with pytest.raises(RuntimeError, match="OFFLOAD_DASHBOARD = True"):
            offload.accepted(job)
    assert job.wait(WAIT)
    with app.app_context():
        offload.shutdown()
    assert job.state is JobState.SUCCEEDED


def test_accepted_outside_a_request_names_the_real_cause() -> None:
    """With the status URLs registered, a URL that cannot be built (no
    request, no SERVER_NAME) is explained by Flask, not blamed on the
    dashboard setting.
    """
    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", OFFLOAD_DASHBOARD=True)
    offload = Offload(app)
    with app.app_context():
        job = offload.submit(lambda: None)
        with pytest.raises(RuntimeError, match="SERVER_NAME") as info:
            offload.accepted(job)
        assert "OFFLOAD_DASHBOARD" not in str(info.value)
        assert job.wait(WAIT)
        offload.shutdown()


def test_arguments_shown_only_for_tasks_that_opt_in(app: Flask, serve: t.Any) -> None:
    from flask_offload.dashboard import public_args

    app.config["OFFLOAD_DASHBOARD"] = True
    offload = Offload(app)
    offload.authorize(lambda job: True)

    @public_args
    @offload.task
    def export(month: str, *, fmt: str, client: object = None) -> None:
        return None

    @offload.task
    def secret(token: str) -> None:
        return None

    @app.post("/go")
    def go() -> dict[str, str]:
        shown = export.submit("2025-01", fmt="csv", client=object())
        hidden = secret.submit("s3cr3t-token-value")
        return {"shown": shown.id, "hidden": hidden.id}

    server = serve(app)
    ids = server.post("/go").json()
    with app.app_context():
        assert offload.join(10)
    shown = server.get(f"/offload/jobs/{ids['shown']}").json()
    assert shown["args"]["args"] == ["2025-01"]
    assert shown["args"]["kwargs"]["fmt"] == "csv"
    assert shown["args"]["kwargs"]["client"].startswith("<object object at")
    hidden = server.get(f"/offload/jobs/{ids['hidden']}").json()
    assert "args" not in hidden
    page = server.get("/offload/").text
    assert "2025-01" in page
    for response in (server.get("/offload/"), server.get("/offload/jobs")):
        assert "s3cr3t-token-value" not in response.text
    with app.app_context():
        offload.shutdown()


def strict_json(text: str) -> t.Any:
    """Parse as a browser's ``JSON.parse`` does: ``NaN`` is not JSON."""

    def refuse(constant: str) -> t.NoReturn:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def new_app(**config: t.Any) -> tuple[Flask, Offload]:
    """An app with the dashboard, whose authorize callback allows all."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", OFFLOAD_DASHBOARD=True, **config)
    offload = Offload(app)
    offload.authorize(lambda job: True)
    return app, offload


def test_public_result_follows_the_function_not_its_name(serve: t.Any) -> None:
    """Other functions with the same name, closures from the same factory
    or a task of another app, keep their results hidden.
    """

    def make(kind: str) -> t.Callable[[], dict[str, str]]:
        def run() -> dict[str, str]:
            return {"value": f"{kind} data"}

        return run

    export_stats = public_result(make("public stats"))
    load_api_key = make("API-KEY-123")
    app_a, offload_a = new_app()
    app_b, offload_b = new_app()

    @public_result
    @offload_a.task(name="report")
    def public_report() -> str:
        return "public numbers"

    @offload_b.task(name="report")
    def payroll_report() -> str:
        return "SALARY TABLE"

    @app_a.post("/run")
    def run_a() -> dict[str, str]:
        return {
            "stats": offload_a.submit(export_stats).id,
            "key": offload_a.submit(load_api_key).id,
            "report": public_report.submit().id,
        }

    @app_b.post("/run")
    def run_b() -> dict[str, str]:
        return {"payroll": payroll_report.submit().id}

    server_a, server_b = serve(app_a), serve(app_b)
    try:
        ids_a = server_a.post("/run").json()
        ids_b = server_b.post("/run").json()
        for app, offload in ((app_a, offload_a), (app_b, offload_b)):
            with app.app_context():
                assert offload.join(WAIT)
        status = {
            k: server_a.get(f"/offload/jobs/{i}").json() for k, i in ids_a.items()
        }
        payroll = server_b.get(f"/offload/jobs/{ids_b['payroll']}").json()
        assert status["stats"]["name"] == status["key"]["name"]
        assert status["stats"]["result"] == {"value": "public stats data"}
        assert "result" not in status["key"]
        assert status["report"]["result"] == "public numbers"
        assert payroll["name"] == "report" and payroll["state"] == "SUCCEEDED"
        assert "result" not in payroll
        for server in (server_a, server_b):
            for path in ("/offload/", "/offload/jobs"):
                text = server.get(path).text
                assert "API-KEY-123" not in text and "SALARY TABLE" not in text
    finally:
        for app, offload in ((app_a, offload_a), (app_b, offload_b)):
            with app.app_context():
                offload.shutdown()


def test_public_result_of_a_celery_job_from_another_process(
    tmp_path: t.Any, serve: t.Any
) -> None:
    """A Celery job read from the result backend is known by its task's name
    only: its result is shown where the Offload instance serving the URL
    declares that task public, and nowhere else.
    """
    pytest.importorskip("flask_offload.backends.celery")
    from .celery_support.procs import broker_config

    celery_config = broker_config("redis", str(tmp_path))

    def celery_app(public: bool) -> tuple[Flask, Offload, t.Any]:
        app, offload = new_app(OFFLOAD_BACKEND="celery", OFFLOAD_CELERY=celery_config)

        def report() -> str:
            return "public numbers"

        task = offload.task(name="tests.dashboard.report")(report)
        return app, offload, public_result(task) if public else task

    sender, sender_offload, report = celery_app(public=False)
    public, public_offload, _ = celery_app(public=True)
    private, private_offload, _ = celery_app(public=False)
    apps = (
        (sender, sender_offload),
        (public, public_offload),
        (private, private_offload),
    )
    try:
        with sender.test_request_context():
            job = report.submit()
            # As a worker would, with no worker: the job is done.
            sender_offload.celery.backend.store_result(
                job.id, "public numbers", "SUCCESS"
            )
            sender_offload.celery.control.purge()
        seen = serve(public).get(f"/offload/jobs/{job.id}").json()
        assert seen["state"] == "SUCCEEDED" and seen["result"] == "public numbers"
        hidden = serve(private).get(f"/offload/jobs/{job.id}").json()
        assert hidden["state"] == "SUCCEEDED" and "result" not in hidden
    finally:
        for app, offload in apps:
            with app.app_context():
                offload.shutdown()


def summarize_app(app: Flask, offload: Offload) -> t.Any:
    """A task with public arguments, submitted with the arguments of each
    call in ``POST /run``'s list.
    """
    from flask_offload.dashboard import public_args

    @public_args
    @offload.task
    def summarize(*values: t.Any) -> None:
        return None

    offload.authorize(lambda job: True)
    return summarize


def test_non_finite_arguments_keep_the_list_valid_json(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    """NaN and infinities are shown by their repr: the list of jobs stays
    valid JSON, which the page parses with JSON.parse.
    """
    summarize = summarize_app(app, offload)

    @app.post("/run")
    def run() -> str:
        return summarize.submit(float("nan"), [float("-inf")], x=float("inf")).id

    server = serve(app)
    job_id = server.post("/run").text
    wait_done(app, offload, job_id)
    for path in ("/offload/jobs", f"/offload/jobs/{job_id}"):
        response = server.get(path)
        assert response.status_code == 200
        data = strict_json(response.text)
        status = data["jobs"][0] if "jobs" in data else data
        assert status["args"] == {"args": ["nan", ["-inf"]], "kwargs": {"x": "inf"}}
    assert "NaN" not in server.get("/offload/").text


def test_arguments_json_cannot_hold_never_fail_the_submit(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    """Keys that are not strings and a list holding itself are shown by
    their repr; showing arguments never makes the submit fail.
    """
    summarize = summarize_app(app, offload)
    cycle: list[t.Any] = []
    cycle.append(cycle)

    @app.post("/run")
    def run() -> dict[str, str]:
        return {
            "keys": summarize.submit({(2025, 1): 10, 3: "three", None: b"x"}).id,
            "cycle": summarize.submit(cycle, {"self": cycle}).id,
        }

    server = serve(app)
    response = server.post("/run")
    assert response.status_code == 200, response.text
    ids = response.json()
    with app.app_context():
        assert offload.join(WAIT)
    jobs = {job["id"]: job for job in server.get("/offload/jobs").json()["jobs"]}
    assert jobs[ids["keys"]]["state"] == "SUCCEEDED"
    assert jobs[ids["keys"]]["args"]["args"] == [
        {"(2025, 1)": 10, "3": "three", "null": "b'x'"}
    ]
    assert jobs[ids["cycle"]]["state"] == "SUCCEEDED"
    assert jobs[ids["cycle"]]["args"]["args"] == [["[...]"], {"self": ["[...]"]}]


def test_arguments_are_shown_as_the_script_shows_them(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    """The page's first render shows the text its script then keeps showing
    (``JSON.stringify``), not HTML-safe JSON escapes such as ``\\u0026``.
    """
    from flask_offload.dashboard import public_args

    @public_args
    @offload.task
    def export(customer: str, amount: float, rate: float) -> None:
        return None

    offload.authorize(lambda job: True)

    @app.post("/run")
    def run() -> str:
        return export.submit("Smith & O'Brien <Ltd> · Zürich", 3.0, rate=0.25).id

    server = serve(app)
    job_id = server.post("/run").text
    wait_done(app, offload, job_id)
    row = parse_rows(server.get("/offload/").text)[job_id]
    assert row["text"]["args"] == (
        '{"args":["Smith & O\'Brien <Ltd> · Zürich",3],"kwargs":{"rate":0.25}}'
    )


def test_dashboard_at_the_site_root(serve: t.Any) -> None:
    """With OFFLOAD_URL_PREFIX "/" the page's script and style sheet are
    still the blueprint's, next to the app's own /static.
    """
    app, offload = new_app(OFFLOAD_URL_PREFIX="/")

    @app.post("/go")
    def go() -> t.Any:
        return offload.accepted(offload.submit(lambda: 7))

    server = serve(app)
    try:
        response = server.post("/go")
        job_id = response.json()["id"]
        assert response.headers["Location"] == f"/jobs/{job_id}"
        wait_done(app, offload, job_id)
        assert server.get(f"/jobs/{job_id}").json()["state"] == "SUCCEEDED"
        page = server.get("/")
        assert page.status_code == 200 and job_id in page.text
        assets = re.findall(r'<(?:script|link)[^>]* (?:src|href)="([^"]+)"', page.text)
        assert len(assets) == 2
        for path in assets:
            asset = server.get(path)
            assert asset.status_code == 200, path
            assert asset.headers["Content-Type"].startswith(
                ("text/javascript", "text/css")
            )
        assert "offload-dashboard" in server.get(assets[1]).text  # the script
        assert server.get("/static/dashboard.js").status_code == 404  # the app's
    finally:
        with app.app_context():
            offload.shutdown()


def test_progress_message_must_be_text(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    """A message that is not a string fails the job that sets it, saying
    so, instead of breaking the list of jobs for everyone.
    """
    messages: list[t.Any] = [b"parsed rows", {"rows": {1, 2}}, 42]

    def report(message: t.Any) -> None:
        current_job.set_progress(0.5, message)

    offload.authorize(lambda job: True)

    @app.post("/run")
    def run() -> list[str]:
        return [offload.submit(report, m).id for m in messages]

    server = serve(app)
    ids = server.post("/run").json()
    for job_id in ids:
        wait_done(app, offload, job_id)
    listed = server.get("/offload/jobs")
    assert listed.status_code == 200
    jobs = {job["id"]: job for job in listed.json()["jobs"]}
    for job_id, kind in zip(ids, ("bytes", "dict", "int"), strict=True):
        job = jobs[job_id]
        assert job["state"] == "FAILED" and job["message"] is None
        assert job["error"]["type"] == "TypeError"
        assert job["error"]["message"].startswith(
            f"The progress message must be a string or None, not {kind}."
        )
    assert server.get("/offload/").status_code == 200


def test_result_links_refuse_spaces_and_control_characters(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    """Browsers drop tabs and newlines from URLs: "/\\t/evil.example" would
    lead to another host, so it is never made a link.
    """
    values = [
        "/\t/evil.example/a",
        "/\n/evil.example/b",
        "/\r\\evil.example/c",
        "/\x00/evil.example/d",
        "http://ok.example/\u2028",
        " javascript:alert(1)",
        "/exports/my file.csv",
        "http://ok.example/",
        "/ok/path",
    ]

    @public_result
    @offload.task
    def export(url: str) -> dict[str, str]:
        return {"download_url": url}

    offload.authorize(lambda job: True)

    @app.post("/run")
    def run() -> list[str]:
        return [export.submit(v).id for v in values]

    server = serve(app)
    ids = server.post("/run").json()
    for job_id in ids:
        wait_done(app, offload, job_id)
    links = [server.get(f"/offload/jobs/{i}").json()["result_links"] for i in ids]
    assert links == [[]] * 7 + [
        [{"label": "download", "url": "http://ok.example/"}],
        [{"label": "download", "url": "/ok/path"}],
    ]
    rows = parse_rows(server.get("/offload/").text)
    assert [rows[i].get("links") for i in ids] == [None] * 7 + [
        ["http://ok.example/"],
        ["/ok/path"],
    ]


@pytest.mark.parametrize("order", ["csrf first", "offload first"])
def test_cancel_with_flask_wtf_csrf_protect(order: str, serve: t.Any) -> None:
    """Flask-WTF's CSRFProtect checks every POST with its own token: the
    dashboard's cancel URL, which checks a token of its own, is exempt,
    whichever extension was set up first.
    """
    from flask_wtf.csrf import CSRFProtect

    app = Flask("wtf_app")
    app.config.update(SECRET_KEY="test secret", OFFLOAD_DASHBOARD=True)
    if order == "csrf first":
        CSRFProtect(app)
    offload = Offload(app)
    if order == "offload first":
        CSRFProtect(app)
    offload.authorize(lambda job: True)
    release = threading.Event()

    def held() -> str:
        assert release.wait(WAIT)
        return "done"

    @app.get("/start")
    def start() -> dict[str, str]:
        return {"id": offload.submit(held).id}

    @app.post("/form")
    def form() -> str:
        return "the app's own forms stay protected"

    server = serve(app)
    try:
        job_id = server.get("/start").json()["id"]
        assert server.post("/form").status_code == 400
        cancel = server.post(
            f"/offload/jobs/{job_id}/cancel",
            headers={"X-CSRF-Token": csrf_from_page(server)},
        )
        assert cancel.status_code == 200, cancel.text
        assert cancel.json()["cancel_requested"] is True
    finally:
        release.set()
        with app.app_context():
            assert offload.join(WAIT)
            offload.shutdown()


def test_exception_with_a_broken_str_keeps_the_lists_working(
    app: Flask, offload: Offload, serve: t.Any, jobs: Jobs
) -> None:
    """One job's exception whose ``__str__`` fails, or whose message is
    huge, must not break the status URLs of every job.
    """

    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no message")

    def broken() -> None:
        raise Broken

    def huge() -> None:
        raise ValueError("x" * 1_000_000)

    jobs.funcs.update(broken=broken, huge=huge)
    server = serve(app)
    login(server, "ann")
    broken_id, huge_id = submit(server, "broken"), submit(server, "huge")
    wait_done(app, offload, broken_id)
    wait_done(app, offload, huge_id)
    status = server.get(f"/offload/jobs/{broken_id}")
    assert status.status_code == 200
    assert status.json()["error"] == {
        "type": "Broken",
        "message": "<test_exception_with_a_broken_str_keeps_the_lists_working.<locals>"
        ".Broken: str() failed>",
    }
    listing = server.get("/offload/jobs")
    assert listing.status_code == 200
    assert {j["id"] for j in listing.json()["jobs"]} == {broken_id, huge_id}
    assert len(listing.text) < 20_000
    assert server.get("/offload/").status_code == 200


def test_a_lone_surrogate_in_a_job_keeps_the_page_working(
    app: Flask, offload: Offload, serve: t.Any, jobs: Jobs
) -> None:
    """Text that cannot be encoded as UTF-8 (a lone surrogate, from
    ``json.loads('"\\\\udcff"')`` or a file name) in one job's message does not
    make the page fail for everyone: it shows as U+FFFD.
    """

    def bad_text() -> None:
        current_job.set_progress(0.5, "file \udcff.csv")

    jobs.funcs["bad_text"] = bad_text
    server = serve(app)
    login(server, "ann")
    wait_done(app, offload, submit(server, "bad_text"))
    page = server.get("/offload/")
    assert page.status_code == 200
    assert "file \ufffd.csv" in page.text
    assert server.get("/offload/jobs").status_code == 200


def test_a_csrf_token_is_not_valid_for_the_next_user(serve: t.Any) -> None:
    """A token read before a sign-out is refused after another user signs
    in in the same browser session (a shared computer): Flask-Login's sign
    in and out give the session a new CSRF value.
    """
    from flask_login import login_user
    from flask_login import LoginManager
    from flask_login import logout_user
    from flask_login import UserMixin

    class User(UserMixin):
        def __init__(self, name: str) -> None:
            self.id = name

    app = Flask("login_app")
    app.config.update(SECRET_KEY="test secret", OFFLOAD_DASHBOARD=True)
    offload = Offload(app)
    login_manager = LoginManager(app)
    login_manager.user_loader(User)
    offload.authorize(lambda job: True)
    release = threading.Event()

    @app.get("/in/<name>")
    def sign_in(name: str) -> str:
        login_user(User(name))
        return name

    @app.get("/out")
    def sign_out() -> str:
        logout_user()
        return "bye"

    @app.get("/start")
    def start() -> dict[str, str]:
        return {"id": offload.submit(release.wait, WAIT).id}

    browser = serve(app)
    try:
        browser.get("/in/ann")
        old_token = csrf_from_page(browser)
        browser.get("/out")
        browser.get("/in/bob")
        url = f"/offload/jobs/{browser.get('/start').json()['id']}/cancel"
        refused = browser.post(url, headers={"X-CSRF-Token": old_token})
        assert refused.status_code == 403
        assert "before a sign-in or sign-out" in refused.json()["message"]
        fresh = browser.post(url, headers={"X-CSRF-Token": csrf_from_page(browser)})
        assert fresh.status_code == 200
    finally:
        release.set()
        with app.app_context():
            assert offload.join(WAIT)
            offload.shutdown()


def test_a_library_errors_message_is_not_shown(
    app: Flask,
    offload: Offload,
    serve: t.Any,
    jobs: Jobs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An installed library's exception message can hold what the job
    handled (SQLAlchemy's SQL parameters): the status URLs show its type
    only, the server log the whole error.
    """
    from sqlalchemy.exc import IntegrityError

    def insert() -> None:
        raise IntegrityError(
            "INSERT INTO keys (owner, secret) VALUES (?, ?)",
            ("ann", "sk_live_SERVER_SECRET"),
            Exception("UNIQUE constraint failed: keys.owner"),
        )

    server, job_id = run_failing(app, offload, serve, jobs, insert)
    status = server.get(f"/offload/jobs/{job_id}")
    assert status.json()["error"]["type"] == "IntegrityError"
    assert "is not shown" in status.json()["error"]["message"]
    for response in (status, server.get("/offload/jobs"), server.get("/offload/")):
        assert "sk_live_SERVER_SECRET" not in response.text
    assert "sk_live_SERVER_SECRET" in caplog.text  # the log has it, with the id
    assert job_id in caplog.text


def test_a_subprocess_errors_command_line_is_not_shown(
    app: Flask, offload: Offload, serve: t.Any, jobs: Jobs
) -> None:
    """Some standard library errors hold what the job handled too: a failed
    command's line (with its password option) is not shown.
    """
    import subprocess
    import sys

    def run_tool() -> None:
        subprocess.run(
            [sys.executable, "-c", "raise SystemExit(3)", "-pS3cret"], check=True
        )

    server, job_id = run_failing(app, offload, serve, jobs, run_tool)
    error = server.get(f"/offload/jobs/{job_id}").json()["error"]
    assert error["type"] == "CalledProcessError"
    assert "S3cret" not in error["message"] and "is not shown" in error["message"]


def _command_as_one_string() -> None:
    import subprocess

    subprocess.run("mysqldump --password=S3cret shop", check=True)


def _relative_url() -> None:
    import urllib.request

    urllib.request.urlopen("/v1/charge?api_key=S3cret")


def _token_with_newline() -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", 9)
    conn.putrequest("GET", "/")
    conn.putheader("Authorization", "Bearer S3cret\n")


def _urllib3_header() -> None:
    import urllib3

    urllib3.PoolManager().request(
        "GET", "http://127.0.0.1:9/", headers={"Authorization": "Bearer S3cret\n"}
    )


@pytest.mark.parametrize(
    ("func", "kind", "source"),
    [
        (_command_as_one_string, "FileNotFoundError", "subprocess"),
        (_relative_url, "ValueError", "urllib"),
        (_token_with_newline, "ValueError", "http"),
        (_urllib3_header, "ValueError", "http"),
    ],
)
def test_a_builtin_error_raised_by_library_code_is_not_shown(
    app: Flask,
    offload: Offload,
    serve: t.Any,
    jobs: Jobs,
    func: t.Callable[[], None],
    kind: str,
    source: str,
) -> None:
    """The standard library and installed libraries raise builtin errors
    too (a ValueError with the URL and its API key, a FileNotFoundError
    with the command line): where it was raised decides, not the class.
    """
    server, job_id = run_failing(app, offload, serve, jobs, func)
    error = server.get(f"/offload/jobs/{job_id}").json()["error"]
    assert error["type"] == kind
    assert "S3cret" not in error["message"], error
    assert f"this {source} error is not shown" in error["message"]


def test_an_xmlrpc_error_with_the_urls_password_is_not_shown(
    app: Flask, offload: Offload, serve: t.Any, jobs: Jobs
) -> None:
    """``xmlrpc.client`` puts the URL, with its ``user:password@``, in its
    ProtocolError: hidden as the other standard library clients' are.
    """

    @app.post("/rpc")
    def rpc() -> tuple[str, int]:
        return "no", 401

    def call_rpc() -> None:
        import xmlrpc.client

        url = request.host_url.replace("://", "://svc:S3cret@", 1) + "rpc"
        xmlrpc.client.ServerProxy(url).ping()

    server, job_id = run_failing(app, offload, serve, jobs, call_rpc)
    error = server.get(f"/offload/jobs/{job_id}").json()["error"]
    assert error["type"] == "ProtocolError"
    assert "S3cret" not in error["message"], error
    assert "this xmlrpc error is not shown" in error["message"]


def test_a_builtin_error_the_job_raises_is_shown(
    app: Flask, offload: Offload, serve: t.Any, jobs: Jobs
) -> None:
    def check_stock() -> None:
        raise ValueError("order 42 is out of stock")

    server, job_id = run_failing(app, offload, serve, jobs, check_stock)
    error = server.get(f"/offload/jobs/{job_id}").json()["error"]
    assert error == {"type": "ValueError", "message": "order 42 is out of stock"}


@pytest.mark.parametrize(
    ("progress", "shown"), [(0.57, "57%"), (0.29, "29%"), (0.995, "99%"), (1.0, "100%")]
)
def test_progress_percent_is_the_same_on_the_page_and_in_the_cli(
    app: Flask, offload: Offload, serve: t.Any, jobs: Jobs, progress: float, shown: str
) -> None:
    """Whole percents, as set (``0.57 * 100`` is 56.99999999999999 in
    floating point), never 100% before the end, alike everywhere.
    """
    started = threading.Event()
    release = threading.Event()

    def held() -> None:
        current_job.set_progress(progress)
        started.set()
        assert release.wait(WAIT)

    jobs.funcs["held_at"] = held
    server = serve(app)
    login(server, "ann")
    job_id = submit(server, "held_at")
    try:
        assert started.wait(WAIT)
        page = server.get("/offload/").text
        row = page[page.index(f'data-job-id="{job_id}"') :]
        assert f'data-field="percent">{shown}<' in row
        table = app.test_cli_runner().invoke(args=["offload", "jobs"]).output
        assert f"RUNNING  {shown:>5}" in table or f"RUNNING {shown:>5}" in table
    finally:
        release.set()
        wait_done(app, offload, job_id)


def test_an_error_keeps_every_header_it_sets(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    """An authorize callback asking for credentials two ways: both
    challenges reach the client, as from the app's own views.
    """
    from werkzeug.datastructures import WWWAuthenticate

    @offload.authorize
    def ask(job: Job) -> bool:
        abort(
            401,
            www_authenticate=[
                WWWAuthenticate("basic", {"realm": "jobs"}),
                WWWAuthenticate("bearer", {"realm": "jobs"}),
            ],
        )

    @app.post("/run")
    def run() -> str:
        return offload.submit(int).id

    server = serve(app)
    job_id = server.post("/run").text
    response = server.get(f"/offload/jobs/{job_id}")
    assert response.status_code == 401
    challenges = response.raw.headers.getlist("WWW-Authenticate")
    assert sorted(challenges) == ["Basic realm=jobs", "Bearer realm=jobs"]
