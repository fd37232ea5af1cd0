"""An open-loop HTTP load generator (asyncio, keep-alive HTTP/1.1).

Request ``n`` is *scheduled* at ``start + n / rate`` whatever happened to the
earlier ones, and its latency runs from that scheduled time to the end of the
response. A slow server therefore shows up as queueing delay in the figures
instead of silently lowering the offered rate (no coordinated omission).
Results are kept per request label, so one run can mix endpoints.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Request:
    """One request to send: a label for the report, method, path (with query), optional JSON body."""

    label: str
    path: str
    method: str = "GET"
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class LoadResult:
    """Latencies (seconds) of the requests that succeeded, and what failed, for one label."""

    offered_rate: float
    duration_s: float
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    slowest: list[tuple[float, float]] = field(default_factory=list)  # (scheduled offset s, latency s)

    @property
    def sent(self) -> int:
        """Requests sent."""
        return len(self.latencies) + sum(self.errors.values())


def pooled(results: Sequence[LoadResult]) -> LoadResult:
    """Several runs at one rate as one: their latencies, durations and errors together."""
    total = LoadResult(results[0].offered_rate, 0.0)
    for result in results:
        total.latencies += result.latencies
        total.duration_s += result.duration_s
        for error, count in result.errors.items():
            total.errors[error] = total.errors.get(error, 0) + count
    return total


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Pool:
    """Idle keep-alive connections; a request takes one or opens a new one."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Connection] = []

    async def get(self) -> Connection:
        if self.idle:
            return self.idle.pop()
        return await asyncio.open_connection(self.host, self.port)

    def put(self, connection: Connection) -> None:
        self.idle.append(connection)

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


def _encode(pool: _Pool, request: Request) -> bytes:
    lines = [f"{request.method} {request.path} HTTP/1.1", f"Host: {pool.host}", "Accept: */*"]
    lines += [f"{name}: {value}" for name, value in request.headers]
    if request.body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(request.body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (request.body or b"")


async def _send(pool: _Pool, request: Request, timeout_s: float) -> int:
    reused = bool(pool.idle)
    try:
        return await _exchange(pool, await pool.get(), request, timeout_s)
    except (ConnectionResetError, asyncio.IncompleteReadError):
        if not reused:
            raise
        # The server closed an idle keep-alive connection: retry once on a new one, as HTTP clients do.
        return await _exchange(pool, await asyncio.open_connection(pool.host, pool.port), request, timeout_s)


async def _exchange(pool: _Pool, connection: Connection, request: Request, timeout_s: float) -> int:
    reader, writer = connection
    try:
        writer.write(_encode(pool, request))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        keep_alive = True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value.strip())
            elif name.lower() == "connection" and value.strip().lower() == "close":
                keep_alive = False
        await asyncio.wait_for(reader.readexactly(length), timeout_s)
    except BaseException:
        writer.close()
        raise
    if keep_alive:
        pool.put(connection)
    else:
        writer.close()
    return status


async def _run(
    base_url: str, requests: Sequence[Request], rate: float, duration_s: float, timeout_s: float
) -> dict[str, LoadResult]:
    parts = urlsplit(base_url)
    pool = _Pool(parts.hostname or "127.0.0.1", parts.port or 80)
    results = {r.label: LoadResult(offered_rate=0.0, duration_s=duration_s) for r in requests}
    total = int(rate * duration_s)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(n: int) -> None:
        scheduled = start + n / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        request = requests[n % len(requests)]
        result = results[request.label]
        try:
            status = await _send(pool, request, timeout_s)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            key = type(exc).__name__
            result.errors[key] = result.errors.get(key, 0) + 1
            return
        if not 200 <= status < 300:
            result.errors[str(status)] = result.errors.get(str(status), 0) + 1
        else:
            result.latencies.append(loop.time() - scheduled)
            result.slowest.append((scheduled - start, result.latencies[-1]))

    # Tasks are created as their time comes, so the client's own work stays small and even.
    tasks = []
    for n in range(total):
        delay = start + n / rate - loop.time() - 0.002
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    pool.close()
    for result in results.values():
        result.offered_rate = rate * result.sent / max(total, 1)
        result.slowest = sorted(result.slowest, key=lambda s: -s[1])[:5]
    return results


def open_loop_mix(
    base_url: str,
    requests: Sequence[Request],
    rate: float,
    duration_s: float,
    timeout_s: float = 10.0,
    warmup_s: float = 2.0,
) -> dict[str, LoadResult]:
    """Offer ``rate`` requests per second for ``duration_s``, cycling through ``requests``.

    A first ``warmup_s`` at the same rate (opening the connections) is not recorded.
    """
    if warmup_s > 0:
        asyncio.run(_run(base_url, requests, rate, warmup_s, timeout_s))
    # The generator's own garbage-collector pauses would show up as server latency.
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        results = asyncio.run(_run(base_url, requests, rate, duration_s, timeout_s))
        elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    for result in results.values():
        result.duration_s = elapsed
    return results


def open_loop(
    base_url: str, paths: Sequence[str], rate: float, duration_s: float, timeout_s: float = 10.0
) -> LoadResult:
    """GET ``paths`` in turn at ``rate`` requests per second (one endpoint)."""
    requests = [Request("all", path) for path in paths]
    return open_loop_mix(base_url, requests, rate, duration_s, timeout_s)["all"]
