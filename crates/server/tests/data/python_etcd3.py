"""python-etcd3 as its users call it, against one member (tests/python_etcd3.rs).

`snapshot PORT FILE`: a put, then Maintenance.Snapshot through python-etcd3's
`snapshot()` into FILE. `auth PORT`: clients with root's password, without one, with a
wrong one and with a user but no password (the member has auth enabled). Each step
prints one line: its label and the result, or the exception's class and gRPC
status/details (never the debug string, which carries timestamps).
"""
import sys

import etcd3


def show(label, call):
    try:
        print(label, "->", call())
    except Exception as e:  # the class and gRPC status are what is compared
        code = getattr(e, "code", None)
        details = getattr(e, "details", None)
        if callable(code) and callable(details):
            print(label, "->", type(e).__name__, code(), details())
        else:
            print(label, "->", type(e).__name__, str(e))


def client(port, **kw):
    return etcd3.client(host="127.0.0.1", port=port, timeout=5, **kw)


def snapshot(port, path):
    c = client(port)
    show("put", lambda: c.put("py/foo", "bar") is not None)
    show("get", lambda: c.get("py/foo")[0])
    with open(path, "wb") as f:
        show("snapshot", lambda: c.snapshot(f))


def auth(port):
    show("root get", lambda: client(port, user="root", password="pwd").get("py/foo")[0])
    show("anonymous get", lambda: client(port).get("py/foo")[0])
    show("wrong password", lambda: client(port, user="root", password="nope").get("py/foo")[0])
    show("user without password", lambda: client(port, user="root"))


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "snapshot":
        snapshot(port, sys.argv[3])
    else:
        auth(port)
