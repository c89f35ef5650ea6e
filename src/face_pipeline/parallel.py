"""Run a per-chunk function over many items in worker processes, with progress."""

from __future__ import annotations

import atexit
import functools
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

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
    description: str,
    **kwargs: Any,
) -> Iterator[tuple[int, Result]]:
    """Yield ``(offset, func(chunk, **kwargs))`` for consecutive chunks, in order.

    With one worker the chunks run in this process (no start-up or pickling
    cost); with more, in a pool of processes started by a fork server, which is
    safe even when the parent has TensorFlow threads running.
    """
    workers = resolve_workers(workers)
    chunks = chunked(items, max(1, chunk_size))
    progress = tqdm(total=len(items), desc=description, unit="img", disable=None, file=sys.stderr)
    started = time.perf_counter()
    offset = 0
    if workers == 1 or len(chunks) <= 1:
        results = (func(chunk, **kwargs) for chunk in chunks)
    else:
        results = worker_pool(workers, func.__module__).map(_call, [(func, chunk, kwargs) for chunk in chunks])
    try:
        for chunk, result in zip(chunks, results, strict=True):
            yield offset, result
            offset += len(chunk)
            progress.update(len(chunk))
    finally:
        progress.close()
    elapsed = time.perf_counter() - started
    logger.info(
        "%s: %d items in %.1f s (%.0f items/s, %d worker%s)",
        description,
        len(items),
        elapsed,
        len(items) / elapsed if elapsed else float("inf"),
        workers,
        "" if workers == 1 else "s",
    )


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


def _call(task: tuple[Callable[..., Result], Sequence[Any], dict[str, Any]]) -> Result:
    func, chunk, kwargs = task
    return func(chunk, **kwargs)
