import threading

from flask import current_app
from flask import flash
from flask import Flask
from flask import request
from flask import url_for

app = Flask(__name__)

from decorators import async_task  # noqa: E402
from decorators import audited  # noqa: E402
from decorators import passthrough  # noqa: E402
from decorators import register  # noqa: E402
from decorators import retry  # noqa: E402
from decorators import with_app_context  # noqa: E402
from decorators import with_request_context  # noqa: E402


@passthrough
def plain():
    return request.headers  # expect: OFF101


@retry(3)
def flaky():
    return request.form  # expect: OFF101


@audited
def quiet():
    return 1


@async_task
def send_receipt(order_id):
    return order_id, request.remote_addr  # expect: OFF101


@passthrough
@with_app_context
def stacked():
    current_app.logger.info("stacked")
    return request.path  # expect: OFF101


class Reports:
    @passthrough
    def build(self):
        return request.args  # expect: OFF101


@register
def registered():
    return request.cookies  # expect: OFF101


def work():
    plain()
    flaky()
    quiet()
    stacked()
    Reports().build()
    registered()


# Not reported: the wrapper gives the context, or the flag is false.


@with_app_context
def logged():
    current_app.logger.info("done")
    return url_for("index")


@with_request_context
def in_fake_request():
    return request.path


@async_task
def send_email(app, message):
    with app.app_context():
        current_app.logger.info(message)


@passthrough
def apply_operation(op, emit_flash=True):
    if emit_flash:
        flash(f"{op} done")
    return op


def quiet_work():
    logged()
    in_fake_request()
    apply_operation("pause", emit_flash=False)


@app.route("/")
def index():
    threading.Thread(target=work).start()
    threading.Thread(target=quiet_work).start()
    threading.Thread(target=logged).start()
    send_receipt(1)
    send_email(current_app._get_current_object(), "hi")
    return "ok"
