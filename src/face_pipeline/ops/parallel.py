"""Run a per-chunk function over many items in worker processes (or on Dask), with progress."""

from __future__ import annotations

import atexit
import functools
import logging
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, TypeVar

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

CHUNK_SIZE = 256  # items a worker gets at a time: the default of every stage that maps over images
Item = TypeVar("Item")
Result = TypeVar("Result")


def resolve_workers(workers: int | None) -> int:
    """``None`` or 0 means one worker per CPU core."""
    if not workers:
        return os.cpu_count() or 1
    return max(1, int(workers))


def chunked(items: Sequence[Item], size: int) -> list[Sequence[Item]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def map_chunks(
    func: Callable[..., Result],
    items: Sequence[Item],
    *,
    workers: int | None,
    chunk_size: int,
    description: str | None,
    scheduler: str | None = None,
    **kwargs: Any,
) -> Iterator[tuple[int, Result]]:
    """Yield ``(offset, func(chunk, **kwargs))`` for consecutive chunks, in order.

    With one worker the chunks run in this process (no start-up or pickling
    cost); with more, in a pool of processes started by a fork server, which is
    safe even when the parent has TensorFlow threads running. At most two
    chunks per worker are in flight, so results wait in memory only as long as
    the caller keeps up: memory does not grow with the number of items.

    With a Dask ``scheduler`` address every chunk runs on that cluster's workers instead, as
    many in flight as they have threads; ``func`` and the items must pickle.
    """
    workers = dask_threads(scheduler) if scheduler else resolve_workers(workers)
    chunks = chunked(items, max(1, chunk_size))
    # Without a description: no progress bar and no log line (a served model's every request).
    progress = tqdm(
        total=len(items), desc=description, unit="img", disable=None if description else True, file=sys.stderr
    )
    started = time.perf_counter()
    offset = 0
    if scheduler:
        results: Iterator[Result] = _bounded_map(dask_executor(scheduler), func, chunks, kwargs, 2 * workers)
    elif workers == 1 or len(chunks) <= 1:
        results = (func(chunk, **kwargs) for chunk in chunks)
    else:
        results = _bounded_map(worker_pool(workers, func.__module__), func, chunks, kwargs, 2 * workers)
    try:
        for chunk, result in zip(chunks, results, strict=True):
            yield offset, result
            offset += len(chunk)
            progress.update(len(chunk))
    finally:
        progress.close()
    elapsed = time.perf_counter() - started
    if not description:
        return
    logger.info(
        "%s: %d items in %.1f s (%.0f items/s, %d worker%s%s)",
        description,
        len(items),
        elapsed,
        len(items) / elapsed if elapsed else float("inf"),
        workers,
        "" if workers == 1 else "s",
        f" on Dask at {scheduler}" if scheduler else "",
    )


def _bounded_map(
    pool: Executor, func: Callable[..., Result], chunks: Sequence[Sequence[Any]], kwargs: dict[str, Any], ahead: int
) -> Iterator[Result]:
    """``pool.map`` in order, with at most ``ahead`` chunks submitted and not yet taken."""
    pending: deque[Future] = deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(func, chunk, **kwargs))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:  # the caller stopped early
            future.cancel()


@functools.cache
def worker_pool(workers: int, preload_module: str) -> ProcessPoolExecutor:
    """A pool kept for the life of the process, so consecutive nodes skip start-up.

    Workers are forked from a fork server (safe even when this process runs
    TensorFlow threads) that has already imported ``preload_module``.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([preload_module])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    atexit.register(pool.shutdown, cancel_futures=True)
    return pool


_dask_clients: dict[str, Any] = {}


def _dask_client(address: str) -> Any:
    """One client per scheduler for the life of the process (connecting takes ~0.5 s)."""
    if address not in _dask_clients:
        from distributed import Client  # noqa: PLC0415 - Dask is an optional dependency (the team extra)

        _dask_clients[address] = Client(address, set_as_default=False)
        atexit.register(_dask_clients[address].close)
    return _dask_clients[address]


def close_dask_clients() -> None:
    """Disconnect from every scheduler, e.g. before shutting a cluster down (a connected client
    would try to reconnect for 30 s)."""
    while _dask_clients:
        _dask_clients.popitem()[1].close()


def dask_executor(address: str) -> Executor:
    """A ``concurrent.futures`` executor whose tasks run on the Dask cluster at ``address``."""
    return _dask_client(address).get_executor()


def dask_threads(address: str) -> int:
    """Worker threads of the cluster: how many chunks can run at once."""
    return max(1, sum(_dask_client(address).nthreads().values()))
