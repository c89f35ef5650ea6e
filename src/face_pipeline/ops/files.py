"""Files written whole or not at all: a temporary name, renamed once complete; clear advice on write errors."""

from __future__ import annotations

import contextlib
import errno
import os

import fsspec


def partial_name(path: str) -> str:
    """Where ``path`` is written before it is complete: a name no dataset loads (Kedro's versioned
    loads look for the exact file name), one per process so that two runs never share one."""
    return f"{path}.partial-{os.getpid()}"


@contextlib.contextmanager
def written_atomically(fs: fsspec.AbstractFileSystem, path: str):
    """Yield a temporary name to write ``path`` under; renamed to ``path`` only once it is complete.

    A run killed or failing mid-write (full disk) leaves no file at ``path``, or the previous
    complete one: a half-written output is never taken for a finished one (``--only-missing-outputs``,
    a later pipeline loading it). On a local disk the rename is atomic.
    """
    partial = partial_name(path)
    remove_stale_partials(fs, path)
    try:
        yield partial
        fs.mv(partial, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            fs.rm(partial)
        if isinstance(exc, OSError) and exc.errno in WRITE_ADVICE:
            raise OSError(exc.errno, f"{exc.strerror}: {path} was not written; {WRITE_ADVICE[exc.errno]}") from exc
        raise


def remove_stale_partials(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Delete what killed runs left half-written at ``path`` (their process is gone; local disks only:
    a process id means nothing on another machine)."""
    if "file" not in fs.protocol:
        return
    for stale in fs.glob(f"{path}.partial-*"):
        pid = stale.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(OSError):
                fs.rm(stale)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# What to do about the write errors a user can fix.
WRITE_ADVICE = {
    errno.ENOSPC: "free space on that disk or move the data folder to a larger one, then run again",
    errno.EDQUOT: "free space within your quota or move the data folder, then run again",
    errno.EROFS: "the folder is on a read-only file system: make it writable or move the data folder",
    errno.EACCES: "make the folder writable for this user or move the data folder",
    errno.EPERM: "make the folder writable for this user or move the data folder",
}
