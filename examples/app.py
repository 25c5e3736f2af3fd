"""The Flask-Offload demo app: upload an orders CSV, get a summary export.

.. code-block:: text

    make demo        # or: flask --app examples.app run

``POST /orders/import`` answers ``202 Accepted`` at once, with a
``Location`` header pointing at the job's status URL
(:meth:`~flask_offload.Offload.accepted`); the import runs as a job after
the response, with the upload and the caller's ``Authorization`` header
still available to ordinary request-bound code. The page polls the status
URL for progress, and the dashboard at ``/offload/`` shows every job of the
signed-in user as it runs.

Data (SQLite database, exports, outbox) goes into the instance folder
``examples/instance``, or into the folder named by the ``DEMO_DATA_DIR``
environment variable.
"""

from __future__ import annotations

import os
import typing as t

from flask import abort
from flask import Flask
from flask import render_template
from flask import request
from flask import send_file
from flask import send_from_directory
from flask_login import current_user
from flask_login import login_user
from flask_login import logout_user
from werkzeug.exceptions import HTTPException

from . import db
from .auth import DemoUser
from .auth import login_manager
from .extensions import offload
from .libs.passport import PassportService
from .libs.passport import USERS
from .tasks import import_orders

HERE = os.path.dirname(os.path.abspath(__file__))
#: The sample file offered on the page, made by ``examples/make_sample.py``.
SAMPLE_PATH = os.path.join(HERE, "sample_orders.csv")


def create_app(test_config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Create the demo app.

    :param test_config: Config that overrides the defaults, for tests. Its
        ``DEMO_DATA_DIR`` wins over the environment variable.
    """
    app = Flask(__name__, instance_path=os.path.join(HERE, "instance"))
    app.config.from_mapping(
        # Only signs the session cookie here; set a real one in production.
        SECRET_KEY=os.environ.get("DEMO_SECRET_KEY", "dev"),
        DEMO_DATA_DIR=os.environ.get("DEMO_DATA_DIR") or app.instance_path,
        DEMO_SLOWDOWN=float(os.environ.get("DEMO_SLOWDOWN", "0.05")),
        MAX_CONTENT_LENGTH=32 * 1024 * 1024,
        # The job status URLs and the dashboard, at /offload.
        OFFLOAD_DASHBOARD=True,
    )
    if test_config is not None:
        app.config.from_mapping(test_config)
    data_dir = os.path.abspath(app.config["DEMO_DATA_DIR"])
    app.config.setdefault("DATABASE", os.path.join(data_dir, "demo.sqlite3"))
    app.config.setdefault("EXPORT_DIR", os.path.join(data_dir, "exports"))
    app.config.setdefault("OUTBOX_DIR", os.path.join(data_dir, "outbox"))
    for key in ("EXPORT_DIR", "OUTBOX_DIR"):
        os.makedirs(app.config[key], exist_ok=True)

    db.init_app(app)
    login_manager.init_app(app)
    offload.init_app(app)
    register_views(app)
    return app


def register_views(app: Flask) -> None:
    """Add the demo's routes to ``app``."""

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> tuple[dict[str, t.Any], int]:
        return {"error": e.name, "message": e.description}, e.code or 500

    @app.get("/")
    def index() -> str:
        recent = db.get_db().execute(
            "SELECT user_id, action, detail, created_at FROM operation_log"
            " ORDER BY id DESC LIMIT 5"
        )
        names = {user.id: user.name for user in USERS}
        log = [{**row, "user": names.get(row["user_id"])} for row in map(dict, recent)]
        signed_in = current_user.user if current_user.is_authenticated else None
        return render_template("index.html", users=USERS, log=log, signed_in=signed_in)

    @app.get("/sample_orders.csv")
    def sample() -> t.Any:
        return send_file(SAMPLE_PATH, mimetype="text/csv", as_attachment=True)

    @app.post("/login")
    def login() -> dict[str, t.Any]:
        # The bearer token is the credential; the session remembers the user
        # for pages the browser opens without the header, such as the
        # dashboard.
        user = PassportService.current_user()
        login_user(DemoUser(user))
        return {"id": user.id, "name": user.name}

    @app.post("/logout")
    def logout() -> dict[str, t.Any]:
        logout_user()
        return {}

    @app.post("/orders/import")
    def import_orders_view() -> t.Any:
        # Refuse anonymous uploads now, rather than in the job.
        user = PassportService.current_user()
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            abort(400, "Choose an orders CSV file to upload in the 'file' field.")
        # Sign the uploader in before submitting: the job records the
        # session's user, whom the dashboard then shows it to.
        if current_user.get_id() != str(user.id):
            login_user(DemoUser(user))
        job = import_orders.submit()
        # 202 Accepted, Location: /offload/jobs/<id>
        return offload.accepted(job)

    @app.get("/exports/<name>")
    def download_export(name: str) -> t.Any:
        # send_from_directory refuses names that leave the folder (404).
        return send_from_directory(
            app.config["EXPORT_DIR"], name, mimetype="text/csv", as_attachment=True
        )


#: The app ``flask --app examples.app run`` serves.
app = create_app()


def __getattr__(name: str) -> t.Any:
    # ``celery -A examples.app:celery_app worker``: the demo on the Celery
    # backend (examples/celery_app.py), loaded only when asked for.
    if name == "celery_app":
        from .celery_app import celery_app

        return celery_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
