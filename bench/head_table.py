"""The network, its embedding head and their mix side by side, as the evaluation wrote them.

    .venv/bin/kedro run                                              # trains, evaluates on the test split
    EVAL_DATA_DIR=../shared/data/aaf_dev .venv/bin/kedro run --pipelines=evaluate_folder \
        --params=external_ingestion.labels.source=manifest
    .venv/bin/python bench/head_table.py

Reads ``data/08_reporting/<task>_head_comparison.csv`` (the test split) and
``external_<task>_head_comparison.csv`` (the folder ``evaluate_folder`` scored, when present) and
prints one Markdown table: gender accuracy and age MAE overall and for children (0-12), per
variant (``network`` is ``--mode fast``, ``combined`` is ``--mode accurate``), with the faces
counted and the head weights the mix was fitted with (data/06_models/<task>_combination.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REPORTS = PROJECT_ROOT / "data" / "08_reporting"
SCORES = {"gender": ("accuracy", "gender accuracy", "{:.3f}"), "age": ("mae", "age MAE", "{:.2f}")}
VARIANTS = ("network", "head", "combined")


def rows_of(prefix: str, label: str, group: tuple[str, str], group_label: str) -> list[str]:
    """One table row per task for the group, or none where the reports are missing."""
    rows = []
    for task, (score, name, number) in SCORES.items():
        path = REPORTS / f"{prefix}{task}_head_comparison.csv"
        if not path.is_file():
            continue
        table = pd.read_csv(path)
        chosen = table[(table["grouping"] == group[0]) & (table["group"].astype(str) == group[1])]
        by_variant = chosen.set_index("variant")
        if chosen.empty:
            continue
        cells = [number.format(by_variant.at[variant, score]) for variant in VARIANTS]
        count = int(by_variant.at["network", "count"])
        rows.append(f"| {label}, {group_label}, {name} | {count} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", default="0-12", help="the age band shown for children (evaluation.age_bands)")
    args = parser.parse_args()
    print("| set, group, score | faces | network (fast) | head alone | combined (accurate) |")
    print("|---|---:|---:|---:|---:|")
    for prefix, label in (("", "UTKFace test split"), ("external_", "evaluate_folder")):
        for group, group_label in ((("all", "all"), "all faces"), (("age_band", args.children), "children")):
            for row in rows_of(prefix, label, group, group_label):
                print(row)
    for task in SCORES:
        path = PROJECT_ROOT / "data" / "06_models" / f"{task}_combination.json"
        if path.is_file():
            print(f"\n{task}: head weight {json.loads(path.read_text())['head_weight']:.2f}", end="")
    print()


if __name__ == "__main__":
    main()
