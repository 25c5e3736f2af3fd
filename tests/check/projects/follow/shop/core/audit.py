import flask
from flask import request as req
from flask_login import current_user

from ..util import text as txt
from ..util.links import link_for


def audit_event(name):
    return txt.clean(name), flask.request.user_agent  # expect: OFF101


class Auditor:
    def __init__(self, prefix):
        self.prefix = prefix

    def record(self, name):
        return self._who(), self.where(name)

    def _who(self):
        return current_user.get_id()  # expect: OFF101

    def where(self, name):
        return link_for(name), req.endpoint  # expect: OFF101


class LoudAuditor(Auditor):
    def record(self, name):
        return super().record(name.upper())
