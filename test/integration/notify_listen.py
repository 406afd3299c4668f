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
# usage: notify_listen.py HOST PORT ROLE OUT READY CHANNEL...
import select
import sys
import time

import psycopg2
import psycopg2.extensions

BARRIER = "ks_test_barrier"


def main():
    host, port, role, out, ready = sys.argv[1:6]
    channels = [ch for ch in sys.argv[6:] if ch]  # one the test could not learn is ""
    conn = psycopg2.connect(host=host, port=port, user=role, dbname="postgres")
    conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    cur = conn.cursor()
    for ch in channels + [BARRIER]:
        cur.execute("LISTEN " + psycopg2.extensions.quote_ident(ch, cur))
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
                f.write("%s\t%s\n" % (n.channel, n.payload))
                f.flush()
    print("notify_listen.py: no barrier within 120 s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
