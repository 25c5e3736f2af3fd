from flask import g


def clean(value):
    return ping(value.strip())


def ping(value):
    # ping and pong call each other: the walk must end.
    return pong(value) if value else g.fallback  # expect: OFF102


def pong(value):
    return ping(value[1:])
