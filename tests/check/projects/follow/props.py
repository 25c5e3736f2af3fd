import threading
from functools import cached_property

from flask import request


class PassportService:
    @property
    def current_user_id(self):
        return request.headers["X-User-Id"]  # expect: OFF101

    @cached_property
    def locale(self):
        return request.accept_languages.best  # expect: OFF101

    @property
    def agent(self):
        return request.user_agent.string  # expect: OFF101

    @agent.setter
    def agent(self, value):
        self._agent = value

    @property
    def token(self):
        return request.headers["Authorization"]

    @token.setter
    def token(self, value):
        self._token = value

    @property
    def path(self):
        # Only read in the view.
        return request.path

    def record(self):
        print(self.current_user_id, self.locale)
        self.token = "set, not read"


class Reporter:
    def __init__(self):
        self.passport = PassportService()

    def report(self):
        print(self.passport.agent, PassportService.token)


passport = PassportService()


def view():
    print(passport.path)
    threading.Thread(target=passport.record).start()
    threading.Thread(target=Reporter().report).start()
