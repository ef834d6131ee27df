"""Large arrays on the wire: a million float64 values through a gradient, per encoding.

    python benchmarks/codec_bench.py                  # 1e6 float64, 15 interleaved rounds
    python benchmarks/codec_bench.py --quick          # tiny, to check it runs
    python benchmarks/codec_bench.py --baseline REV   # the "before" of the in-process table

Two tables, each measured side by side in one run, rounds interleaved, medians reported:

1. Over HTTP on loopback against a running `nabla serve`: the gradient of sum(x ** 2) for x of
   n float64 values, sent and answered as JSON lists of numbers, as JSON with base64 `$array`
   leaves, and as MessagePack with bin leaves (Content-Type and Accept application/msgpack) —
   each beside `POST /v1/echo` of the very same request bytes (the framework's floor for moving
   them), and through the Python client (`Client()` and `Client(encoding="msgpack")`). Every
   gradient is checked against 2x before timing.
2. In process, what the service spends on JSON lists: parsing and decoding the request into an
   array, and writing the answer, in this tree and in the tree at git revision `--baseline` (by
   default the one before JSON's fast paths and MessagePack were added), each in a process of
   its own, alternately; plus MessagePack's decoding and encoding for comparison.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import httpx
import msgpack
import numpy as np
import orjson
from _server import free_port, start_server, stop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client import Client  # noqa: E402

BASELINE = "a566f7e"  # the commit before this benchmark (and what it measures) was added
FUNCTION = {"expr": "sum(x ** 2)", "params": ["x"]}
MSGPACK = "application/msgpack"


def bodies(x: np.ndarray) -> dict[str, tuple[bytes, dict[str, str]]]:
    """The gradient request for x in each encoding, with the headers that ask for it both ways."""
    leaf = {"dtype": "float64", "shape": list(x.shape)}
    return {
        "JSON lists": (orjson.dumps({"function": FUNCTION, "args": [x]}, option=orjson.OPT_SERIALIZE_NUMPY),
                       {"content-type": "application/json"}),
        "JSON base64": (orjson.dumps({"function": FUNCTION, "encoding": "base64",
                                      "args": [{"$array": {**leaf, "data": base64.b64encode(x.tobytes()).decode()}}]}),
                        {"content-type": "application/json"}),
        "MessagePack": (msgpack.packb({"function": FUNCTION, "args": [{"$array": {**leaf, "data": x.tobytes()}}]}),
                        {"content-type": MSGPACK, "accept": MSGPACK}),
    }


def gradient_of(name: str, content: bytes) -> np.ndarray:
    if name == "MessagePack":
        spec = msgpack.unpackb(content)["grad"]["$array"]
        return np.frombuffer(spec["data"], "<f8").reshape(spec["shape"])
    grad = orjson.loads(content)["grad"]
    if name == "JSON base64":
        return np.frombuffer(base64.b64decode(grad["$array"]["data"]), "<f8")
    return np.asarray(grad)


def timed(send: Callable[[], object]) -> float:
    start = time.perf_counter()
    send()
    return time.perf_counter() - start


def http_table(x: np.ndarray, rounds: int) -> tuple[list[dict], dict[str, float]]:
    port = free_port()
    # JSON lists of a million doubles take about 20 MB; the other limits are the defaults.
    proc = start_server(port, tempfile.mkdtemp(), max_body_bytes=64 * 1024 * 1024)
    url = f"http://127.0.0.1:{port}"
    try:
        http = httpx.Client(base_url=url, timeout=120)
        requests = bodies(x)
        for name, (content, headers) in requests.items():  # check, and warm every path up
            response = http.post("/v1/grad", content=content, headers=headers)
            response.raise_for_status()
            assert np.array_equal(gradient_of(name, response.content), 2 * x), name
            assert http.post("/v1/echo", content=content, headers=headers).content == content
        clients = {"Python client, JSON": Client(url), "Python client, MessagePack": Client(url, encoding="msgpack")}
        for name, c in clients.items():
            assert np.array_equal(c.grad("sum(x ** 2)", params=["x"])(x), 2 * x), name
        times: dict[str, list[float]] = {}
        for round_ in range(rounds):
            for name, (content, headers) in requests.items():
                pair = [("echo", "/v1/echo"), ("grad", "/v1/grad")]
                for kind, path in pair if round_ % 2 == 0 else pair[::-1]:  # echo first in every other round
                    def send(p: str = path, b: bytes = content, h: dict[str, str] = headers) -> None:
                        http.post(p, content=b, headers=h).raise_for_status()
                    times.setdefault(f"{name} {kind}", []).append(timed(send))
            for name, c in clients.items():
                times.setdefault(name, []).append(timed(lambda c=c: c.grad("sum(x ** 2)", params=["x"])(x)))
        for c in clients.values():
            c.close()
        http.close()
    finally:
        stop(proc)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    rows = [{"name": name, "bytes": len(content), "echo": med[f"{name} echo"], "grad": med[f"{name} grad"]}
            for name, (content, _) in requests.items()]
    return rows, {k: v for k, v in med.items() if k.startswith("Python client")}


# The measurement each tree runs in a process of its own: one command per line on stdin ("round"
# or "quit"), one JSON line of milliseconds per phase on stdout. It uses only what both trees have.
PHASES = textwrap.dedent('''
    import json, sys, tempfile, time
    import numpy as np, orjson
    from service.json_trees import decode_tree, dumps
    from service.pipeline import Pipeline
    from service.settings import Settings

    n = int(sys.argv[1])
    x = np.random.default_rng(0).standard_normal(n)
    raw = orjson.dumps({"function": {"expr": "sum(x ** 2)", "params": ["x"]}, "args": [x]},
                       option=orjson.OPT_SERIALIZE_NUMPY)
    pipeline = Pipeline(Settings(data_dir=tempfile.mkdtemp(), log_level="warning"))
    answer = {"grad": 2 * x, "meta": {"transform": "grad", "dtype": "float64"}}
    try:
        import msgpack
        from service import msgpack_codec
        packed = msgpack.packb({"function": {"expr": "sum(x ** 2)", "params": ["x"]},
                                "args": [{"$array": {"dtype": "float64", "shape": [n], "data": x.tobytes()}}]})
    except ImportError:
        msgpack_codec = None
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "round":
            break
        out = {}
        t = time.perf_counter()
        body = pipeline.parse(raw)
        out["parse"] = time.perf_counter() - t
        t = time.perf_counter()
        arr = decode_tree(body["args"][0], np.dtype("float64"), "x", pipeline.tree_budget())
        out["decode"] = time.perf_counter() - t
        t = time.perf_counter()
        text = dumps(answer)
        out["encode"] = time.perf_counter() - t
        assert np.array_equal(arr, x) and np.array_equal(orjson.loads(text)["grad"], 2 * x)
        del body, arr, text  # freed here: freeing a million parsed floats is no phase's time
        if msgpack_codec is not None:
            t = time.perf_counter()
            body = pipeline.parse(packed, msgpack_codec.MSGPACK)
            arr = decode_tree(body["args"][0], np.dtype("float64"), "x", pipeline.tree_budget())
            out["msgpack decode"] = time.perf_counter() - t
            t = time.perf_counter()
            msgpack_codec.dumps(answer)
            out["msgpack encode"] = time.perf_counter() - t
            assert np.array_equal(arr, x)
            del body, arr
        print(json.dumps({k: v * 1e3 for k, v in out.items()}), flush=True)
''')


def start_phases(tree: Path, n: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", PHASES, str(n)], cwd=tree, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(tree)})
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"the measurement did not start in {tree}")
    return proc


def in_process_table(n: int, rounds: int, baseline: str) -> tuple[dict[str, dict[str, float]], str | None]:
    """Median milliseconds per phase for this tree ("after") and the baseline ("before")."""
    trees = {"after": ROOT}
    skipped = None
    before_dir = Path(tempfile.mkdtemp())
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", baseline], capture_output=True)
    if archive.returncode == 0:
        subprocess.run(["tar", "-x", "-C", str(before_dir)], input=archive.stdout, check=True)
        trees = {"before": before_dir, **trees}
    else:
        skipped = f"no baseline: git archive {baseline} failed ({archive.stderr.decode(errors='replace').strip()})"
    procs = {side: start_phases(tree, n) for side, tree in trees.items()}
    times: dict[str, dict[str, list[float]]] = {side: {} for side in procs}
    try:
        for _ in range(rounds):
            for side, proc in procs.items():  # alternately, so load on the machine falls on both
                proc.stdin.write("round\n")
                proc.stdin.flush()
                for phase, ms in json.loads(proc.stdout.readline()).items():
                    times[side].setdefault(phase, []).append(ms)
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
    return {side: {k: statistics.median(v) for k, v in phases.items()} for side, phases in times.items()}, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="float64 values per request")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="10,000 values, 3 rounds")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the in-process 'before' column")
    args = parser.parse_args()
    n, rounds = (10_000, 3) if args.quick else (args.n, args.rounds)
    x = np.random.default_rng(0).standard_normal(n)

    rows, client = http_table(x, rounds)
    print(f"Gradient of sum(x ** 2), x: {n:,} float64, over HTTP on loopback (median of {rounds} interleaved "
          "rounds; echo: POST /v1/echo of the same request bytes)\n")
    print("| encoding | request bytes | echo ms | gradient ms | gradient / echo |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['bytes']:,} | {r['echo']:.1f} | {r['grad']:.1f} | {r['grad'] / r['echo']:.2f}x |")
    for name, ms in client.items():
        print(f"| {name} (c.grad, encoding and decoding included) | | | {ms:.1f} | |")
    by = {r["name"]: r for r in rows}
    print()
    binary = by["MessagePack"]
    print(f"- MessagePack gradient / echo of the same bytes: {binary['grad'] / binary['echo']:.2f}x (goal: at most 2x)")
    print(f"- JSON lists / MessagePack gradient: {by['JSON lists']['grad'] / by['MessagePack']['grad']:.1f}x; "
          f"JSON base64 / MessagePack: {by['JSON base64']['grad'] / by['MessagePack']['grad']:.1f}x")

    medians, skipped = in_process_table(n, rounds if not args.quick else 3, args.baseline)
    print(f"\nIn process, JSON lists of {n:,} float64 (median ms of {rounds if not args.quick else 3} alternating "
          f"rounds; before: git revision {args.baseline})\n")
    sides = list(medians)
    print("| phase | " + " | ".join(sides) + (" | before / after |" if "before" in medians else " |"))
    print("|---|" + "---|" * len(sides) + ("---|" if "before" in medians else ""))
    for phase in ("parse", "decode", "encode"):
        cells = " | ".join(f"{medians[s][phase]:.1f}" for s in sides)
        ratio = f" | {medians['before'][phase] / medians['after'][phase]:.1f}x" if "before" in medians else ""
        print(f"| {phase} | {cells}{ratio} |")
    totals = {s: sum(medians[s][p] for p in ("parse", "decode", "encode")) for s in sides}
    ratio = f" | {totals['before'] / totals['after']:.1f}x" if "before" in medians else ""
    print("| decode + encode (parse, decode, encode) | " + " | ".join(f"{totals[s]:.1f}" for s in sides)
          + f"{ratio} |")
    after = medians["after"]
    print(f"| MessagePack decode, encode (this tree) | {after['msgpack decode']:.1f}, {after['msgpack encode']:.1f} |"
          + " |" * (len(sides) - 1 + ("before" in medians)))
    print()
    if skipped:
        print(f"- {skipped}")
    else:
        print(f"- JSON lists, request decode + answer encode: {totals['before'] / totals['after']:.1f}x faster than "
              f"{args.baseline} (goal: at least 3x)")


if __name__ == "__main__":
    main()
