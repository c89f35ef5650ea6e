"""The model card's tables: results with intervals, figures by group, calibration, the modes side
by side, the other folder's figures."""

from __future__ import annotations

from typing import Any

from face_pipeline.parameters import ModelCardSettings
from face_pipeline.pipelines.evaluation.card_summary import (
    GROUP_SCORES,
    OTHER_SCORES,
    as_number,
)

from .nodes import GROUPINGS


def formatted(name: str, value: Any) -> str:
    number = as_number(value)
    if number is None:
        return "–"
    return f"{number:.2f}" if name in IN_YEARS else f"{number:.3f}"


def with_interval(name: str, value: Any, low: Any, high: Any) -> str:
    if as_number(low) is None:
        return formatted(name, value)
    return f"{formatted(name, value)} ({formatted(name, low)}–{formatted(name, high)})"


def markdown_table(header: list[str], rows: list[list[Any]], right_from: int = 1) -> list[str]:
    align = ["---" if index < right_from else "---:" for index in range(len(header))]
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
        "",
    ]


def label_of(name: str) -> str:
    return LABELS.get(name, name.replace("_", " "))


def _confidence(settings: ModelCardSettings) -> str:
    return f"{settings.confidence * 100:g} %"


def results_section(sections: list[dict[str, Any]], settings: ModelCardSettings, where: str) -> list[str]:
    rows = [
        [
            f"`{section['task']}`",
            label_of(section["headline"]),
            with_interval(section["headline"], section["value"], section["low"], section["high"]),
            f"{section['images']:,}",
        ]
        for section in sections
    ]
    lines = markdown_table(["task", "metric", f"value ({_confidence(settings)} interval)", "faces"], rows, right_from=2)
    lines.append(
        f"Intervals: percentile bootstrap of the {where} faces, {settings.bootstrap_resamples:,} resamples, "
        f"seed {settings.seed} (`model_card` parameters)."
    )
    lines.append("")
    for section in sections:
        scores = section["scores"].items()
        others = [f"{label_of(name)} {formatted(name, value)}" for name, value in scores if name in OTHER_SCORES]
        if others:
            lines.append(f"- `{section['task']}`: " + ", ".join(others) + ".")
    return [*lines, ""]


def _group_table(section: dict[str, Any], grouping: str, settings: ModelCardSettings) -> list[str]:
    """One grouping's table: each group's faces, headline metric with its interval, and answers' scores."""
    headline = section["headline"]
    members = [row for row in section["groups"] if row["grouping"] == grouping]
    answers = [name for name in GROUP_SCORES if any(row.get(name) is not None for row in members)]
    header = ["group", "faces", f"{label_of(headline)} ({_confidence(settings)} interval)", *map(label_of, answers)]
    rows = [
        [
            row["group"],
            f"{row['count']:,}",
            with_interval(headline, row[headline], row["low"], row["high"]),
            *(formatted(name, row.get(name)) for name in answers),
        ]
        for row in members
    ]
    return markdown_table(header, rows) if rows else []


def by_group_section(section: dict[str, Any], settings: ModelCardSettings) -> list[str]:
    lines = []
    for grouping in GROUPINGS:
        table = _group_table(section, grouping, settings)
        if table:
            lines += [f"By {grouping.replace('_', ' ')}:", "", *table]
    for grouping, gap in section["gaps"].items():
        lines.append(
            f"- Largest gap by {grouping.replace('_', ' ')} (groups of {section['min_group_size']}+ faces): "
            f"{formatted(gap['metric'], gap['gap'])} in {label_of(gap['metric'])}, between {gap['best_group']} (best) "
            f"and {gap['worst_group']} (worst)."
        )
    return [*lines, ""]


def calibration_section(sections: list[dict[str, Any]]) -> list[str]:
    lines = []
    for section in sections:
        figures = _answer_figures(section["scores"])
        if not figures:
            continue
        lines.append(f"- `{section['task']}`: {figures}.")
        calibration = section["calibration"]
        if "temperature" in calibration:
            lines.append(
                f"  Temperature {formatted('t', calibration['temperature'])} fitted on the validation split; a face "
                f"is marked uncertain below {calibration.get('uncertain_below', '–')} confidence."
            )
        if "level" in calibration:
            lines.append(
                f"  The range is meant to hold the true age of {calibration['level'] * 100:.0f} % of faces like the "
                "validation faces (fitted per band of predicted age)."
            )
    if not lines:
        return []
    intro = (
        "Expected calibration error (ECE, 15 bins; 0 = a probability of 0.8 is right 80 % of the time) and "
        "how often the age range holds the true age; by group in the tables above."
    )
    return [intro, "", *lines, ""]


def _answer_figures(scores: dict[str, Any]) -> str:
    """The answers' scores in words: ECE (and the network's own), confident answers, the age range."""
    parts = []
    if scores.get("ece") is not None:
        part = f"ECE {formatted('ece', scores['ece'])}"
        if scores.get("ece_uncalibrated") is not None:
            part += f" (the network's own probability: {formatted('ece', scores['ece_uncalibrated'])})"
        parts.append(part)
    if scores.get("accuracy_at_90_coverage") is not None:
        parts.append(f"accuracy on the 90 % most confident {formatted('', scores['accuracy_at_90_coverage'])}")
    if scores.get("uncertain_share") is not None:
        part = f"{scores['uncertain_share'] * 100:.1f} % marked uncertain"
        if scores.get("accuracy_when_certain") is not None:
            part += f", accuracy on the others {formatted('', scores['accuracy_when_certain'])}"
        parts.append(part)
    if scores.get("range_coverage") is not None:
        part = f"the age range holds the true age for {scores['range_coverage'] * 100:.1f} % of faces"
        if scores.get("range_width") is not None:
            part += f", {formatted('range_width', scores['range_width'])} years wide on average"
        parts.append(part)
    return "; ".join(parts)


def modes_table(sections: list[dict[str, Any]]) -> list[str]:
    rows = []
    for section in sections:
        for row in section["modes"]:
            if row["grouping"] != "all":
                continue
            answer = "ece" if row.get("ece") is not None else "range_coverage"
            rows.append(
                [
                    f"`{section['task']}`",
                    VARIANTS.get(row["variant"], row["variant"]),
                    f"{row['count']:,}",
                    f"{label_of(section['headline'])} {formatted(section['headline'], row.get(section['headline']))}",
                    f"{label_of(answer)} {formatted(answer, row.get(answer))}",
                ]
            )
    if not rows:
        return ["Not evaluated in this run (no embedding head).", ""]
    return markdown_table(["task", "what answers", "faces", "score", "answers"], rows, right_from=2)


def cross_dataset_section(sections: list[dict[str, Any]], settings: ModelCardSettings) -> list[str]:
    lines = ["## Another population", ""]
    if not sections:
        lines.append(
            "Not measured by the run that wrote this card. `EVAL_DATA_DIR=<labelled folder> kedro run "
            "--pipelines=evaluate_folder` scores the saved networks on another population and adds this part."
        )
        return [*lines, ""]
    folder = sections[0]["folder"]
    lines.append(
        f"The saved networks on `{folder}` (`evaluate_folder`: every usable image a test image, each photo found "
        f"and aligned as the served model does; {sections[0]['rejected']:,} files rejected)."
    )
    lines.append("")
    lines += results_section(sections, settings, f"`{folder}`")
    for section in sections:
        table = _group_table(section, "age_band", settings)
        if table:
            lines += [f"`{section['task']}` by age band:", "", *table]
    lines += calibration_section(sections)
    lines += ["With the embedding head:", "", *modes_table(sections)]
    return lines


def group_row(section: dict[str, Any] | None, grouping: str, group: str) -> dict[str, Any] | None:
    if section is None:
        return None
    return next((r for r in section["groups"] if r["grouping"] == grouping and r["group"] == group), None)


IN_YEARS = {"mae", "rmse", "median_ae", "mean_signed_error", "range_width"}


LABELS = {
    "accuracy": "accuracy",
    "mae": "MAE (years)",
    "ece": "ECE, calibrated",
    "ece_uncalibrated": "ECE, network's own",
    "accuracy_at_90_coverage": "accuracy on the 90 % most confident",
    "uncertain_share": "share marked uncertain",
    "accuracy_when_certain": "accuracy on the others",
    "range_coverage": "range holds the true age",
    "range_width": "range width (years)",
    "roc_auc": "ROC AUC",
    "f1": "F1 (female positive)",
    "log_loss": "log loss",
    "rmse": "RMSE (years)",
    "median_ae": "median absolute error (years)",
    "cs_at_5": "share within 5 years",
    "mean_signed_error": "mean signed error (years; + = too old)",
}


VARIANTS = {"network": "network (`--mode fast`)", "head": "embedding head alone", "combined": "mix (`--mode accurate`)"}
