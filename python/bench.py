"""Calls per second of ``add`` from Python: the ``ipc`` client against the
Rust ``hello-server`` (its Calculator), and Pyro5 doing the same work.

    cargo build --release -p ipc-examples --bin hello-server
    python3 -m venv /tmp/pybench && /tmp/pybench/bin/pip install ./python Pyro5
    /tmp/pybench/bin/python python/bench.py

Scenarios, each run for ``--seconds`` per round, ``--rounds`` rounds with
the order rotated, medians reported:

* sequential: one client, one call at a time (a sync ``ipc`` client; one
  Pyro5 proxy);
* pipelined: 64 calls in flight on one connection (``ipc.aio`` with 64
  tasks). Pyro5 proxies carry one call at a time, so its 64 in flight are 64
  threads with a proxy each (its server's thread pool is 80 wide).

Pyro5 is needed only here (``pip install Pyro5``); the ``ipc`` package never
imports it. The Pyro5 server runs in a child process, as the Rust server
does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import ipc  # noqa: E402
import ipc.aio  # noqa: E402

IN_FLIGHT = 64


# --- the Pyro5 side -----------------------------------------------------------


def serve_pyro() -> None:
    """Child process: a Pyro5 daemon exposing ``Calculator.add``; prints its URI."""
    import Pyro5.api
    from Pyro5 import config  # an object in Pyro5's package, not a module

    config.SERVERTYPE = "thread"
    config.THREADPOOL_SIZE = 80

    @Pyro5.api.expose
    class Calculator:
        def add(self, a: int, b: int) -> int:
            return a + b

    daemon = Pyro5.api.Daemon(host="127.0.0.1")
    uri = daemon.register(Calculator(), "Calculator")
    print(uri, flush=True)
    daemon.requestLoop()


def pyro_sequential(uri: str, seconds: float) -> float:
    import Pyro5.api

    with Pyro5.api.Proxy(uri) as calc:
        calc.add(1, 2)
        n = 0
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            for i in range(100):
                calc.add(i, 1)
            n += 100
        return n / (time.perf_counter() - started)


def pyro_pipelined(uri: str, seconds: float) -> float:
    import Pyro5.api

    counts = [0] * IN_FLIGHT
    start = threading.Barrier(IN_FLIGHT + 1)
    stop = threading.Event()

    def worker(k: int) -> None:
        with Pyro5.api.Proxy(uri) as calc:
            calc.add(1, 2)
            start.wait()
            n = 0
            while not stop.is_set():
                calc.add(k, n)
                n += 1
            counts[k] = n

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(IN_FLIGHT)]
    for t in threads:
        t.start()
    start.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


# --- the ipc side --------------------------------------------------------------


def ipc_sequential(addr: str, seconds: float) -> float:
    with ipc.connect(addr) as client:
        calc = client.get_exposed_object("Calculator")
        calc.add(1, 2)
        n = 0
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            for i in range(100):
                calc.add(i, 1)
            n += 100
        return n / (time.perf_counter() - started)


def ipc_pipelined(addr: str, seconds: float) -> float:
    async def run() -> float:
        async with ipc.aio.connect(addr) as client:
            calc = await client.get_exposed_object("Calculator")
            await calc.add(1, 2)
            stop = False
            counts = [0] * IN_FLIGHT

            async def worker(k: int) -> None:
                n = 0
                while not stop:
                    await calc.add(k, n)
                    n += 1
                counts[k] = n

            tasks = [asyncio.ensure_future(worker(k)) for k in range(IN_FLIGHT)]
            started = time.perf_counter()
            await asyncio.sleep(seconds)
            stop = True
            await asyncio.gather(*tasks)
            return sum(counts) / (time.perf_counter() - started)

    return asyncio.run(run())


# --- servers and the run ---------------------------------------------------------


def find_hello_server(given: Optional[str]) -> str:
    if given:
        return given
    root = os.path.dirname(HERE)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    path = os.path.join(target, "release", "hello-server")
    if os.path.exists(path):
        return path
    found = shutil.which("hello-server")
    if found:
        return found
    sys.exit(
        "bench.py: no hello-server binary: run `cargo build --release -p ipc-examples "
        "--bin hello-server` (or pass --hello-server PATH, or --addr of a running one)"
    )


def start(command: List[str], prefix: str = "") -> "tuple[subprocess.Popen[str], str]":
    """Starts a server process and returns it with the first line it prints
    (after ``prefix``): its address or URI."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=None, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line or not line.startswith(prefix):
        proc.kill()
        sys.exit(f"bench.py: {command[0]} said {line!r}")
    return proc, line[len(prefix) :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-pyro", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--addr", help="an ipc server already serving Calculator (default: start hello-server)")
    parser.add_argument("--hello-server", help="the hello-server binary (default: target/release/hello-server)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per scenario and round (3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, order rotated (3)")
    args = parser.parse_args()
    if args.serve_pyro:
        serve_pyro()
        return
    try:
        import Pyro5  # noqa: F401
    except ImportError:
        sys.exit("bench.py: Pyro5 is not installed here: pip install Pyro5 (in a venv)")

    procs = []
    try:
        addr = args.addr
        if addr is None:
            server, addr = start([find_hello_server(args.hello_server), "--addr", "127.0.0.1:0"], "listening on ")
            procs.append(server)
        pyro, uri = start([sys.executable, os.path.abspath(__file__), "--serve-pyro"])
        procs.append(pyro)

        scenarios: Dict[str, Callable[[], float]] = {
            "ipc sequential": lambda: ipc_sequential(addr, args.seconds),
            "Pyro5 sequential": lambda: pyro_sequential(uri, args.seconds),
            f"ipc pipelined ({IN_FLIGHT} in flight)": lambda: ipc_pipelined(addr, args.seconds),
            f"Pyro5 pipelined ({IN_FLIGHT} threads)": lambda: pyro_pipelined(uri, args.seconds),
        }
        results: Dict[str, List[float]] = {name: [] for name in scenarios}
        names = list(scenarios)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                rate = scenarios[name]()
                results[name].append(rate)
                print(f"round {r + 1}: {name:34} {rate:10.0f} calls/s", file=sys.stderr, flush=True)
        median = {name: statistics.median(rates) for name, rates in results.items()}
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.rounds} rounds of {args.seconds:g} s, medians")
        print("| scenario | calls/s | µs/call |")
        print("|---|---:|---:|")
        for name, rate in median.items():
            print(f"| {name} | {rate:.0f} | {1e6 / rate:.1f} |")
        seq = median["ipc sequential"] / median["Pyro5 sequential"]
        pipe = median[names[2]] / median[names[3]]
        print(f"\nipc/Pyro5: sequential {seq:.2f}x (target >= 2), pipelined {pipe:.2f}x (target >= 5)")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
