"""Healthcheck of a rucio/rucio-daemons container: is its daemon doing its rounds?

Rucio's daemons renew a heartbeat row (readable = the daemon's name, hostname = this container's
fully qualified name) in the database on every round; a daemon that is stuck, or has lost its
database, stops renewing it while its process lives on. Healthy: a heartbeat of $RUCIO_DAEMON
from this host renewed within the last $RUCIO_HEARTBEAT_MAX_AGE_S seconds (default 600, the age
after which Rucio itself counts a heartbeat dead).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys

from rucio.core.heartbeat import list_heartbeats


def main() -> int:
    daemon = os.environ["RUCIO_DAEMON"]
    host = socket.getfqdn()
    max_age = dt.timedelta(seconds=int(os.environ.get("RUCIO_HEARTBEAT_MAX_AGE_S") or 600))
    # Rucio stores naive UTC. dt.timezone.utc, not dt.UTC: the rucio images' Python may be 3.9.
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # noqa: UP017
    mine = [b for b in list_heartbeats() if b["hostname"] == host and b["readable"].startswith(daemon)]
    fresh = [b for b in mine if now - b["updated_at"] <= max_age]
    if fresh:
        return 0
    last = max((b["updated_at"] for b in mine), default=None)
    print(f"{daemon} on {host}: no heartbeat within {max_age} (last: {last or 'never'})", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
