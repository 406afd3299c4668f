#!/usr/bin/python3
# test/integration/notify_listen.py
#
# A LISTEN client for test/integration/notify.sh, as an application (or an
# attacker) would run one: it connects as a role over the cluster's socket,
# LISTENs on the channels it is given and on the test's barrier channel,
# says so by creating READY, then writes every notification it receives
# ("channel<TAB>payload", one a line) to OUT until the barrier's
# notification arrives.  The test sends the barrier only after the
# rotations it watches have finished: notifications reach a listener in
# commit order, so everything committed before the barrier has been
# received by then, and no timing is assumed.  Gives up after 120 s.
#
# A CHANNEL written "follow:NAME" is the application pattern of
# docs/credential-rotation.md instead: the client asks
# keysmith.secret_channel(NAME) itself and LISTENs there (asking again
# after LISTEN until the answer stays the same); on each notification it
# follows the secret to its new channel, re-reads the secret, and writes
# "NAME<TAB>payload<TAB>value" (the tests' values are no secrets).
#
# usage: notify_listen.py HOST PORT ROLE OUT READY CHANNEL...
import select
import sys
import time

import psycopg2
import psycopg2.extensions

BARRIER = "ks_test_barrier"


def ident(cur, ch):
    return psycopg2.extensions.quote_ident(ch, cur)


def follow(cur, secret):
    """LISTEN on the secret's channel; asked again after LISTEN committed,
    so that a new version committed in between is not missed."""
    cur.execute("SELECT keysmith.secret_channel(%s)", (secret,))
    ch = cur.fetchone()[0]
    while True:
        cur.execute("LISTEN " + ident(cur, ch))
        cur.execute("SELECT keysmith.secret_channel(%s)", (secret,))
        now = cur.fetchone()[0]
        if now == ch:
            return ch
        cur.execute("UNLISTEN " + ident(cur, ch))
        ch = now


def main():
    host, port, role, out, ready = sys.argv[1:6]
    args = [ch for ch in sys.argv[6:] if ch]  # one the test could not learn is ""
    conn = psycopg2.connect(host=host, port=port, user=role, dbname="postgres")
    conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    cur = conn.cursor()
    followed = {}  # channel -> secret, for "follow:NAME"
    for ch in args + [BARRIER]:
        if ch.startswith("follow:"):
            followed[follow(cur, ch[7:])] = ch[7:]
        else:
            cur.execute("LISTEN " + ident(cur, ch))
    open(ready, "w").close()
    deadline = time.monotonic() + 120
    with open(out, "w") as f:
        while time.monotonic() < deadline:
            if select.select([conn], [], [], 1) == ([], [], []):
                continue
            conn.poll()
            while conn.notifies:
                n = conn.notifies.pop(0)
                if n.channel == BARRIER:
                    return 0
                if n.channel in followed:
                    secret = followed.pop(n.channel)
                    cur.execute("UNLISTEN " + ident(cur, n.channel))
                    followed[follow(cur, secret)] = secret
                    cur.execute("SELECT keysmith.get_secret(%s)", (secret,))
                    f.write("%s\t%s\t%s\n" % (secret, n.payload, cur.fetchone()[0]))
                else:
                    f.write("%s\t%s\n" % (n.channel, n.payload))
                f.flush()
    print("notify_listen.py: no barrier within 120 s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
