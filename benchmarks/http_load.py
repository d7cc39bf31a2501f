"""A small HTTP/1.1 load generator: the fallback of `decide_http.py` when wrk is unavailable.

It does what `benchmarks/wrk/decide.lua` and `outcome.lua` do (the same body templates and
placeholders, the same arguments after `--`) over keep-alive connections on one asyncio loop, in
a process of its own, and prints the same `WRK_RESULT {...}` line. One Python process reaches
a few thousand requests per second at most, so near that rate it measures itself, not the
server: prefer wrk.

    python benchmarks/http_load.py --script decide --url URL --connections 16 --seconds 10 \
        -- BODY_TEMPLATE API_KEY RUN_PREFIX CUSTOMERS [IDS_OUT]
    python benchmarks/http_load.py --script outcome --url URL --connections 64 --seconds 10 \
        -- BODY_TEMPLATE API_KEY RUN_PREFIX IDS_FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

DECISION_ID = re.compile(rb'"decision_id"\s*:\s*"([^"]+)"')


def request_maker(
    script: str, host: str, args: Sequence[str], connection: int
) -> Callable[[int], bytes]:
    """A function of the request number that returns the request's bytes."""
    template = Path(args[0]).read_text()
    head = f"Host: {host}\r\nContent-Type: application/json\r\nX-API-Key: {args[1]}\r\n"
    prefix = f"{args[2]}-{connection}-"
    if script == "decide":
        path = "/v1/decisions"
        customers = int(args[3])
        rng = random.Random(connection)

        def body(n: int) -> str:
            text = template.replace("__CUSTOMER__", f"bench-customer-{rng.randint(1, customers)}")
            return text.replace("__REQUEST__", f"{prefix}{n}")

    else:
        path = "/v1/outcomes"
        ids = [line for line in Path(args[3]).read_text().splitlines() if line]
        offset = connection * 7919

        def body(n: int) -> str:
            text = template.replace("__DECISION__", ids[(offset + n) % len(ids)])
            return text.replace("__KEY__", f"{prefix}{n}")

    def make(n: int) -> bytes:
        payload = body(n).encode()
        return (
            f"POST {path} HTTP/1.1\r\n{head}Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )

    return make


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    body = b""
    while True:
        size = int((await reader.readline()).strip().split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, body
        body += chunk[:-2]


async def connection_loop(
    number: int,
    host: str,
    port: int,
    make: Callable[[int], bytes],
    deadline: float,
    latencies: list[float],
    errors: dict[str, int],
    ids_out: list[bytes] | None,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    n = 0
    try:
        while time.perf_counter() < deadline:
            n += 1
            data = make(n)
            started = time.perf_counter()
            writer.write(data)
            try:
                status, body = await read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                errors["read"] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            latencies.append(time.perf_counter() - started)
            if status >= 400:
                errors["status"] += 1
            elif ids_out is not None and (match := DECISION_ID.search(body)):
                ids_out.append(match.group(1))
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> dict[str, float]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    latencies: list[float] = []
    errors = {"read": 0, "status": 0}
    collect = args.script == "decide" and len(args.script_args) > 4
    ids: list[bytes] | None = [] if collect else None
    started = time.perf_counter()
    deadline = started + args.seconds
    await asyncio.gather(
        *(
            connection_loop(
                i,
                host,
                port,
                request_maker(args.script, f"{host}:{port}", args.script_args, i),
                deadline,
                latencies,
                errors,
                ids,
            )
            for i in range(args.connections)
        )
    )
    duration = time.perf_counter() - started
    if ids is not None:
        Path(f"{args.script_args[4]}.1").write_bytes(b"\n".join(ids) + b"\n")
    latencies.sort()

    def percentile(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e6

    return {
        "requests": len(latencies),
        "duration_us": int(duration * 1e6),
        "bytes": 0,
        "connect_errors": 0,
        "read_errors": errors["read"],
        "write_errors": 0,
        "status_errors": errors["status"],
        "timeouts": 0,
        "latency_mean_us": sum(latencies) / max(len(latencies), 1) * 1e6,
        "latency_max_us": int(latencies[-1] * 1e6) if latencies else 0,
        "p50_us": int(percentile(50)),
        "p90_us": int(percentile(90)),
        "p99_us": int(percentile(99)),
        "p999_us": int(percentile(99.9)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--script", choices=["decide", "outcome"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("script_args", nargs="*")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print("WRK_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
