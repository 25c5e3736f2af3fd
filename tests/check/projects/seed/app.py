import threading

from flask import Flask
from flask import jsonify
from services.order_service import save_operation_log

app = Flask(__name__)


def _record(order_id):
    save_operation_log("create", order_id)


@app.post("/orders")
def create_order():
    order_id = 42
    threading.Thread(target=_record, args=(order_id,)).start()
    return jsonify(id=order_id)
