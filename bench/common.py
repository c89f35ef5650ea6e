"""What several bench scripts share: a free port, the machine's description, ``kedro`` runs.

Imported by its siblings as ``from common import ...`` (the scripts are run as files, so their
folder is on ``sys.path``); no command of its own. Standard library only, so that a script's
``--help`` stays instant.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from face_pipeline.ops.processes import free_port

__all__ = ["free_port", "kedro_command", "kedro_environment", "machine", "run_kedro", "start_kedro"]


def machine() -> str:
    """The processor and its cores, as the benchmark reports name the machine they ran on."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def kedro_command(*args: str) -> list[str]:
    """``kedro *args`` from this Python's environment, which need not be activated."""
    return [str(Path(sys.executable).with_name("kedro")), *args]


def kedro_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``env`` on top, and Kedro's telemetry off: it tries the
    network on every command, which would add to the times measured."""
    return {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", **(env or {})}


def start_kedro(project: Path, *args: str, env: dict[str, str] | None = None, **options: Any) -> subprocess.Popen:
    """``kedro *args`` started in ``project`` (``options`` as for ``subprocess.Popen``)."""
    return subprocess.Popen(kedro_command(*args), cwd=project, env=kedro_environment(env), **options)


def run_kedro(
    project: Path, *args: str, env: dict[str, str] | None = None, check: bool = False, **options: Any
) -> subprocess.CompletedProcess:
    """``kedro *args`` run to its end in ``project`` (``options`` as for ``subprocess.run``)."""
    return subprocess.run(kedro_command(*args), cwd=project, env=kedro_environment(env), check=check, **options)
