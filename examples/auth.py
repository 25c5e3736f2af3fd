"""Who may see which job: the browser session remembers the demo user.

Uploads and the jobs they start know the user by the request's
``Authorization: Bearer`` header (see :mod:`examples.libs.passport`). A
browser cannot send that header when it opens a page such as the
dashboard, so the demo also signs the user in with Flask-Login: Flask-Offload
records the session's user id on each job (:attr:`Job.user_id
<flask_offload.Job.user_id>`), and the :func:`may_see` callback lets
people see only their own jobs.
"""

from __future__ import annotations

from flask_login import current_user
from flask_login import LoginManager
from flask_login import UserMixin

from flask_offload import Job

from .extensions import offload
from .libs.passport import PassportService
from .libs.passport import User

login_manager = LoginManager()


class DemoUser(UserMixin):
    """A demo user as Flask-Login knows them."""

    def __init__(self, user: User) -> None:
        self.user = user
        self.id = user.id
        self.name = user.name

    def get_id(self) -> str:
        return str(self.user.id)


@login_manager.user_loader
def load_user(user_id: str) -> DemoUser | None:
    """The signed-in user, from the id in the session."""
    user = PassportService.get_user(int(user_id)) if user_id.isdigit() else None
    return None if user is None else DemoUser(user)


@offload.authorize
def may_see(job: Job) -> bool:
    """People may see, and cancel, the jobs they started, and no others."""
    return bool(current_user.is_authenticated) and job.user_id == current_user.get_id()
