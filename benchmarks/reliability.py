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
5. Replicas behind nginx: three replicas sharing a fresh PostgreSQL schema, behind Debian's nginx
   running deploy/nginx/nginx.conf (upstreams, user, pid and logs swapped for local ones). A few
   threads drive gradients (by expression and by model name), registrations (with an
   Idempotency-Key) and reads through nginx for 60 s (15 s with --quick); one replica is killed
   with SIGKILL a third of the way in and restarted halfway. Reports failed requests, whether
   every acknowledged registration is on every replica, and what the restarted replica served.
   Needs nginx and PostgreSQL on 127.0.0.1 (NABLA_TEST_POSTGRES_URL); only loopback is contacted.

    python benchmarks/reliability.py --only replicas     # just scenario 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
from _server import free_port, start_server, stop, wait_until_live

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    """Resident memory of the server and every process under it (its compute workers)."""
    total = 0
    for process in _process_tree(pid):
        try:
            with open(f"/proc/{process}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except FileNotFoundError:  # exited meanwhile
            pass
    return total / 1024


def _process_tree(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                queue += [int(child) for child in (task / "children").read_text().split()]
            except FileNotFoundError:
                pass
    return found


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


# ----------------------------------------------------------------------------- 5. replicas behind nginx

PG_URL = os.environ.get("NABLA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
X = [0.5, -1.0, 2.0]
W = [1.0, 2.0, 3.0]
EXPR_GRAD = 2 * np.tanh(X) * (1 - np.tanh(X) ** 2)  # d/dx sum(tanh(x) ** 2)
MODEL_GRAD = 2 * np.array(W) * np.array(X)  # d/dx sum(w * x ** 2)
_LOG_LINE = re.compile(r'"[^"]*" (\d{3}) .*upstream=(.*?) upstream_status=.* msec=([\d.]+)')


def nginx_config(source: str, replica_ports: list[int], listen_port: int, prefix: Path) -> str:
    """deploy/nginx/nginx.conf made to run here: the upstream's server line becomes one line per
    local replica (same parameters, without DNS `resolve`), no resolver, the current user, and the
    pid, logs and temporary files under `prefix`. Each change must match exactly once, so an edit
    of the real file that this does not understand fails loudly instead of testing something else."""

    def sub(pattern: str, replace: str | Callable[[re.Match], str], text: str) -> str:
        # A function as the replacement: paths must not be read as regex escapes.
        out, n = re.subn(pattern, replace if callable(replace) else lambda m: replace, text, flags=re.M)
        if n != 1:
            raise SystemExit(f"{NGINX_CONF}: expected one match of {pattern!r}, found {n}")
        return out

    def servers(m: re.Match) -> str:
        params = " ".join(p for p in m.group(3).split() if p != "resolve")
        return "\n".join(f"{m.group(1)}server 127.0.0.1:{port} {params};" for port in replica_ports)

    import pwd

    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else "# user: not root, no switch"
    conf = sub(r"^user\s+[^;]+;", user, source)  # as root, workers run as this user (not `nginx`)
    conf = sub(r"^pid\s+[^;]+;", f"pid {prefix}/nginx.pid;", conf)
    conf = sub(r"^([ \t]*)resolver[ \t][^;]*;", lambda m: f"{m.group(1)}# resolver: local replicas need none", conf)
    conf = sub(r"^([ \t]*)server[ \t]+([^\s;{]+)((?:[ \t]+[^\s;]+)*)[ \t]*;", servers, conf)
    conf = sub(r"^([ \t]*)listen[ \t]+[^;]+;", lambda m: f"{m.group(1)}listen 127.0.0.1:{listen_port};", conf)
    conf = sub(r"^([ \t]*)access_log[ \t]+\S+", lambda m: f"{m.group(1)}access_log {prefix}/access.log", conf)
    conf = sub(r"^([ \t]*)error_log[ \t]+\S+", lambda m: f"{m.group(1)}error_log {prefix}/error.log", conf)
    temp = "".join(f"\n    {kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                            "uwsgi", "scgi"))
    return sub(r"^http[ \t]*\{", lambda m: m.group(0) + temp, conf)


class _Tally:
    """Counts and a few examples of failures, shared by the load threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.examples: list[str] = []
        self.latencies_ms: list[float] = []
        self.acknowledged: list[tuple[str, int, int]] = []  # (name, version, the i in its expression)

    def add(self, key: str, example: str | None = None) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            if example is not None and len(self.examples) < 20:
                self.examples.append(example)


def _gradients(base: str, k: int, end: float, tally: _Tally) -> None:
    routes = [("/v1/grad", {"function": {"expr": "sum(tanh(x) ** 2)", "params": ["x"]}, "args": [X]}, EXPR_GRAD),
              ("/v1/models/topo_quad/grad", {"args": [X]}, MODEL_GRAD),
              ("/v1/grad", {"function": {"model": "topo_quad"}, "args": [X]}, MODEL_GRAD)]
    with httpx.Client(timeout=30) as c:
        for i in range(1_000_000):
            if time.monotonic() >= end:
                return
            path, body, expected = routes[(i + k) % len(routes)]
            t0 = time.perf_counter()
            try:
                r = c.post(base + path, json=body)
            except httpx.HTTPError as e:
                tally.add("gradient_failed", f"{path}: {e!r}")
                continue
            with tally.lock:
                tally.latencies_ms.append((time.perf_counter() - t0) * 1e3)
            if r.status_code != 200:
                tally.add("gradient_failed", f"{path}: {r.status_code} {r.text[:200]}")
            elif not np.allclose(r.json()["grad"], expected, rtol=1e-4, atol=1e-6):
                tally.add("gradient_failed", f"{path}: wrong gradient {r.json()['grad']}")
                tally.add("gradient_wrong")
            else:
                tally.add("gradient_ok")
            time.sleep(0.002)


def _registrations(base: str, end: float, tally: _Tally) -> None:
    with httpx.Client(timeout=30) as c:
        for i in range(1, 1_000_000):
            if time.monotonic() >= end:
                return
            name = f"topo_reg_{i % 3}"
            body = {"name": name, "function": {"expr": f"sum(x * {i})", "params": ["x"]},
                    "description": f"registration {i}"}
            key = str(uuid.uuid4())  # the same key on every attempt of this registration
            for attempt in range(4):
                try:
                    r: httpx.Response | None = c.post(base + "/v1/models", json=body, headers={"Idempotency-Key": key})
                    problem = f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as e:
                    r, problem = None, repr(e)
                if r is not None and r.status_code in (200, 201):
                    with tally.lock:
                        tally.acknowledged.append((name, r.json()["version"], i))
                    tally.add("registration_ok")
                    if r.status_code == 200:
                        tally.add("registration_replayed")  # a retry found the version already committed
                    break
                if r is not None and r.status_code < 500 and r.status_code != 429:
                    tally.add("registration_failed", f"register {name}: {problem}")
                    break
                tally.add("registration_client_retries", f"register {name} (retried): {problem}")
                time.sleep(0.2 * (attempt + 1))
            else:
                tally.add("registration_failed", f"register {name}: gave up after 4 attempts")
            time.sleep(0.05)


def _reads(base: str, end: float, tally: _Tally) -> None:
    with httpx.Client(timeout=30) as c:
        for i in range(1_000_000):
            if time.monotonic() >= end:
                return
            path = "/v1/models" if i % 2 else "/v1/models/topo_quad"
            try:
                r = c.get(base + path)
                ok, problem = r.status_code == 200, f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as e:
                ok, problem = False, repr(e)
            tally.add("read_ok" if ok else "read_failed", None if ok else f"GET {path}: {problem}")
            time.sleep(0.02)


def _nginx_log(path: Path) -> list[tuple[int, list[str], float]]:
    """(status, upstream addresses tried in order, time) of every request nginx logged."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = _LOG_LINE.search(line)
        if m:
            out.append((int(m.group(1)), [a.strip() for a in m.group(2).split(",")], float(m.group(3))))
    return out


def _start_replicas(ports: list[int], tmp: Path, url: str) -> list[subprocess.Popen]:
    procs = [start_server(port, str(tmp), log_path=str(tmp / f"replica-{port}.log"), wait=False,
                          database_url=url, workers="1") for port in ports]
    for proc, port in zip(procs, ports):
        wait_until_live(proc, port, log_path=str(tmp / f"replica-{port}.log"))
    return procs


def replicas_behind_nginx(quick: bool, postgres_url: str = PG_URL) -> dict:
    duration, kill_at, restart_at = (15.0, 4.0, 6.0) if quick else (60.0, 20.0, 30.0)
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        return {"skipped": "nginx is not installed (apt-get install nginx-light)"}
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    if conninfo_to_dict(postgres_url).get("host") != "127.0.0.1":
        raise SystemExit(f"the PostgreSQL URL must point at 127.0.0.1 (got {postgres_url})")
    try:
        admin = psycopg.connect(postgres_url, autocommit=True, connect_timeout=3)
    except psycopg.Error as e:
        return {"skipped": f"PostgreSQL is not reachable at {postgres_url}: {e}"}
    schema = f"nabla_topology_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    url = postgres_url + ("&" if "?" in postgres_url else "?") + "options=" + quote(f"-csearch_path={schema}")
    tmp = Path(tempfile.mkdtemp(prefix="nabla-topology-"))
    ports = [free_port() for _ in range(3)]
    lb_port = free_port()
    lb = f"http://127.0.0.1:{lb_port}"
    procs: list[subprocess.Popen] = []
    nginx_proc: subprocess.Popen | None = None
    tally = _Tally()
    victim = 1
    try:
        procs = _start_replicas(ports, tmp, url)
        conf = tmp / "nginx.conf"
        conf.write_text(nginx_config(NGINX_CONF.read_text(), ports, lb_port, tmp))
        command = [nginx, "-c", str(conf), "-p", f"{tmp}/", "-e", str(tmp / "error.log")]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
        if checked.returncode != 0:
            raise SystemExit(f"nginx -t refused the generated config:\n{checked.stderr}")
        nginx_proc = subprocess.Popen([*command, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        wait_until_live(nginx_proc, lb_port, timeout=30, log_path=str(tmp / "error.log"))
        with httpx.Client(timeout=30) as c:
            r = c.post(lb + "/v1/models", headers={"Idempotency-Key": str(uuid.uuid4())}, json={
                "name": "topo_quad", "function": {"expr": "sum(w * x ** 2)", "params": ["w", "x"]},
                "constants": {"w": W}, "description": "the topology test's model"})
            if r.status_code != 201:
                raise SystemExit(f"registering the test model through nginx failed: {r.status_code} {r.text}")

        t0 = time.monotonic()
        end = t0 + duration
        threads = [threading.Thread(target=_gradients, args=(lb, k, end, tally)) for k in range(2)]
        threads += [threading.Thread(target=_registrations, args=(lb, end, tally)),
                    threading.Thread(target=_reads, args=(lb, end, tally))]
        for t in threads:
            t.start()
        time.sleep(max(0.0, t0 + kill_at - time.monotonic()))
        procs[victim].send_signal(signal.SIGKILL)  # no shutdown: in-flight requests are cut off
        procs[victim].wait()
        killed_wall = time.time()
        time.sleep(max(0.0, t0 + restart_at - time.monotonic()))
        restart_wall = time.time()
        procs[victim] = start_server(ports[victim], str(tmp), log_path=str(tmp / f"replica-{ports[victim]}.log"),
                                     wait=False, database_url=url, workers="1")
        wait_until_live(procs[victim], ports[victim], log_path=str(tmp / f"replica-{ports[victim]}.log"))
        live_wall = time.time()
        for t in threads:
            t.join(timeout=max(1.0, end - time.monotonic()) + 60)
        load_end_wall = time.time()
        victim_addr = f"127.0.0.1:{ports[victim]}"

        def served_by_victim_since(since: float) -> int:
            return sum(1 for _, addrs, at in _nginx_log(tmp / "access.log") if addrs[-1] == victim_addr and at >= since)

        during_load = served_by_victim_since(live_wall)
        # Passive health may keep the replica out of rotation for up to fail_timeout after its
        # last failure, and a slow restart may end after the load: then a little more traffic
        # (bounded) shows it taking its share again.
        with httpx.Client(timeout=30) as c:
            extra_deadline = time.monotonic() + 15
            for _ in range(500):
                if served_by_victim_since(live_wall) >= 10 or time.monotonic() > extra_deadline:
                    break
                c.post(lb + "/v1/grad", json={"function": {"expr": "sum(x ** 2)", "params": ["x"]}, "args": [X]})
                time.sleep(0.02)
        after_restart = served_by_victim_since(live_wall)

        with httpx.Client(timeout=30) as c:
            direct = f"http://127.0.0.1:{ports[victim]}"
            victim_ready = c.get(direct + "/readyz").status_code
            victim_grad = c.post(direct + "/v1/models/topo_quad/grad", json={"args": [X]})
            victim_grad_ok = victim_grad.status_code == 200 and np.allclose(victim_grad.json()["grad"], MODEL_GRAD,
                                                                            rtol=1e-4)
            time.sleep(1.5)  # past the replicas' registry refresh interval (1 s by default)
            acknowledged: dict[str, set[int]] = {}
            for name, version, _ in tally.acknowledged:
                acknowledged.setdefault(name, set()).add(version)
            missing = {}
            unacknowledged = 0
            for port in ports:
                lost = 0
                for name, versions in acknowledged.items():
                    r = c.get(f"http://127.0.0.1:{port}/v1/models/{name}")
                    stored = set(r.json().get("versions", [])) if r.status_code == 200 else set()
                    lost += len(versions - stored)
                    if port == ports[0]:
                        unacknowledged += len(stored - versions)
                missing[str(port)] = lost
            # Each acknowledged version holds its own registration's function: ask a random replica.
            mismatched = 0
            sample = random.Random(0).sample(tally.acknowledged, min(30, len(tally.acknowledged)))
            for name, version, i in sample:
                port = random.choice(ports)
                r = c.post(f"http://127.0.0.1:{port}/v1/models/{name}/value", json={"args": [[1.0, 2.0]],
                                                                                    "version": version})
                if r.status_code != 200 or abs(r.json()["value"] - 3.0 * i) > 1e-3 * max(1.0, 3.0 * i):
                    mismatched += 1
        log = _nginx_log(tmp / "access.log")
        served: dict[str, int] = {}
        for _, addrs, _ in log:
            served[addrs[-1]] = served.get(addrs[-1], 0) + 1
        latencies = sorted(tally.latencies_ms) or [float("nan")]
        counts = tally.counts
        return {
            "seconds": duration, "killed_at_s": kill_at, "restarted_at_s": restart_at,
            "replicas": len(ports), "victim_port": ports[victim],
            "victim_down_s": round(restart_wall - killed_wall, 1),
            "restart_until_live_s": round(live_wall - restart_wall, 2),
            "gradient_requests": counts.get("gradient_ok", 0) + counts.get("gradient_failed", 0),
            "gradient_failed": counts.get("gradient_failed", 0),
            "gradient_wrong": counts.get("gradient_wrong", 0),
            "gradient_p50_ms": round(statistics.median(latencies), 1),
            "gradient_p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1),
            "gradient_max_ms": round(latencies[-1], 1),
            "registrations_acknowledged": len(tally.acknowledged),
            "registrations_replayed": counts.get("registration_replayed", 0),
            "registration_client_retries": counts.get("registration_client_retries", 0),
            "registrations_failed": counts.get("registration_failed", 0),
            "reads": counts.get("read_ok", 0) + counts.get("read_failed", 0),
            "reads_failed": counts.get("read_failed", 0),
            "acknowledged_missing_per_replica": missing,
            "versions_without_acknowledgement": unacknowledged,
            "content_checked": len(sample), "content_mismatched": mismatched,
            "nginx_requests": len(log),
            "nginx_retried_on_another_replica": sum(1 for _, addrs, _ in log if len(addrs) > 1),
            "nginx_5xx": sum(1 for status, _, _ in log if status >= 500),
            "served_per_replica": served,
            "victim_answers_directly": victim_ready == 200 and victim_grad_ok,
            "victim_served_through_nginx_after_restart": after_restart,
            "victim_served_during_load_after_restart": during_load,
            "load_seconds_after_victim_live": round(max(0.0, load_end_wall - live_wall), 1),
            "failure_examples": tally.examples,
        }
    finally:
        if nginx_proc is not None and nginx_proc.poll() is None:
            nginx_proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then the master exits
            try:
                nginx_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx_proc.kill()
                nginx_proc.wait()
        for proc in procs:
            stop(proc)
        try:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            admin.close()
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["single", "replicas"],
                        help="single: scenarios 1-4 on one server; replicas: scenario 5")
    args = parser.parse_args(argv)
    report: dict = {}
    if args.only != "replicas":
        port = free_port()
        base = f"http://127.0.0.1:{port}"
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
    if args.only != "single":
        report["replicas_behind_nginx"] = replicas_behind_nginx(args.quick)
    print(json.dumps(report, indent=2, default=str))

if __name__ == "__main__":
    main()
