import threading

from flask import Flask
from flask import request

app = Flask(__name__)


def work(path):
    print("processing", path)


@app.route("/")
def index():
    threading.Thread(target=work, args=(request.path,)).start()
    return "ok"
