"""Load test of `groundrt serve` on loopback: N concurrent clients, throughput and latency with
dynamic batching on and off, beside the in-process Grounder on the same image and caption.

    .venv-serve/bin/python benchmarks/serve_load.py --clients 4 --requests 25

For each setting the server is started as its own process (`groundrt serve`, the CLI a user
runs), each client thread sends `--requests` requests one after another with its own
connection (gRPC by default), and the run stops after `--max-seconds` whatever is left. Rows:
requests done, errors, throughput (requests/s), p50 / p99 latency (ms, client side), and the
mean batch the server ran (Triton's nv_inference_request_success / nv_inference_exec_count).
All requests send the same PNG, so they have one shape and the dynamic batcher can gather
them. Needs the [serve] extra.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from groundrt.runtime.bench import DEFAULT_CAPTION, percentile, sample_image
from groundrt.runtime.client import GroundrtClient, ServerError
from groundrt.runtime.grounder import Grounder


def metric(text: str, name: str) -> float:
    """The groundrt model's value of a Prometheus counter in /metrics text."""
    for line in text.splitlines():
        if line.startswith(name + "{") and 'model="groundrt' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def read_metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def start_server(args: argparse.Namespace, batching: bool, ports: tuple[int, int, int],
                 log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "groundrt.runtime.cli", "serve", "--http-port",
               str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]),
               "--threads", str(args.threads), "--max-batch", str(args.max_batch)]
    if args.model:
        command += ["--model", args.model]
    if not batching:
        command.append("--no-batching")
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"{'grpc' if args.grpc else 'http'}://127.0.0.1:{ports[1] if args.grpc else ports[0]}"
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"groundrt serve exited with {server.returncode}: see {log}")
        if GroundrtClient(url).ready():
            return server
        time.sleep(0.5)
    server.terminate()
    raise SystemExit(f"groundrt serve was not ready in {args.start_timeout} s: see {log}")


def load(url: str, image: bytes, caption: str, clients: int, requests: int,
         max_seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + max_seconds

    def client_loop() -> None:
        client = GroundrtClient(url, timeout_s=max_seconds)
        for _ in range(requests):
            if time.perf_counter() > stop_at:
                return
            tick = time.perf_counter()
            try:
                client.ground(image, caption)
            except ServerError as exc:
                with lock:
                    errors.append(str(exc))
                continue
            with lock:
                latencies.append((time.perf_counter() - tick) * 1e3)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"done": len(latencies), "errors": errors, "seconds": elapsed,
            "throughput": len(latencies) / elapsed, "latencies": latencies}


def in_process(args: argparse.Namespace, image: np.ndarray, caption: str) -> dict:
    grounder = Grounder(args.model, backend="onnxruntime", threads=args.threads)
    grounder.ground(image, caption)  # warm-up (and the caption cached, as on the server)
    encoded = cv2.imencode(".png", image)[1].tobytes()
    latencies = []
    start = time.perf_counter()
    for _ in range(args.requests):
        tick = time.perf_counter()
        grounder.ground(encoded, caption)  # decoded per request, as the server does
        latencies.append((time.perf_counter() - tick) * 1e3)
    elapsed = time.perf_counter() - start
    return {"done": len(latencies), "errors": [], "seconds": elapsed,
            "throughput": len(latencies) / elapsed, "latencies": latencies}


def row(name: str, result: dict, batch: str) -> str:
    lat = result["latencies"] or [float("nan")]
    return (f"| {name:<40} | {result['done']:>5} | {len(result['errors']):>6} | "
            f"{result['throughput']:>8.1f} | {percentile(lat, 0.5):>7.1f} | "
            f"{percentile(lat, 0.99):>7.1f} | {batch:>10} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model package (default: the shipped one)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=25, help="requests per client")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="stop a setting after this long")
    parser.add_argument("--size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    parser.add_argument("--threads", type=int, default=2, help="the server's ORT threads")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--http", dest="grpc", action="store_false", help="HTTP, not gRPC")
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--base-port", type=int, default=18100)
    parser.add_argument("--log-dir", type=Path, default=Path("pred/serve_load"))
    args = parser.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    frame = sample_image(*args.size)
    image = cv2.imencode(".png", frame)[1].tobytes()
    caption = DEFAULT_CAPTION
    print(f"{args.size[0]}x{args.size[1]} PNG ({len(image) / 1e3:.0f} kB), "
          f"{args.clients} clients x {args.requests} requests, "
          f"{'gRPC' if args.grpc else 'HTTP'}, server ORT threads {args.threads}, "
          f"{len(os.sched_getaffinity(0))} CPU(s) for this process and its server")
    print(f"| {'setting':<40} |  done | errors |    req/s | p50 ms  | p99 ms  | mean batch |")
    print("|---|---|---|---|---|---|---|")
    print(row("in process (Grounder.ground, one caller)", in_process(args, frame, caption), "1"),
          flush=True)
    for n, batching in enumerate((True, False)):
        ports = tuple(args.base_port + 3 * n + i for i in range(3))
        server = start_server(args, batching, ports, args.log_dir / f"server{n}.log")
        try:
            url = (f"grpc://127.0.0.1:{ports[1]}" if args.grpc
                   else f"http://127.0.0.1:{ports[0]}")
            GroundrtClient(url).ground(image, caption)  # warm-up
            before = read_metrics(f"http://127.0.0.1:{ports[2]}/metrics")
            result = load(url, image, caption, args.clients, args.requests, args.max_seconds)
            after = read_metrics(f"http://127.0.0.1:{ports[2]}/metrics")
        finally:
            server.terminate()
            server.wait(timeout=60)
        done = (metric(after, "nv_inference_request_success")
                - metric(before, "nv_inference_request_success"))
        runs = metric(after, "nv_inference_exec_count") - metric(before, "nv_inference_exec_count")
        name = (f"serve, dynamic batching (max {args.max_batch})" if batching
                else "serve, no batching")
        print(row(name, result, f"{done / runs:.2f}" if runs else "-"), flush=True)
        for error in dict.fromkeys(result["errors"]):
            print(f"  error: {error}")


if __name__ == "__main__":
    main()
