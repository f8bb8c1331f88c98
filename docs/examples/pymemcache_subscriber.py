#!/usr/bin/env python3
"""A Kraken subscriber and publisher written with pymemcache, used safely.

    python3 docs/examples/pymemcache_subscriber.py 127.0.0.1:12355

What it shows (docs/CLIENTS.md explains why):

- every client is made with ``default_noreply=False``, so each ``set`` waits
  for the node's answer: when ``set("subscribe", ...)`` returns, the
  subscription is in force, and a ``NOT_FOUND`` is seen;
- ``NOT_FOUND`` reaches pymemcache as ``MemcacheUnknownError(b'NOT_FOUND')``
  and pymemcache then closes the connection, which drops every subscription
  of it: the subscriber re-subscribes all its topics on the new connection
  and reloads everything;
- ``get("messages")`` returns the entries without the last CRLF (it is the
  memcached value terminator): add it back before parsing.

It publishes 300 messages, checks that all arrive in order, then asks for a
replay from a day ago (which a node that started since cannot give), handles
the ``NOT_FOUND``, and checks that delivery goes on. It exits non-zero if
anything is off.
"""

import sys
import time

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheUnknownError


def connect(addr):
    host, port = addr.rsplit(":", 1)
    # noreply=False: wait for STORED / NOT_FOUND. pymemcache's default
    # (noreply=True) returns before the node has even read the request.
    return Client((host, int(port)), default_noreply=False, connect_timeout=5, timeout=5)


def parse_entries(entries):
    """``MESSAGE <topics> <len>\\r\\n<payload>\\r\\n``... -> [(topics, payload)]."""
    out = []
    pos = 0
    while pos < len(entries):
        eol = entries.index(b"\r\n", pos)
        words = entries[pos:eol].split()
        if len(words) < 3 or words[0] != b"MESSAGE":
            raise ValueError("bad entry header %r" % entries[pos:eol])
        length = int(words[-1])
        start = eol + 2
        payload = entries[start:start + length]
        if entries[start + length:start + length + 2] != b"\r\n":
            raise ValueError("entry payload not followed by CRLF")
        out.append(([t.decode() for t in words[1:-1]], payload))
        pos = start + length + 2
    return out


def publish(client, topics, payload):
    """One message (``payload`` bytes) to ``topics``."""
    entry = b"MESSAGE %s %d\r\n%s\r\n" % (" ".join(topics).encode(), len(payload), payload)
    if client.set("publish", entry) is not True:
        raise RuntimeError("publish not stored")


class Subscriber:
    """A pymemcache connection that holds topics and polls them."""

    def __init__(self, addr, topics):
        self.client = connect(addr)
        self.topics = list(topics)
        self.subscribe_all()

    def subscribe_all(self):
        if self.client.set("subscribe", " ".join(self.topics)) is not True:
            raise RuntimeError("subscribe not stored")

    def retro_subscribe(self, horizon, topics):
        """Subscribes ``topics`` and replays them from ``horizon`` (unix
        seconds). Returns False when the node answers NOT_FOUND: the
        caller must reload everything."""
        self.topics += [t for t in topics if t not in self.topics]
        try:
            self.client.set("retro_subscribe", "%d\r\n%s" % (horizon, " ".join(topics)))
            return True
        except MemcacheUnknownError as e:
            if not e.args or not e.args[0].startswith(b"NOT_FOUND"):
                raise
            # pymemcache closed the connection on the reply it does not know;
            # the next request opens a new one, which holds no subscription.
            self.subscribe_all()
            return False

    def poll(self):
        value = self.client.get("messages")
        return [] if value is None else parse_entries(value + b"\r\n")

    def poll_until(self, count, timeout=10.0):
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            got += self.poll()
            if time.monotonic() > deadline:
                raise RuntimeError("only %d of %d messages arrived" % (len(got), count))
            time.sleep(0.01)
        return got


def main(addr):
    sub = Subscriber(addr, ["news"])
    pub = connect(addr)

    sent = [b"m%d" % i for i in range(300)]
    for payload in sent:
        publish(pub, ["news"], payload)
    got = sub.poll_until(len(sent))
    if got != [(["news"], p) for p in sent]:
        raise RuntimeError("messages lost, repeated or out of order")
    print("received %d of %d in order" % (len(got), len(sent)))

    a_day_ago = int(time.time()) - 86400
    if sub.retro_subscribe(a_day_ago, ["sport"]):
        raise RuntimeError("a node younger than a day cannot replay a day")
    print("retro_subscribe from a day ago: NOT_FOUND, reload everything")

    publish(pub, ["sport", "news"], b"after reload")
    got = sub.poll_until(1)
    # One entry naming every subscribed topic of the message, in publish order.
    if got != [(["sport", "news"], b"after reload")]:
        raise RuntimeError("unexpected delivery %r" % got)
    print("after reload: %s %r" % (" ".join(got[0][0]), got[0][1]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: pymemcache_subscriber.py HOST:PORT")
    sys.exit(main(sys.argv[1]))
