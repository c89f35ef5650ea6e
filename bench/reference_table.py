"""The README's results row of a run, made from its model card's figures and its MLflow run.

    make run                                                  # trains, evaluates, writes the card
    EVAL_DATA_DIR=../shared/data/aaf_dev .venv/bin/kedro run --pipelines=evaluate_folder \
        --params=external_ingestion.labels.source=manifest               # optional: labels.csv
    make reference-table                                      # prints the row

Reads ``data/08_reporting/model_card.json`` (the headline figures the card prints, with their
intervals; ``--card`` for another file) and, from the MLflow store (``MLFLOW_TRACKING_URI``,
default ``sqlite:///mlflow.db``), the wall time (``run_minutes``) and commit of the latest
finished ``__default__`` run of the card's profile: the ``make run`` that trained the networks.
Prints one Markdown row: profile, command, minutes, gender accuracy and age MAE on the test
split with their intervals, the same on the other folder where ``evaluate_folder`` ran (a dash
otherwise), machine, commit.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from common import machine

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CARD = PROJECT_ROOT / "data" / "08_reporting" / "model_card.json"
TASKS = ("gender", "age")


def figure(section: dict[str, Any] | None, interval: bool = True) -> str:
    """A headline value and its interval, ``0.923 (0.915 to 0.931)`` written exactly as the card writes it."""
    from face_pipeline.pipelines.evaluation.card_tables import formatted, with_interval  # noqa: PLC0415

    if not section or section.get("value") is None:
        return "–"
    if not interval:
        return formatted(section["headline"], section["value"])
    return with_interval(section["headline"], section["value"], section.get("low"), section.get("high"))


def table_row(
    headlines: dict[str, Any], minutes: float | None, machine_name: str, command: str, commit: str | None = None
) -> str:
    """The README's row for the card's figures (``card_headlines``), the training run's minutes,
    machine and commit (the card's own commit where none is given)."""
    sections = {(section["task"], section["scope"]): section for section in headlines["sections"]}
    run = headlines["run"]
    other = " / ".join(figure(sections.get((task, "external")), interval=False) for task in TASKS)
    folder = next((section.get("folder") for section in headlines["sections"] if section["scope"] == "external"), None)
    cells = [
        run.get("profile") or "–",
        f"`{command}`",
        "–" if minutes is None else f"{minutes:.0f}",
        figure(sections.get(("gender", "test"))),
        figure(sections.get(("age", "test"))),
        "–" if folder is None else f"{other} (`{folder}`)",
        machine_name,
        (commit or run.get("git_commit") or "–")[:7],
    ]
    return "| " + " | ".join(cells) + " |"


def training_run(tracking_uri: str, profile: str | None) -> tuple[float | None, str | None]:
    """Minutes (``run_minutes``) and commit (tag ``git_commit``) of the latest finished
    ``__default__`` run of ``profile``: the ``make run`` that trained the card's networks."""
    import mlflow  # noqa: PLC0415 - a few seconds: not for --help

    mlflow.set_tracking_uri(tracking_uri)
    conditions = ["attributes.status = 'FINISHED'", "tags.`mlflow.runName` LIKE '__default__%'"]
    if profile:
        conditions.append(f"tags.profile = '{profile}'")
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=" and ".join(conditions),
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    for run in runs:
        if "run_minutes" in run.data.metrics:
            return run.data.metrics["run_minutes"], run.data.tags.get("git_commit")
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--card", type=Path, default=CARD, help="the card's figures (model_card.json)")
    parser.add_argument("--command", default="make run", help="the command the row names")
    parser.add_argument("--machine", default=None, help="the machine's description (default: this one's)")
    parser.add_argument(
        "--minutes", type=float, default=None, help="the run's wall time, where MLflow does not hold it"
    )
    args = parser.parse_args()
    if not args.card.is_file():
        raise SystemExit(f"{args.card} not found: run `make run` first (it writes the model card and this file)")
    headlines = json.loads(args.card.read_text())
    minutes, commit = args.minutes, None
    if minutes is None:
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}")
        minutes, commit = training_run(tracking_uri, headlines["run"].get("profile"))
    print(table_row(headlines, minutes, args.machine or machine(), args.command, commit))


if __name__ == "__main__":
    main()
