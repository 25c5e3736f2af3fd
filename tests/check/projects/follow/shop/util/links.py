from flask import flash
from flask import render_template
from flask import url_for


def link_for(name):
    flash("linked")  # expect: OFF103
    return url_for("item", name=name)  # expect: OFF103


def page():
    return render_template("page.html")  # expect: OFF103
