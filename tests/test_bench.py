"""Every bench script starts: ``python bench/<script>.py --help`` prints its usage, at once.

The benchmarks run rarely and for long, so an import or API they lost goes unnoticed until
someone needs a figure; ``--help`` imports the script and parses its arguments. It must not
import TensorFlow, Keras or MLflow first (seconds each): those belong after the arguments.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[1] / "bench"
# Scripts with a command of their own; the others (bench/common.py) are imported by their siblings.
SCRIPTS = sorted(path for path in BENCH.glob("*.py") if 'if __name__ == "__main__":' in path.read_text())
HEAVY = {"tensorflow", "keras", "mlflow", "torch"}


def help_of(script: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``script --help``, and the heavy packages it imported (from ``-X importtime``'s report)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(script), "--help"],
        cwd=BENCH.parent,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    modules = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+([\w.]+)$", result.stderr, re.MULTILINE)
    return result, {module.split(".")[0] for module in modules} & HEAVY


@pytest.fixture(scope="module")
def helps() -> dict[str, tuple[subprocess.CompletedProcess, set[str]]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip((script.name for script in SCRIPTS), pool.map(help_of, SCRIPTS), strict=True))


def test_the_scripts_are_found():
    names = {script.name for script in SCRIPTS}
    assert {"epochs.py", "train.py", "peer.py"} <= names
    assert "common.py" not in names


@pytest.mark.parametrize("name", [script.name for script in SCRIPTS])
def test_help_prints_usage_without_heavy_imports(helps, name):
    result, heavy = helps[name]
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"usage: {name}"), result.stdout[:500]
    assert not heavy, f"{name} imports {sorted(heavy)} before parsing its arguments"
