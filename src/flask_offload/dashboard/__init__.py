"""Job status URLs and the live dashboard, registered by ``init_app`` when
``OFFLOAD_DASHBOARD`` is true, under ``OFFLOAD_URL_PREFIX`` (``/offload``).

- ``GET /jobs/<id>``: one job's status as JSON; 404 for unknown ids.
- ``GET /jobs``: recent jobs as JSON, newest first, filtered by ``state``,
  paginated with ``page`` and ``per_page``.
- ``GET /``: the dashboard, an HTML page that updates itself by polling
  ``GET /jobs``. Everything it needs is served by this blueprint.
- ``POST /jobs/<id>/cancel``: cancel a job; needs the CSRF token of the page.

Every view refuses (403) unless the :meth:`Offload.authorize
<flask_offload.Offload.authorize>` callback allows the job; lists only show
the jobs it allows. Responses never contain arguments, headers, cookies or
the session; a result only for tasks marked with :func:`public_result`.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import secrets
import typing as t

from flask import abort
from flask import Blueprint
from flask import current_app
from flask import has_request_context
from flask import jsonify
from flask import make_response
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from itsdangerous import BadData
from itsdangerous import SignatureExpired
from itsdangerous import URLSafeTimedSerializer
from werkzeug.exceptions import HTTPException

from ..jobs import Job
from ..jobs import JobState
from ..jobs import progress_percent
from ..jobs import PUBLIC_ARGS
from ..jobs import PUBLIC_ATTR
from ..jobs import PUBLIC_RESULT
from ..tasks import Task

if t.TYPE_CHECKING:  # pragma: no cover
    from flask.typing import ResponseReturnValue

    from ..extension import Offload

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

#: The salt of the CSRF token's signature, so that no other value signed
#: with the app's ``SECRET_KEY`` is accepted as a token, and the reverse.
CSRF_SALT = "flask-offload.dashboard.csrf"
#: Seconds a CSRF token stays valid. The dashboard gets a fresh one each
#: time it polls, so an open page never holds an expired token.
CSRF_MAX_AGE = 12 * 3600
#: The header, and the form field, that carry the CSRF token.
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
#: The session key of the random value a session's tokens are bound to.
CSRF_SESSION_KEY = "_offload_csrf"

#: Jobs per page of ``GET /jobs`` and of the dashboard, unless ``per_page``.
PER_PAGE = 25
#: The largest ``per_page`` accepted.
MAX_PER_PAGE = 200
#: A public result larger than this, as JSON, is left out of the status.
MAX_RESULT_BYTES = 64 * 1024

#: Where the blueprint serves the page's script and style sheet, under the
#: prefix: not ``/static``, which is the app's own with the prefix ``/``.
STATIC_URL_PATH = "/offload-static"

_SURROGATE = re.compile("[\ud800-\udfff]")

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; base-uri 'none';"
    " frame-ancestors 'none'"
)


def public_result(task: F) -> F:
    """Show the result of a task's jobs in their status and on the dashboard.

    Results are hidden by default: they may hold data the person watching
    the job should not see. Mark a task whose result is meant for them:

    .. code-block:: python

        from flask_offload.dashboard import public_result

        @public_result
        @offload.task
        def build_export(month):
            ...
            return {"rows": 1200, "export_url": url_for("exports", name=name)}

    The result is shown once the job succeeded, if it is JSON-safe (made of
    dicts, lists, strings, numbers, booleans and ``None``) and at most 64
    KiB as JSON. String values under a key named ``url`` or ending in
    ``_url`` that are absolute paths or ``http(s)`` URLs, without spaces or
    control characters, become links.

    Works above or below ``@offload.task``, and on plain functions given to
    ``offload.submit``. The mark is on the function itself, not its name:
    another function with the same name (a closure from the same factory, a
    task of another app) keeps its result hidden. Mark the task before jobs
    are submitted. With Celery, a job that another process submitted is
    known here by its task's name only: its result is shown if the task of
    that name declared on the ``Offload`` instance serving the URL is marked.
    """
    return _mark(task, PUBLIC_RESULT, "public_result")


def public_args(task: F) -> F:
    """Show the arguments of a task's jobs in their status and on the
    dashboard. Hidden by default: arguments may be secret.

    .. code-block:: python

        from flask_offload.dashboard import public_args

        @public_args
        @offload.task
        def build_export(month):
            ...

    The job keeps a JSON copy of its arguments taken at submit, at most 4
    KiB: what JSON cannot hold (objects, bytes, ``nan`` and infinities, keys
    that are not strings, a list that contains itself) is shown by its
    ``repr``, and a copy never makes the submit fail. Works above or
    below ``@offload.task``, and on plain functions given to
    ``offload.submit``. Mark the task before jobs are submitted.
    """
    return _mark(task, PUBLIC_ARGS, "public_args")


def _mark(task: F, flag: int, decorator: str) -> F:
    # The submit reads the mark from the function it runs (see PUBLIC_ATTR).
    target = task.fn if isinstance(task, Task) else task
    try:
        setattr(target, PUBLIC_ATTR, getattr(target, PUBLIC_ATTR, 0) | flag)
    except (AttributeError, TypeError):  # pragma: no cover - builtins, slots
        raise TypeError(
            f"Cannot mark {target!r} with {decorator}: wrap it in a function first."
        ) from None
    return task


def _is_public(offload: Offload, job: Job) -> bool:
    # Recorded at submit from the function the job was submitted with.
    if getattr(job, "_public_result", False):
        return True
    _, state = offload._state()
    if state.backend.name != "celery" or state.registry.get(job.id) is job:
        return False
    # A Celery job submitted by another process, read from the result
    # backend, is known by its task's name only. Celery sends declared tasks
    # only, whose names are unique on an Offload instance: look the name up
    # on this one, never on other instances or apps.
    declared = offload.tasks.get(job.name)
    return declared is not None and bool(
        getattr(declared.fn, PUBLIC_ATTR, 0) & PUBLIC_RESULT
    )


def _public_value(offload: Offload, job: Job) -> tuple[bool, t.Any]:
    """``(True, result)`` when the job's result may be shown."""
    if job.state is not JobState.SUCCEEDED or not job.done():
        return False, None
    if not _is_public(offload, job):
        return False, None
    result = job.result(0)
    try:
        encoded = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError):
        return False, None
    if len(encoded) > MAX_RESULT_BYTES:
        return False, None
    # A round trip: tuples become lists, keys strings, as the client sees it.
    return True, json.loads(encoded)


def _result_links(result: t.Any) -> list[dict[str, str]]:
    if not isinstance(result, dict):
        return []
    links = []
    for key, value in result.items():
        if not (key == "url" or key.endswith("_url")) or not isinstance(value, str):
            continue
        # Browsers drop tabs and newlines anywhere in a URL and strip control
        # characters and spaces at its ends: "/\t/evil.example" would lead to
        # another host. No link is made of text with any of them.
        if not value.isprintable() or " " in value:
            continue
        local = value.startswith("/") and not value.startswith(("//", "/\\"))
        if local or value.startswith(("http://", "https://")):
            label = key.removesuffix("_url").replace("_", " ") or "result"
            links.append({"label": "result" if key == "url" else label, "url": value})
    return links


def job_status_data(offload: Offload, job: Job) -> dict[str, t.Any]:
    """The JSON status of ``job``: :meth:`Job.to_dict` and what the
    dashboard needs, with the result only if the task made it public.
    """
    data = job.to_dict()
    data["cancel_requested"] = job.cancel_requested
    data["cancellable"] = job.state in (JobState.PENDING, JobState.RUNNING)
    data["url"] = url_for("offload.job_status", job_id=job.id)
    data["cancel_url"] = url_for("offload.cancel_job", job_id=job.id)
    if job.public_args is not None:
        data["args"] = job.public_args
    shown, result = _public_value(offload, job)
    if shown:
        data["result"] = result
        data["result_links"] = _result_links(result)
    return data


# -- presentation, mirrored by static/dashboard.js ---------------------------

#: Placeholders for the row the page's script clones for new jobs.
_ROW_TEMPLATE: dict[str, t.Any] = {
    "id": "",
    "name": "",
    "state": JobState.PENDING.value,
    "progress": None,
    "message": None,
    "submitted_at": "",
    "duration": None,
    "error": None,
    "url": "",
    "cancel_url": "",
    "cancellable": True,
    "cancel_requested": False,
}


def _bar_value(job: dict[str, t.Any]) -> float | None:
    """The ``<progress>`` value: full once the job succeeded, ``None``
    (indeterminate) while a job that reports no progress runs.
    """
    if job["state"] == JobState.SUCCEEDED.value:
        return 1.0
    if job["progress"] is not None:
        return float(job["progress"])
    if job["state"] == JobState.RUNNING.value:
        return None
    return 0.0


def _duration(job: dict[str, t.Any]) -> str:
    seconds = job["duration"]
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _result_summary(job: dict[str, t.Any]) -> str:
    if "result" not in job:
        return ""
    result = job["result"]
    if isinstance(result, dict):
        parts = [
            f"{key}: {_scalar(value)}"
            for key, value in result.items()
            if not (key == "url" or key.endswith("_url"))
            and (value is None or isinstance(value, (str, int, float, bool)))
        ]
        return " · ".join(parts[:6])
    if isinstance(result, list):
        return f"{len(result)} item{'' if len(result) == 1 else 's'}"
    return _scalar(result)


def _args_text(args: t.Any) -> str:
    """The arguments as the page's script shows them, ``JSON.stringify``
    (compact, not ASCII-escaped, whole floats without ``.0``); the template
    escapes the text as HTML.
    """
    return json.dumps(_js_numbers(args), ensure_ascii=False, separators=(",", ":"))


def _js_numbers(value: t.Any) -> t.Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    return value


def _scalar(value: t.Any) -> str:
    # As JavaScript's JSON.stringify shows it, for strings without quotes.
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value)


# -- CSRF ----------------------------------------------------------------


def _serializer() -> URLSafeTimedSerializer:
    app = current_app
    if not app.secret_key:
        raise RuntimeError(
            "The Flask-Offload dashboard signs its CSRF tokens with the app's"
            " SECRET_KEY, which is not set. Set app.config['SECRET_KEY'] to a"
            " long random value."
        )
    keys = [*(app.config.get("SECRET_KEY_FALLBACKS") or ()), app.secret_key]
    return URLSafeTimedSerializer(keys, salt=CSRF_SALT)


def csrf_token() -> str:
    """A CSRF token for the cancel URLs, signed with ``SECRET_KEY`` and
    bound to the current session (a random value stored in it).
    """
    serializer = _serializer()
    nonce = session.get(CSRF_SESSION_KEY)
    if not isinstance(nonce, str):
        nonce = secrets.token_urlsafe(18)
        session[CSRF_SESSION_KEY] = nonce
    return serializer.dumps(nonce)


def _new_csrf_nonce(*args: t.Any, **kwargs: t.Any) -> None:
    """Forget the session's CSRF value when a user signs in or out (Flask-
    Login's signals): a token read by one user is not valid for the next one
    who signs in in the same browser session.
    """
    if has_request_context():  # signals sent outside a request: no session
        session.pop(CSRF_SESSION_KEY, None)


def _follow_logins() -> None:
    try:
        from flask_login import user_logged_in
        from flask_login import user_logged_out
    except ImportError:
        return
    # The same function each time: blinker connects it once.
    user_logged_in.connect(_new_csrf_nonce, weak=False)
    user_logged_out.connect(_new_csrf_nonce, weak=False)


def check_csrf() -> None:
    """Refuse the request unless it has a valid CSRF token for this session:
    400 without a token, 403 with an invalid, expired or foreign one.
    """
    token = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    if not token:
        abort(
            400,
            "The request has no CSRF token. Send the token of the dashboard"
            f" page (its 'offload-csrf-token' meta tag) in the '{CSRF_HEADER}'"
            f" header or the '{CSRF_FIELD}' form field.",
        )
    try:
        nonce = _serializer().loads(token, max_age=CSRF_MAX_AGE)
    except SignatureExpired:
        abort(403, "The CSRF token has expired. Reload the page and try again.")
    except BadData:
        abort(403, "The CSRF token is not valid. Reload the page and try again.")
    expected = session.get(CSRF_SESSION_KEY)
    if not (
        isinstance(nonce, str)
        and isinstance(expected, str)
        and hmac.compare_digest(nonce, expected)
    ):
        abort(
            403,
            "The CSRF token was issued to another session, or before a sign-in"
            " or sign-out. Reload the page and try again.",
        )


# -- the blueprint --------------------------------------------------------


def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best != "text/html"


def _arg_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        abort(400, f"'{name}' must be a whole number from {low} to {high}.")
    return value


def create_blueprint(offload: Offload) -> Blueprint:
    """The ``offload`` blueprint for one :class:`~flask_offload.Offload`."""
    bp = Blueprint(
        "offload",
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path=STATIC_URL_PATH,
    )

    def exempt_from_app_csrf(app: t.Any) -> None:
        # Flask-WTF's CSRFProtect checks every POST against its own token:
        # the cancel URL, which checks a token of its own, would always
        # answer 400 "The CSRF token is missing".
        exempt = getattr(app.extensions.get("csrf"), "exempt", None)
        if exempt is not None:
            exempt(bp)

    bp.record_once(lambda state: exempt_from_app_csrf(state.app))
    _follow_logins()

    @bp.before_app_request
    def exempt_from_later_csrf() -> None:
        # A CSRFProtect set up after Offload: its check runs after this one.
        # Only for this blueprint's requests, all that Flask-WTF looks at.
        if request.blueprint == bp.name:
            exempt_from_app_csrf(current_app)

    @bp.before_request
    def require_callback() -> None:
        # First, before any job is looked up or a CSRF token checked: the
        # answer is the same for every URL and says what to do.
        if offload._authorize is None and request.endpoint != "offload.static":
            abort(
                403,
                "Nobody may see jobs until the app registers an"
                " '@offload.authorize' callback that decides who may see which.",
            )

    def allowed_job(job_id: str) -> Job:
        job = offload.get_job(job_id)
        if job is None:
            abort(404, f"There is no job {job_id!r}, or it finished long ago.")
        if not offload.is_authorized(job):
            abort(403, "You may not see this job.")
        return job

    def list_data() -> dict[str, t.Any]:
        raw_state = request.args.get("state") or None
        state = None
        if raw_state is not None:
            try:
                state = JobState(raw_state.upper())
            except ValueError:
                abort(
                    400,
                    f"'state' must be one of {', '.join(s.value for s in JobState)},"
                    f" not {raw_state!r}.",
                )
        page = _arg_int("page", 1, 1, 1_000_000)
        per_page = _arg_int("per_page", PER_PAGE, 1, MAX_PER_PAGE)
        allowed = [job for job in offload.jobs() if offload.is_authorized(job)]
        counts = {s.value: 0 for s in JobState}
        for job in allowed:
            counts[job.state.value] += 1
        if state is not None:
            allowed = [job for job in allowed if job.state is state]
        total = len(allowed)
        pages = max(1, math.ceil(total / per_page))
        shown = allowed[(page - 1) * per_page : page * per_page]

        def page_url(n: int) -> str | None:
            if not 1 <= n <= pages:
                return None
            args: dict[str, t.Any] = {"page": n, "per_page": per_page}
            if state is not None:
                args["state"] = state.value
            return url_for("offload.job_list", **args)

        return {
            "jobs": [job_status_data(offload, job) for job in shown],
            "state": None if state is None else state.value,
            "page": page,
            "per_page": per_page,
            "pages": pages,
            "total": total,
            "counts": counts,
            "next": page_url(page + 1),
            "prev": page_url(min(page - 1, pages)),
            "csrf_token": csrf_token(),
        }

    @bp.get("/")
    def index() -> ResponseReturnValue:
        data = list_data()
        html = render_template(
            "offload/dashboard.html",
            states=[s.value for s in JobState],
            all_count=sum(data["counts"].values()),
            csrf_header=CSRF_HEADER,
            csrf_field=CSRF_FIELD,
            row_template=_ROW_TEMPLATE,
            bar_value=_bar_value,
            percent=progress_percent,
            duration=_duration,
            result_summary=_result_summary,
            args_text=_args_text,
            **data,
        )
        # A lone surrogate (from json.loads('"\\udcff"'), os.fsdecode, ...) in
        # a job's message, error, args or result cannot be encoded as UTF-8:
        # show it as U+FFFD, as the page's script does, instead of a 500.
        response = make_response(_SURROGATE.sub("\ufffd", html))
        response.headers.setdefault("Content-Security-Policy", _CSP)
        return response

    @bp.get("/jobs")
    def job_list() -> ResponseReturnValue:
        return jsonify(list_data())

    @bp.get("/jobs/<job_id>")
    def job_status(job_id: str) -> ResponseReturnValue:
        return jsonify(job_status_data(offload, allowed_job(job_id)))

    @bp.post("/jobs/<job_id>/cancel")
    def cancel_job(job_id: str) -> ResponseReturnValue:
        check_csrf()
        job = allowed_job(job_id)
        job.cancel()
        if request.form.get(CSRF_FIELD) and not _wants_json():
            # A plain form post (no JavaScript): back to the dashboard.
            return redirect(url_for("offload.index"), 303)
        data = job_status_data(offload, job)
        if job.state is JobState.CANCELLED or job.cancel_requested and not job.done():
            return jsonify(data)
        data["detail"] = "The job had already finished; there was nothing to cancel."
        return jsonify(data), 409

    @bp.after_request
    def no_store(response: t.Any) -> t.Any:
        # Job states are per user and change: never cached.
        if request.endpoint != "offload.static":
            response.headers["Cache-Control"] = "no-store"
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    @bp.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> ResponseReturnValue:
        if request.endpoint == "offload.index" or not _wants_json():
            return e
        response = jsonify(
            {"error": e.name, "status": e.code, "message": e.description}
        )
        response.status_code = e.code or 500
        # What the error adds (a 405's Allow), not its HTML content type.
        for name, value in e.get_headers():
            if name.lower() != "content-type":
                response.headers.add(name, value)
        return response

    return bp
