"""The ceiling of one report a call on this machine (prints figures; not a test): a gRPC server
whose handler does nothing, in its own process on 127.0.0.1, answering the same load as
``bench_grpc.py``'s single reports (``--devices`` coroutines on 8 aio channels of this
process, a 60-byte request and a bearer header each), once with grpcio's thread-pool server
(as the party agent's report endpoint) and once with grpc.aio's. What a real endpoint accepts
one report a call can only be below these figures.

Reproduce:  .venv/bin/python experiments/bench_grpc_ceiling.py [--calls 20000] [--devices 256]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from concurrent import futures
from typing import Any

import grpc

METHOD = "/bench.Nothing/Call"


def _handlers(fn: Any) -> Any:
    return grpc.method_handlers_generic_handler(
        "bench.Nothing", {"Call": grpc.unary_unary_rpc_method_handler(fn)}
    )


def _serve(kind: str, ports: Any) -> None:
    if kind == "thread pool":
        server = grpc.server(futures.ThreadPoolExecutor(32))
        server.add_generic_rpc_handlers((_handlers(lambda req, ctx: b"ok"),))
        ports.put(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        server.wait_for_termination()
        return

    async def nothing(req: bytes, ctx: Any) -> bytes:
        return b"ok"

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_handlers(nothing),))
        ports.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


async def _load(port: int, calls: int, devices: int) -> float:
    chans = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(8)]
    stubs = [c.unary_unary(METHOD) for c in chans]
    todo = iter(range(calls))
    md = (("authorization", "Bearer " + "x" * 80),)

    async def device() -> None:
        for i in todo:
            await stubs[i % len(stubs)](b"r" * 60, metadata=md, timeout=60)

    t0 = time.perf_counter()
    await asyncio.gather(*(device() for _ in range(devices)))
    rate = calls / (time.perf_counter() - t0)
    for c in chans:
        await c.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--devices", type=int, default=256)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    for kind in ("thread pool", "grpc.aio"):
        ports = ctx.Queue()
        proc = ctx.Process(target=_serve, args=(kind, ports), daemon=True)
        proc.start()
        try:
            port = int(ports.get(timeout=60))
            asyncio.run(_load(port, 500, 16))  # warm up the channels
            rate = asyncio.run(_load(port, args.calls, args.devices))
            print(f"{kind} server, a handler that does nothing: {rate:,.0f} calls/s")
        finally:
            proc.kill()
            proc.join()
    print("reproduce: .venv/bin/python experiments/bench_grpc_ceiling.py")


if __name__ == "__main__":
    main()
