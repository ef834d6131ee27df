"""Reliability checks of a real server process, with numbers (docs/RELIABILITY.md).

    python benchmarks/reliability.py            # about a minute
    python benchmarks/reliability.py --quick

1. Liveness under load: while requests that run into the compute time limit keep every compute
   thread busy, /livez is polled; reports its p50/p99/max latency and how the slow requests ended.
2. Crash safety: several threads register models as fast as they can; the server is killed with
   SIGKILL mid-stream and restarted on the same SQLite file. Every registration the server
   acknowledged must still be there, whole (its function and constants load and compute).
3. Hostile inputs: a batch of malformed and oversized requests; every answer must be a 4xx
   with an error body, and the server must stay up.
4. Memory: resident memory after warm-up and after many more requests of the same kinds.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
import threading
import time

import httpx
from _server import free_port, start_server


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


SLOW = {"function": {"expr": "x = ones((1000, 1000))\ny = x\n" + "y = tanh(y @ x / 1000)\n" * 40 + "sum(y)",
                     "params": []}, "args": []}


def liveness(base: str, seconds: float) -> dict:
    outcomes: list[int] = []
    stop = time.time() + seconds

    def slow_worker() -> None:
        with httpx.Client(timeout=120) as c:
            while time.time() < stop:
                outcomes.append(c.post(f"{base}/v1/value", json=SLOW).status_code)

    threads = [threading.Thread(target=slow_worker) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    latencies = []
    with httpx.Client(timeout=10) as c:
        while time.time() < stop:
            t0 = time.perf_counter()
            c.get(f"{base}/livez")
            latencies.append((time.perf_counter() - t0) * 1e3)
            time.sleep(0.02)
    for t in threads:
        t.join()
    latencies.sort()
    return {"polls": len(latencies), "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[int(0.99 * (len(latencies) - 1))], "max_ms": latencies[-1],
            "slow_requests": len(outcomes), "slow_statuses": sorted(set(outcomes))}


def crash_safety(quick: bool) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    acknowledged: list[tuple[str, int]] = []
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as data:
        proc = start_server(port, data)
        stop = threading.Event()

        def writer(k: int) -> None:
            with httpx.Client(timeout=5) as c:
                i = 0
                while not stop.is_set():
                    name = f"m{k}"
                    body = {"name": name, "function": {"expr": f"sum(x * {i})", "params": ["x", "w"]},
                            "constants": {"w": [float(i)] * 100}, "description": f"writer {k} number {i}"}
                    try:
                        r = c.post(f"{base}/v1/models", json=body)
                    except httpx.HTTPError:
                        return
                    if r.status_code == 201:
                        with lock:
                            acknowledged.append((name, r.json()["version"]))
                    i += 1

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0 if quick else 3.0)
        proc.send_signal(signal.SIGKILL)  # no shutdown, no flush: a crash
        proc.wait()
        stop.set()
        for t in threads:
            t.join()
        proc = start_server(port, data)
        try:
            missing, broken = 0, 0
            with httpx.Client(timeout=30) as c:
                for name, version in acknowledged:
                    r = c.post(f"{base}/v1/models/{name}/value", json={"args": [[1.0, 2.0]], "version": version})
                    if r.status_code == 404:
                        missing += 1
                    elif r.status_code != 200:
                        broken += 1
                versions = {m["name"]: m["version"] for m in c.get(f"{base}/v1/models").json()["models"]
                            if m["source"] == "registry"}
        finally:
            proc.terminate()
            proc.wait()
    per_writer = {name: sum(1 for n, _ in acknowledged if n == name) for name, _ in acknowledged}
    return {"acknowledged": len(acknowledged), "acknowledged_per_model": per_writer,
            "missing_after_crash": missing, "broken_after_crash": broken, "latest_versions_after_restart": versions}


HOSTILE = [
    ("not json", b"{", {}),
    ("not an object", b"[1, 2]", {}),
    ("import", json.dumps({"function": {"expr": "__import__('os')", "params": []}, "args": []}).encode(), {}),
    ("attribute", json.dumps({"function": {"expr": "x.__class__", "params": ["x"]}, "args": [1]}).encode(), {}),
    ("huge intermediate", json.dumps({"function": {"expr": "sum(ones((100000, 1)) * ones((1, 100000)) * x)",
                                                   "params": ["x"]}, "args": [1.0]}).encode(), {}),
    ("deep json", b'{"function": {"model": "rosenbrock"}, "args": [' + b"[" * 5000 + b"]" * 5000 + b"]}", {}),
    ("huge exponent", json.dumps({"function": {"expr": "x ** 10**10", "params": ["x"]}, "args": [2.0]}).encode(), {}),
    ("cycle", json.dumps({"function": {"graph": {"format": "nabla.graph/1", "params": ["x"], "nodes": [
        {"id": "a", "op": "neg", "inputs": ["a"]}], "outputs": ["a"]}}, "args": [1.0]}).encode(), {}),
    ("bad base64", json.dumps({"function": {"model": "rosenbrock"}, "args": [
        {"$array": {"dtype": "float64", "shape": [3], "data": "!!!"}}]}).encode(), {}),
    ("unknown model", json.dumps({"function": {"model": "nope"}, "args": []}).encode(), {}),
    ("order too high", json.dumps({"function": {"model": "rosenbrock"}, "args": [[1.0, 2.0]],
                                   "order": 99}).encode(), {}),
    ("grad of a vector", json.dumps({"function": {"expr": "x", "params": ["x"]}, "args": [[1.0, 2.0]]}).encode(), {}),
]


def hostile(base: str) -> dict:
    statuses = {}
    with httpx.Client(timeout=30) as c:
        for name, body, _ in HOSTILE:
            r = c.post(f"{base}/v1/grad", content=body, headers={"content-type": "application/json"})
            ok = 400 <= r.status_code < 500 and {"type", "message", "detail"} <= set(r.json().get("error", {}))
            statuses[name] = (r.status_code, ok)
        alive = c.get(f"{base}/livez").status_code == 200
    return {"answers": statuses, "all_4xx_with_error_body": all(ok for _, ok in statuses.values()),
            "alive_after": alive}


def memory(base: str, pid: int, requests: int) -> dict:
    bodies = [
        {"function": {"model": "tutorial_logreg"}, "args": [[0.1, 0.2, 0.3], 0.5], "argnums": [0, 1]},
        {"function": {"expr": "sum(tanh(x) ** 2)", "params": ["x"]}, "args": [[0.5, 1.0, 2.0]]},
        {"function": {"model": "rosenbrock"}, "args": [[1.0, 2.0, 3.0]], "dtype": "float64"},
    ]
    with httpx.Client(timeout=30) as c:
        for _ in range(50):
            for b in bodies:
                c.post(f"{base}/v1/grad", json=b)
        warm = rss_mb(pid)
        for i in range(requests):
            c.post(f"{base}/v1/grad", json=bodies[i % len(bodies)])
        after = rss_mb(pid)
    return {"rss_after_warmup_mb": round(warm, 1), f"rss_after_{requests}_more_mb": round(after, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    report: dict = {}
    with tempfile.TemporaryDirectory() as data:
        proc = start_server(port, data, compute_timeout_s="1", compute_threads="2")
        try:
            report["liveness_under_load"] = liveness(base, 3 if args.quick else 10)
            report["hostile_inputs"] = hostile(base)
            report["memory"] = memory(base, proc.pid, 300 if args.quick else 3000)
        finally:
            proc.terminate()
            proc.wait()
    report["crash_safety"] = crash_safety(args.quick)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
