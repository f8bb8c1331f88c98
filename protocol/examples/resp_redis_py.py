#!/usr/bin/env python3
"""Checks a Kraken RESP port with a stock Redis client (redis-py >= 5):
pub/sub in RESP2 and RESP3, the KRAKEN.* commands as redis-py's PubSub sees
them, PSUBSCRIBE refused, channel names checked.

    pip install redis
    cargo run -p kraken-protocol --example resp_mini_node -- 127.0.0.1:6401 &
    python3 protocol/examples/resp_redis_py.py 6401

Exits non-zero on the first failed check. Loopback only.
"""
import sys

import redis

port = int(sys.argv[1])


def expect(got, want, what):
    if got != want:
        sys.exit(f"FAIL {what}: got {got!r}, want {want!r}")
    print(f"ok   {what}: {got!r}")


def event(p):
    m = p.get_message(timeout=2)
    return m and (m["type"], m["channel"], m["data"])


for proto in (2, 3):
    print(f"--- redis-py {redis.__version__}, protocol {proto}")
    r = redis.Redis(host="127.0.0.1", port=port, protocol=proto)
    pub = redis.Redis(host="127.0.0.1", port=port, protocol=proto)
    expect(r.ping(), True, "PING")
    expect(r.client_setname("me"), True, "CLIENT SETNAME")
    expect(r.client_getname(), "me" if proto == 2 else b"me", "CLIENT GETNAME")

    p = r.pubsub()
    p.subscribe("a")
    expect(event(p), ("subscribe", b"a", 1), "SUBSCRIBE confirmation")
    expect(pub.publish("a", "hello"), 1, "PUBLISH counts the receiver")
    expect(event(p), ("message", b"a", b"hello"), "message push")
    expect(pub.pubsub_numsub("a", "zz"), [(b"a", 1), (b"zz", 0)], "PUBSUB NUMSUB")
    p.ping()
    expect(event(p), ("pong", None, b""), "PING in subscribed mode")
    p.unsubscribe()
    expect(event(p), ("unsubscribe", b"a", 0), "UNSUBSCRIBE confirmation")

    # Retroactive subscription through redis-py's own subscribe().
    reg = r.execute_command("KRAKEN.REGISTER", 1700000000)
    expect(reg, [b"kraken.register", b"1700000000", b"ok"], "KRAKEN.REGISTER answer")
    q = r.pubsub()
    q.execute_command("KRAKEN.REGISTER", 1700000000)
    q.subscribe("b", "c")
    expect(event(q), ("kraken.register", b"1700000000", b"ok"), "register event")
    expect(event(q), ("subscribe", b"b", 1), "first confirmation")
    expect(event(q), ("subscribe", b"c", 2), "second confirmation")
    # Replayed messages (none here) come before the result.
    while True:
        e = event(q)
        if e is None or e[0] != "message":
            break
    if e is None or e[0] != "kraken.retro" or e[2] not in (b"stored", b"not_found"):
        sys.exit(f"FAIL retro result: got {e!r}")
    print(f"ok   retro result: {e!r}")

    # KRAKEN.RETROSUBSCRIBE through execute_command: same events.
    q.execute_command("KRAKEN.RETROSUBSCRIBE", 1700000000, "d")
    expect(event(q), ("subscribe", b"d", 3), "RETROSUBSCRIBE confirmation")
    e = event(q)
    while e and e[0] == "message":
        e = event(q)
    if e is None or e[0] != "kraken.retro":
        sys.exit(f"FAIL RETROSUBSCRIBE result: got {e!r}")
    print(f"ok   RETROSUBSCRIBE result: {e!r}")

    z = r.pubsub()
    try:
        z.psubscribe("x*")
        z.get_message(timeout=2)
        sys.exit("FAIL PSUBSCRIBE was not refused")
    except redis.ResponseError as err:
        print(f"ok   PSUBSCRIBE refused: {err}")
    try:
        r.execute_command("PUBLISH", "bad name", "x")
        sys.exit("FAIL a channel with a space was accepted")
    except redis.ResponseError as err:
        print(f"ok   bad channel refused: {err}")
    for c in (p, q, z, r, pub):
        c.close()
print("all checks passed")
