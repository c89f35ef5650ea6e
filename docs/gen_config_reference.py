"""Writes docs/configuration.md from the commented parameter files in conf/base.

    .venv/bin/python docs/gen_config_reference.py          # rewrite the page
    .venv/bin/python docs/gen_config_reference.py --check  # exit 1 if the page is out of date

Each parameter's description is the comment above its line (or at its end) in the YAML file, so
the reference cannot drift from the configuration: a test runs ``--check``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"
FILES = [
    "globals.yml",
    "parameters.yml",
    "parameters_ingestion.yml",
    "parameters_preprocessing.yml",
    "parameters_train_gender.yml",
    "parameters_train_age.yml",
    "parameters_evaluation.yml",
    "parameters_predict.yml",
    "parameters_finetuning.yml",
]
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w]*):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")

HEADER = """# Configuration reference

Every parameter in `conf/base`, its default and what it does, generated from the comments in the
files by `docs/gen_config_reference.py` (a test fails when this page and the files disagree).
Override any of them in `conf/local/` (ignored by git), in another environment
(`kedro run --env=seed` reads `conf/seed/`), or on the command line:
`kedro run --params=gender.training.epochs=5`. Environments and `--params` change only the keys
they name: parameters are merged key by key.

The data catalog (`conf/base/catalog.yml`) and the MLflow settings (`conf/base/mlflow.yml`) are
commented in place.
"""


def rows(path: Path) -> list[tuple[str, str, str]]:
    """``(dotted key, default, description)`` for every key of a YAML file, in file order."""
    values = yaml.safe_load(path.read_text()) or {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    result = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = KEY.match(line)
        if not match:
            pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        dotted = ".".join(key for _, key in stack)
        value = values
        for _, key in stack:
            value = value[key]
        description = " ".join([*pending, match["comment"] or ""]).strip()
        pending = []
        if isinstance(value, dict) and not match["value"].strip():
            if description:
                result.append((dotted, "", description))
            continue
        default = match["value"].strip() or yaml.safe_dump(value, default_flow_style=True).strip()
        result.append((dotted, default, description))
    return result


def render() -> str:
    parts = [HEADER]
    for name in FILES:
        parts.append(f"\n## `{name}`\n\n| parameter | default | what it does |\n|---|---|---|")
        for key, default, description in rows(ROOT / "conf" / "base" / name):
            default_cell = f"`{default}`" if default else ""
            parts.append(f"| `{key}` | {default_cell} | {description.replace('|', '/')} |")
    return "\n".join(parts) + "\n"


def main() -> None:
    text = render()
    if "--check" in sys.argv:
        if not PAGE.exists() or PAGE.read_text() != text:
            sys.exit(f"{PAGE} is out of date: run python docs/gen_config_reference.py")
        return
    PAGE.write_text(text)
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
