"""The MLflow tracking store checked before a run (a server answering, a SQLite file that is one),
URIs shown without credentials, and the code's git commit."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import tempfile
import urllib.parse
from pathlib import Path


def git_commit(path: Path) -> str | None:
    """``HEAD``'s commit, with ``-dirty`` when tracked files have changed; None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


class TrackingStoreUnavailable(RuntimeError):
    """The MLflow tracking store cannot be used; the message names it and says what to do."""


SQLITE_HEADER = b"SQLite format 3\x00"


FALLBACK = "or log to a local file instead: MLFLOW_TRACKING_URI=sqlite:///mlflow.db"


def without_credentials(uri: str) -> str:
    """``uri`` with any ``user:password@`` removed, fit for a message or a log."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.username and not parts.password:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def check_tracking_store(uri: str, project: Path, timeout: float = 5.0) -> None:
    """Raise ``TrackingStoreUnavailable`` unless the store at ``uri`` answers (a server) or can be
    written (an SQLite file or a folder), within ``timeout`` seconds: MLflow itself retries an
    unreachable server for about four minutes before it fails. Relative paths are the project's."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ("http", "https"):
        _check_server(uri, timeout)
    elif scheme == "sqlite":
        _check_sqlite(project / uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None, timeout)
    elif scheme in ("", "file"):
        _check_folder_writable(project / (urllib.parse.urlsplit(uri).path if scheme else uri), "MLflow's run folder")


def _check_server(uri: str, timeout: float) -> None:
    import requests  # noqa: PLC0415

    shown = without_credentials(uri)
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout).raise_for_status()
    except requests.RequestException as exc:
        reason = type(exc).__name__ if not isinstance(exc, requests.HTTPError) else str(exc)
        raise TrackingStoreUnavailable(
            f"MLflow tracking server {shown} is not reachable ({reason}). Start it or fix MLFLOW_TRACKING_URI "
            f"(conf/base/mlflow.yml), {FALLBACK}"
        ) from None


def _check_sqlite(path: Path | None, timeout: float) -> None:
    if path is None or str(path) in ("", ":memory:"):
        return
    _check_folder_writable(path.parent, "the folder of the MLflow database")
    if path.exists() and path.stat().st_size:
        with path.open("rb") as stream:
            header = stream.read(len(SQLITE_HEADER))
        if header and header != SQLITE_HEADER:
            raise TrackingStoreUnavailable(
                f"{path} is not an SQLite database (MLflow's store). Move it away and run again, or set "
                "MLFLOW_TRACKING_URI to another file"
            )
        try:
            with sqlite3.connect(path, timeout=timeout) as connection:
                connection.execute("BEGIN IMMEDIATE")  # waits for another writer, up to timeout
                connection.rollback()
        except sqlite3.OperationalError as exc:
            raise TrackingStoreUnavailable(
                f"MLflow database {path} cannot be written ({exc}): another process holds it locked; wait for "
                "it to finish (e.g. another kedro run or mlflow ui) and run again"
            ) from None
    # Always through the lock: a file that exists may be a store another run is creating right
    # now (its tables half migrated); the lock waits for that run to finish them.
    create_sqlite_store(path)


def create_sqlite_store(path: Path) -> None:
    """Create (or check) MLflow's tables in an SQLite file, one process at a time.

    Two runs started together on a new store would both create the tables, and the second fails
    in MLflow's schema migration (alembic: "expected to match one row"); the lock (on the folder,
    so that no lock file is left behind) lets the first create them and the second find them.
    """
    import fcntl  # noqa: PLC0415 - POSIX only, as the rest of the project

    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments(max_results=1)
    finally:
        os.close(folder)  # releases the lock


def _check_folder_writable(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise TrackingStoreUnavailable(
            f"{folder} ({what}) is not writable: {exc.strerror}. Make it writable or set MLFLOW_TRACKING_URI "
            "to a writable location"
        ) from None
