"""The Flask-Offload demo: import an orders CSV after the response.

Run it from the repository root with ``make demo``, or
``flask --app examples.app run``.
"""
