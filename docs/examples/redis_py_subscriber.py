#!/usr/bin/env python3
"""A stock redis-py client on Kraken's Redis port (docs/RESP.md).

    python3 redis_py_subscriber.py HOST RESP_PORT MEMCACHED_PORT [2|3]

Subscribes with redis-py's PubSub, receives pushes published by redis-py
and by a memcached-dialect client (raw socket, `set publish`), unsubscribes,
uses KRAKEN.REGISTER + subscribe() for a retroactive subscription, and
checks the error cases. Prints ALL OK and exits 0 when every check held.
"""

import socket
import sys
import time

import redis

host, resp_port, mc_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
protocol = int(sys.argv[4]) if len(sys.argv) > 4 else 2
TIMEOUT = 5.0


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)
    print("ok:", what)


def memcached_publish(topic, payload):
    """Publishes with the memcached dialect on the main port."""
    body = b"MESSAGE %s %d\r\n%s" % (topic.encode(), len(payload), payload)
    with socket.create_connection((host, mc_port), timeout=TIMEOUT) as s:
        s.sendall(b"set publish 0 0 %d\r\n%s\r\n" % (len(body), body))
        reply = s.recv(64)
        check(reply == b"STORED\r\n", "memcached publish stored")


def next_event(p, kind):
    """The next event of type `kind` (other event types are skipped)."""
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        m = p.get_message(timeout=0.2)
        if m is not None and m["type"] == kind:
            return m
    return None


r = redis.Redis(host=host, port=resp_port, protocol=protocol, socket_timeout=TIMEOUT)
check(r.ping(), "PING")

# Subscribe; receive from both dialects.
p = r.pubsub()
p.subscribe("news")
check(next_event(p, "subscribe") is not None, "subscribe confirmed")
memcached_publish("news", b"from memcached")
check(r.publish("news", "from redis-py") == 1, "PUBLISH counts one subscriber")
m1, m2 = next_event(p, "message"), next_event(p, "message")
check(m1 and m1["channel"] == b"news" and m1["data"] == b"from memcached", "memcached -> redis-py")
check(m2 and m2["data"] == b"from redis-py", "redis-py -> redis-py")

# Unsubscribe: nothing more arrives.
p.unsubscribe("news")
check(next_event(p, "unsubscribe") is not None, "unsubscribe confirmed")
check(r.publish("news", "gone") == 0, "no subscriber after unsubscribe")

# Retroactive: register now, something is published, then subscribe().
# (redis-py reads a PubSub's events only while it holds a channel: the
# register's answer is read with the subscribe's.)
p.execute_command("KRAKEN.REGISTER")
memcached_publish("late", b"while away")
p.subscribe("late")
reg = next_event(p, "kraken.register")
check(reg is not None and reg["data"] == b"ok", "KRAKEN.REGISTER answered")
m = next_event(p, "message")
check(m and m["channel"] == b"late" and m["data"] == b"while away", "replayed message")
res = next_event(p, "kraken.retro")
check(res is not None and res["data"] == b"stored", "retro result stored")

# A horizon before the node started: NOT_FOUND, reported distinctly.
p.execute_command("KRAKEN.RETROSUBSCRIBE", int(time.time()) - 86400, "old")
res = next_event(p, "kraken.retro")
check(res is not None and res["data"] == b"not_found", "retro result not_found")
p.close()

# Errors: an unknown command and PSUBSCRIBE; the connection stays usable.
try:
    r.execute_command("GET", "k")
    check(False, "GET refused")
except redis.ResponseError as e:
    check("unknown command" in str(e), "unknown command error")
q = r.pubsub()
q.psubscribe("n*")
try:
    q.get_message(timeout=TIMEOUT)
    check(False, "PSUBSCRIBE refused")
except redis.ResponseError as e:
    check("PSUBSCRIBE is not supported" in str(e), "PSUBSCRIBE refused")
check(r.ping(), "still connected")
print("ALL OK")
