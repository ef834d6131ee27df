"""Poll GET /livez every INTERVAL ms and print one line per poll: `<monotonic s> <latency ms> <outcome>`.

Run by tests/hostile/conftest.py as a separate process, so that what the test process does (building
large request bodies, parsing answers) can never delay a poll and be mistaken for server latency.
CLOCK_MONOTONIC is system-wide, so the timestamps line up with the test process's own.

Each poll opens a fresh connection (as a Kubernetes probe does), so the accept, the request and the
answer are all measured. `outcome` is `ok`, or `status=<code>` / `error=<exception name>`.
Stops when stdin closes or on SIGTERM.

usage: python _livez_probe.py <base url> <interval ms> <timeout s>
"""

from __future__ import annotations

import http.client
import signal
import sys
import threading
import time
from urllib.parse import urlsplit


def main() -> int:
    url, interval_ms, timeout_s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    out = sys.stdout
    next_at = time.monotonic()
    while not stop.is_set():
        start = time.monotonic()
        outcome = "ok"
        try:
            conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
            try:
                conn.request("GET", "/livez", headers={"Connection": "close"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    outcome = f"status={response.status}"
            finally:
                conn.close()
        except Exception as e:  # noqa: BLE001 - every failure is a failed poll, reported by name
            outcome = f"error={type(e).__name__}"
        latency_ms = (time.monotonic() - start) * 1000
        out.write(f"{start:.6f} {latency_ms:.3f} {outcome}\n")
        out.flush()
        next_at += interval_ms / 1000
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            next_at = time.monotonic()  # a slow poll does not cause a burst of catch-up polls
    return 0


if __name__ == "__main__":
    sys.exit(main())
