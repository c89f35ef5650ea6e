"""The model card: what the networks are, what they were trained on and how well they do, by group.

``summarise_for_card`` gathers one task's figures from the reports its evaluation wrote (the
test metrics with bootstrap intervals, by group, calibration, the modes side by side, what
training decided); ``summarise_folder_for_card`` does the same for another labelled folder
(``evaluate_folder``); ``write_model_card`` turns them, with the data summaries and the run's
details, into ``data/08_reporting/model_card.md``. Every number in the card comes from those
reports: nothing is written in by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from face_pipeline.parameters import EvaluationSettings, ModelCardSettings, RunSettings
from face_pipeline.scoring.bootstrap import bootstrap_interval
from face_pipeline.tasks import get_task

from .nodes import GROUPINGS, with_groups

logger = logging.getLogger(__name__)

# The headline metric of a task as the mean of one number per face, for its bootstrap interval.
PER_FACE: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    "accuracy": lambda table: ((table["y_pred"] >= 0.5) == (table["y_true"] >= 0.5)).to_numpy(dtype=float),
    "mae": lambda table: (table["y_pred"] - table["y_true"]).abs().to_numpy(dtype=float),
}
# The answers' figures the card shows where a task has them (calibration, ranges).
ANSWER_SCORES = (
    "ece_uncalibrated",
    "ece",
    "accuracy_at_90_coverage",
    "uncertain_share",
    "accuracy_when_certain",
    "range_coverage",
    "range_width",
)
GROUP_SCORES = ("ece", "uncertain_share", "accuracy_when_certain", "range_coverage", "range_width")
OTHER_SCORES = ("roc_auc", "f1", "log_loss", "rmse", "median_ae", "cs_at_5", "mean_signed_error")
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
DECISIONS_SHOWN = (
    "precision",
    "downsample",
    "planned_epochs",
    "plan",
    "epochs_run",
    "epoch_kept",
    "epoch_kept_because",
    "parameters",
    "threads",
    "distribution_strategy",
    "resumed_from_backup",
)

INTENDED_USES = (
    "Research and teaching on estimating apparent gender and age from face photos, and on how such "
    "estimates differ between groups of people.",
    "Non-commercial use only: the networks are trained on UTKFace, which is available for non-commercial "
    "research only, and models trained on it inherit those terms (see THIRD_PARTY_NOTICES.md).",
    "Comparing training runs, profiles and changes to the pipeline on the same held-out faces.",
)
OUT_OF_SCOPE = (
    "Recognising, verifying or tracking who a person is: the networks describe a face, they do not "
    "identify it, and must not be used to.",
    "Surveillance or monitoring of people, in public or private spaces.",
    "Decisions about people: access, age checks, hiring, credit, insurance, policing, health, or any other "
    "decision with consequences for the person in the photo.",
    "Inferring a person's gender identity: the label is one of two classes of apparent gender as UTKFace annotated it.",
    "Populations, photo conditions or ages unlike the training data without measuring the networks there "
    "first (`evaluate_folder`).",
)


# ---- one task's figures ------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A plain float, or None for a missing value (NaN, None, not a number)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(number) else number


def _interval(values: np.ndarray, settings: ModelCardSettings) -> tuple[float | None, float | None]:
    low, high = bootstrap_interval(values, settings.bootstrap_resamples, settings.confidence, settings.seed)
    return _number(low), _number(high)


def _per_face(predictions: pd.DataFrame, headline: str) -> np.ndarray | None:
    return PER_FACE[headline](predictions) if headline in PER_FACE and len(predictions) else None


def _groups(
    groups: pd.DataFrame,
    predictions: pd.DataFrame,
    headline: str,
    evaluation: EvaluationSettings,
    settings: ModelCardSettings,
) -> list[dict[str, Any]]:
    """One row per group of ``groups`` (the group metrics), with the headline's interval."""
    grouped = with_groups(predictions, evaluation.age_bands)
    per_face = _per_face(grouped, headline)
    rows = []
    for row in groups.to_dict("records"):
        members = (grouped[row["grouping"]].astype(str) == str(row["group"])).to_numpy()
        low, high = _interval(per_face[members], settings) if per_face is not None else (None, None)
        rows.append(
            {
                "grouping": str(row["grouping"]),
                "group": str(row["group"]),
                "count": int(row["count"]),
                headline: _number(row.get(headline)),
                "low": low,
                "high": high,
                **{name: _number(row[name]) for name in ANSWER_SCORES if name in row},
            }
        )
    return rows


def _modes(comparison: pd.DataFrame | None, headline: str) -> list[dict[str, Any]]:
    """The network, the head and their mix, overall and by group (``<task>.head_comparison``)."""
    if comparison is None or comparison.empty:
        return []
    columns = [name for name in (headline, "ece", "range_coverage", "range_width") if name in comparison]
    return [
        {
            "variant": str(row["variant"]),
            "grouping": str(row["grouping"]),
            "group": str(row["group"]),
            "count": int(row["count"]),
            **{name: _number(row[name]) for name in columns},
        }
        for row in comparison.to_dict("records")
    ]


def evaluation_summary(
    metrics: dict[str, Any],
    group_metrics: pd.DataFrame,
    test_predictions: pd.DataFrame,
    head_comparison: pd.DataFrame | None,
    task: dict[str, Any],
    evaluation: dict[str, Any],
    model_card: dict[str, Any],
) -> dict[str, Any]:
    """A task's evaluation as the card shows it: the headline metric with its bootstrap interval
    (computed from the test predictions), the answers' scores, the same by group, the largest gaps,
    and the modes side by side."""
    spec = get_task(task["target"])
    settings = ModelCardSettings.from_params(model_card)
    groups = EvaluationSettings.from_params(evaluation)
    headline = spec.headline
    per_face = _per_face(test_predictions, headline)
    low, high = _interval(per_face, settings) if per_face is not None else (None, None)
    reported = metrics.get(headline)
    if per_face is not None and reported is not None and not np.isclose(per_face.mean(), reported):
        logger.warning(
            "%s: the test predictions give %s %.4f, the metrics report %.4f: the two files are from different runs",
            spec.name,
            headline,
            per_face.mean(),
            reported,
        )
    return {
        "task": spec.name,
        "headline": headline,
        "higher_is_better": spec.higher_is_better,
        "images": int(metrics.get("images", len(test_predictions))),
        "value": _number(metrics.get(headline)),
        "low": low,
        "high": high,
        "scores": {name: _number(metrics[name]) for name in (*ANSWER_SCORES, *OTHER_SCORES) if name in metrics},
        "calibration": metrics.get("calibration") or {},
        "gaps": metrics.get("largest_group_gap") or {},
        "groups": _groups(group_metrics, test_predictions, headline, groups, settings),
        "modes": _modes(head_comparison, headline),
        "min_group_size": groups.min_group_size,
        "confidence": settings.confidence,
    }


def summarise_for_card(
    metrics: dict[str, Any],
    group_metrics: pd.DataFrame,
    test_predictions: pd.DataFrame,
    head_comparison: pd.DataFrame,
    training_decisions: dict[str, Any],
    head_decisions: dict[str, Any],
    combination: dict[str, Any],
    task: dict[str, Any],
    model: dict[str, Any],
    evaluation: dict[str, Any],
    model_card: dict[str, Any],
) -> dict[str, Any]:
    """One task's section of the card: its evaluation on the test split and what its training decided."""
    summary = evaluation_summary(
        metrics, group_metrics, test_predictions, head_comparison, task, evaluation, model_card
    )
    return {
        **summary,
        "scope": "test",
        "model": {
            "architecture": model.get("architecture"),
            "loss": model.get("loss") or get_task(task["target"]).default_loss,
            "mirror_average": bool(model.get("mirror_average")),
            "decisions": {key: training_decisions[key] for key in DECISIONS_SHOWN if key in training_decisions},
            "head": dict(head_decisions),
            "head_weight": _number(combination.get("head_weight")),
        },
    }


def summarise_folder_for_card(
    metrics: dict[str, Any],
    group_metrics: pd.DataFrame,
    test_predictions: pd.DataFrame,
    head_comparison: pd.DataFrame,
    data_summary: dict[str, Any],
    task: dict[str, Any],
    ingestion: dict[str, Any],
    evaluation: dict[str, Any],
    model_card: dict[str, Any],
) -> dict[str, Any]:
    """One task's figures on another labelled folder (``evaluate_folder``), for the card's cross-dataset part."""
    summary = evaluation_summary(
        metrics, group_metrics, test_predictions, head_comparison, task, evaluation, model_card
    )
    return {
        **summary,
        "scope": "external",
        "folder": Path(str(ingestion.get("raw_dir", ""))).name or "another folder",
        "rejected": int(data_summary.get("rejected", 0)),
    }


def describe_run(parameters: dict[str, Any]) -> dict[str, Any]:
    """The MLflow run writing the card (id, name, start, the tags ``git_commit`` and ``profile`` the
    project's hook set) or, outside MLflow, the work tree's commit and the time now."""
    import mlflow  # noqa: PLC0415

    from face_pipeline.hooks import git_commit, profile_name  # noqa: PLC0415

    run = mlflow.active_run()
    details = {
        "profile": profile_name(parameters),
        "note": RunSettings.from_params(parameters.get("run") or {}).note,
        "run_id": None,
        "run_name": None,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": None,
    }
    if run is not None:
        run = mlflow.get_run(run.info.run_id)  # the tags set since the run started
        details |= {
            "run_id": run.info.run_id,
            "run_name": run.data.tags.get("mlflow.runName") or run.info.run_name,
            "date": datetime.fromtimestamp(run.info.start_time / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "git_commit": run.data.tags.get("git_commit"),
        }
    details["git_commit"] = details["git_commit"] or git_commit(Path.cwd())
    return details


# ---- the card ------------------------------------------------------------------------------------


def _format(name: str, value: Any) -> str:
    number = _number(value)
    if number is None:
        return "–"
    return f"{number:.2f}" if name in IN_YEARS else f"{number:.3f}"


def _with_interval(name: str, value: Any, low: Any, high: Any) -> str:
    if _number(low) is None:
        return _format(name, value)
    return f"{_format(name, value)} ({_format(name, low)}–{_format(name, high)})"


def _table(header: list[str], rows: list[list[Any]], right_from: int = 1) -> list[str]:
    align = ["---" if index < right_from else "---:" for index in range(len(header))]
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
        "",
    ]


def _label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " "))


def _confidence(settings: ModelCardSettings) -> str:
    return f"{settings.confidence * 100:g} %"


def _details(run: dict[str, Any], preprocessing: dict[str, Any], sections: list[dict[str, Any]]) -> list[str]:
    image = preprocessing.get("image") or {}
    rows = {
        "run": f"`{run['run_name']}` (MLflow run `{run['run_id']}`)" if run.get("run_id") else "not tracked in MLflow",
        "date": run.get("date") or "–",
        "code": f"git commit `{run['git_commit']}`" if run.get("git_commit") else "not in a git work tree",
        "profile": f"`{run.get('profile')}`",
        "input": (
            f"a face chip of {image.get('size', '?')}x{image.get('size', '?')} px, {image.get('color_mode', '?')}, "
            "`uint8` (`face_pipeline.imaging.decoding.decode_face`); in photos, faces are found and aligned to the "
            "training chips' geometry first"
        ),
    }
    lines = ["## Model details", "", *(f"- **{name}**: {value}" for name, value in rows.items()), ""]
    header = ["task", "architecture", "loss", "parameters", "input to the network", "precision", "epochs"]
    table = []
    for section in sections:
        model = section["model"]
        decided = model["decisions"]
        downsample = _number(decided.get("downsample")) or 1.0
        size = image.get("size")
        network_input = f"{round(size / downsample)} px" if size else "–"
        if downsample != 1:
            network_input += f" (shrunk by {downsample:g} inside the network)"
        epochs = f"{decided.get('epochs_run', '–')} run of {decided.get('planned_epochs', '–')} planned"
        if decided.get("epoch_kept") is not None:
            epochs += f", epoch {decided['epoch_kept']} kept"
        parameters = decided.get("parameters")
        table.append(
            [
                f"`{section['task']}`",
                f"`{model['architecture']}`" + (", mirror-averaged" if model["mirror_average"] else ""),
                f"`{model['loss']}`",
                f"{parameters:,}" if isinstance(parameters, int) else "–",
                network_input,
                decided.get("precision", "–"),
                epochs,
            ]
        )
    return [*lines, *_table(header, table, right_from=len(header))]


def _decisions(sections: list[dict[str, Any]]) -> list[str]:
    lines = ["## Training decisions", ""]
    lines.append(
        "What each training run decided at run time (`<task>_training_decisions.json`, MLflow params "
        "`<task>.decided.*`; the embedding head's in `<task>_head_decisions.json`)."
    )
    lines.append("")
    for section in sections:
        model = section["model"]
        decided = ", ".join(f"{key} `{value}`" for key, value in model["decisions"].items())
        head = ", ".join(f"{key} `{value}`" for key, value in model["head"].items())
        lines.append(f"- `{section['task']}`: {decided or '–'}.")
        if head:
            weight = model["head_weight"]
            mix = f"; the head's weight in the mix, fitted on the validation split: {weight:.2f}" if weight else ""
            lines.append(f"  Embedding head: {head}{mix}.")
    return [*lines, ""]


def _data(data_summary: dict[str, Any], embedding_summary: dict[str, Any] | None) -> list[str]:
    splits = data_summary.get("splits") or {}
    lines = ["## Data", ""]
    sample = data_summary.get("max_images")
    text = f"{data_summary.get('images', 0):,} usable images, {data_summary.get('rejected', 0):,} files rejected"
    if sample:
        text += (
            f" (`ingestion.max_images: {sample}`: at most {sample:,} of the folder's image files were read; "
            "figures from a sample are a first look, not the networks' measure)"
        )
    lines.append(text + ".")
    reasons = data_summary.get("rejected_by_reason") or {}
    if reasons:
        lines.append("Rejected: " + ", ".join(f"{reason} {count:,}" for reason, count in reasons.items()) + ".")
    lines.append("")
    rows = [
        [
            name,
            f"{split.get('images', 0):,}",
            _format("share", split.get("female_share")),
            _format("mae", split.get("age_mean")),
        ]
        for name, split in splits.items()
    ]
    lines += _table(["split", "images", "female share", "mean age"], rows)
    for key, title in (("race", "Race (as labelled)"), ("gender", "Gender (as labelled)")):
        counts = data_summary.get(key) or {}
        if counts:
            lines.append(f"{title}: " + ", ".join(f"{name} {count:,}" for name, count in counts.items()) + ".")
    if embedding_summary:
        computed = sum(int(split.get("computed", 0)) for split in embedding_summary.values())
        reused = sum(int(split.get("reused", 0)) for split in embedding_summary.values())
        missing = sum(int(split.get("without_embedding", 0)) for split in embedding_summary.values())
        lines.append(
            f"Face embeddings (for the embedding heads): {computed:,} computed, {reused:,} reused from the cache, "
            f"{missing:,} images without one."
        )
    return [*lines, ""]


def _results(sections: list[dict[str, Any]], settings: ModelCardSettings, where: str) -> list[str]:
    rows = [
        [
            f"`{section['task']}`",
            _label(section["headline"]),
            _with_interval(section["headline"], section["value"], section["low"], section["high"]),
            f"{section['images']:,}",
        ]
        for section in sections
    ]
    lines = _table(["task", "metric", f"value ({_confidence(settings)} interval)", "faces"], rows, right_from=2)
    lines.append(
        f"Intervals: percentile bootstrap of the {where} faces, {settings.bootstrap_resamples:,} resamples, "
        f"seed {settings.seed} (`model_card` parameters)."
    )
    lines.append("")
    for section in sections:
        scores = section["scores"].items()
        others = [f"{_label(name)} {_format(name, value)}" for name, value in scores if name in OTHER_SCORES]
        if others:
            lines.append(f"- `{section['task']}`: " + ", ".join(others) + ".")
    return [*lines, ""]


def _group_table(section: dict[str, Any], grouping: str, settings: ModelCardSettings) -> list[str]:
    """One grouping's table: each group's faces, headline metric with its interval, and answers' scores."""
    headline = section["headline"]
    members = [row for row in section["groups"] if row["grouping"] == grouping]
    answers = [name for name in GROUP_SCORES if any(row.get(name) is not None for row in members)]
    header = ["group", "faces", f"{_label(headline)} ({_confidence(settings)} interval)", *map(_label, answers)]
    rows = [
        [
            row["group"],
            f"{row['count']:,}",
            _with_interval(headline, row[headline], row["low"], row["high"]),
            *(_format(name, row.get(name)) for name in answers),
        ]
        for row in members
    ]
    return _table(header, rows) if rows else []


def _by_group(section: dict[str, Any], settings: ModelCardSettings) -> list[str]:
    lines = []
    for grouping in GROUPINGS:
        table = _group_table(section, grouping, settings)
        if table:
            lines += [f"By {grouping.replace('_', ' ')}:", "", *table]
    for grouping, gap in section["gaps"].items():
        lines.append(
            f"- Largest gap by {grouping.replace('_', ' ')} (groups of {section['min_group_size']}+ faces): "
            f"{_format(gap['metric'], gap['gap'])} in {_label(gap['metric'])}, between {gap['best_group']} (best) "
            f"and {gap['worst_group']} (worst)."
        )
    return [*lines, ""]


def _calibration(sections: list[dict[str, Any]]) -> list[str]:
    lines = []
    for section in sections:
        figures = _answer_figures(section["scores"])
        if not figures:
            continue
        lines.append(f"- `{section['task']}`: {figures}.")
        calibration = section["calibration"]
        if "temperature" in calibration:
            lines.append(
                f"  Temperature {_format('t', calibration['temperature'])} fitted on the validation split; a face "
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
        part = f"ECE {_format('ece', scores['ece'])}"
        if scores.get("ece_uncalibrated") is not None:
            part += f" (the network's own probability: {_format('ece', scores['ece_uncalibrated'])})"
        parts.append(part)
    if scores.get("accuracy_at_90_coverage") is not None:
        parts.append(f"accuracy on the 90 % most confident {_format('', scores['accuracy_at_90_coverage'])}")
    if scores.get("uncertain_share") is not None:
        part = f"{scores['uncertain_share'] * 100:.1f} % marked uncertain"
        if scores.get("accuracy_when_certain") is not None:
            part += f", accuracy on the others {_format('', scores['accuracy_when_certain'])}"
        parts.append(part)
    if scores.get("range_coverage") is not None:
        part = f"the age range holds the true age for {scores['range_coverage'] * 100:.1f} % of faces"
        if scores.get("range_width") is not None:
            part += f", {_format('range_width', scores['range_width'])} years wide on average"
        parts.append(part)
    return "; ".join(parts)


def _modes_table(sections: list[dict[str, Any]]) -> list[str]:
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
                    f"{_label(section['headline'])} {_format(section['headline'], row.get(section['headline']))}",
                    f"{_label(answer)} {_format(answer, row.get(answer))}",
                ]
            )
    if not rows:
        return ["Not evaluated in this run (no embedding head).", ""]
    return _table(["task", "what answers", "faces", "score", "answers"], rows, right_from=2)


def _cross_dataset(sections: list[dict[str, Any]], settings: ModelCardSettings) -> list[str]:
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
    lines += _results(sections, settings, f"`{folder}`")
    for section in sections:
        table = _group_table(section, "age_band", settings)
        if table:
            lines += [f"`{section['task']}` by age band:", "", *table]
    lines += _calibration(sections)
    lines += ["With the embedding head:", "", *_modes_table(sections)]
    return lines


def _group_row(section: dict[str, Any] | None, grouping: str, group: str) -> dict[str, Any] | None:
    if section is None:
        return None
    return next((r for r in section["groups"] if r["grouping"] == grouping and r["group"] == group), None)


def _limitations(tests: dict[str, dict[str, Any]], external: dict[str, dict[str, Any]]) -> list[str]:
    """What the figures show the networks do badly, from the figures."""
    lines = ["## Limitations", ""]
    for task, section in tests.items():
        headline, sign = section["headline"], 1 if section["higher_is_better"] else -1
        children = _group_row(section, "age_band", youngest_band(section))
        worse = children and children.get(headline) is not None and section["value"] is not None
        worse = worse and sign * (children[headline] - section["value"]) < 0
        if worse:
            text = (
                f"- **Children**: `{task}` {_label(headline)} for ages {children['group']} is "
                f"{_with_interval(headline, children[headline], children['low'], children['high'])} on "
                f"{children['count']:,} test faces, against {_format(headline, section['value'])} overall"
            )
            other = _group_row(external.get(task), "age_band", children["group"])
            if other and other.get(headline) is not None:
                text += f"; {_format(headline, other[headline])} on `{external[task]['folder']}`"
            lines.append(text + ".")
        for grouping, gap in section["gaps"].items():
            if grouping == "age_band" and worse and gap["worst_group"] == children["group"]:
                continue  # said above
            text = (
                f"- `{task}` differs by {grouping.replace('_', ' ')}: {_label(gap['metric'])} "
                f"{_format(gap['metric'], gap['gap'])} worse for {gap['worst_group']} than for {gap['best_group']}"
            )
            best, worst = (
                _group_row(section, grouping, gap["best_group"]),
                _group_row(section, grouping, gap["worst_group"]),
            )
            if _overlap(best, worst):
                text += f" ({_confidence_text(section)} intervals overlap: the gap may be chance)"
            lines.append(text + ".")
    for task, section in tests.items():
        other = external.get(task)
        headline = section["headline"]
        if other is None:
            continue
        text = (
            f"- **Another population**: `{task}` {_label(headline)} {_format(headline, section['value'])} on the "
            f"test split, {_format(headline, other['value'])} on `{other['folder']}`"
        )
        coverage, elsewhere = section["scores"].get("range_coverage"), other["scores"].get("range_coverage")
        if coverage is not None and elsewhere is not None:
            text += (
                f"; the age range holds {coverage * 100:.1f} % of true ages on the test split, "
                f"{elsewhere * 100:.1f} % there"
            )
        lines.append(text + ".")
    if not external:
        lines.append(
            "- **Another population**: the figures above are on faces like the training faces (one folder, one "
            "split); on other photos and populations expect worse, and measure it with `evaluate_folder`."
        )
    lines += _embedding_by_race(tests, external)
    lines.append(
        "- Labels are as the data set gives them: two classes of apparent gender, an age in whole years and five "
        "race categories, annotated from the photo; groups of few faces (see the counts) have wide intervals."
    )
    return [*lines, ""]


def _overlap(first: dict[str, Any] | None, second: dict[str, Any] | None) -> bool:
    if (
        not first
        or not second
        or any(_number(row.get(key)) is None for row in (first, second) for key in ("low", "high"))
    ):
        return False
    return first["low"] <= second["high"] and second["low"] <= first["high"]


def _confidence_text(section: dict[str, Any]) -> str:
    return f"their {section['confidence'] * 100:g} %"


def youngest_band(section: dict[str, Any]) -> str:
    """The first age band of a section's groups (``0-12`` with the default bands)."""
    bands = [row["group"] for row in section["groups"] if row["grouping"] == "age_band"]
    return min(bands, key=lambda band: int(band.split("-")[0].rstrip("+")), default="")


def _embedding_by_race(tests: dict[str, dict[str, Any]], external: dict[str, dict[str, Any]]) -> list[str]:
    """The race group (of ``min_group_size`` faces or more) where the embedding head does worst against
    the network alone: the face embedding is known to be weaker on some groups of faces."""
    lines = []
    for task, section in tests.items():
        headline, sign = section["headline"], 1 if section["higher_is_better"] else -1
        by_variant = {(row["variant"], row["group"]): row for row in section["modes"] if row["grouping"] == "race"}
        gains = {
            group: sign * (by_variant[("head", group)][headline] - network[headline])
            for (variant, group), network in by_variant.items()
            if variant == "network"
            and network["count"] >= section["min_group_size"]
            and network.get(headline) is not None
            and (by_variant.get(("head", group)) or {}).get(headline) is not None
        }
        if not gains:
            continue
        group = min(gains, key=lambda name: (gains[name], name))
        network, head = by_variant[("network", group)], by_variant[("head", group)]
        mix = by_variant.get(("combined", group)) or {}
        figures = (
            f"{_label(headline)} {_format(headline, head[headline])} alone against the network's "
            f"{_format(headline, network[headline])}, the mix (`--mode accurate`) "
            f"{_format(headline, mix.get(headline))}"
        )
        if gains[group] < 0:
            text = (
                f"- **The face embedding by race**: on {group} test faces ({network['count']:,}) the `{task}` "
                f"embedding head scores {figures}: the embedding is weaker there than the network"
            )
        else:
            text = (
                f"- **The face embedding by race**: the `{task}` embedding head gains least on {group} test faces "
                f"({network['count']:,}): {figures}"
            )
        other = {row["variant"]: row for row in (external.get(task) or {}).get("modes", []) if row["grouping"] == "all"}
        if {"head", "network"} <= set(other):
            text += (
                f"; on `{external[task]['folder']}` the head alone scores {_format(headline, other['head'][headline])} "
                f"against the network's {_format(headline, other['network'][headline])}"
            )
        lines.append(text + ".")
    return lines


def write_model_card(
    data_summary: dict[str, Any],
    embedding_summary: dict[str, Any],
    preprocessing: dict[str, Any],
    run_details: dict[str, Any],
    model_card: dict[str, Any],
    *sections: dict[str, Any],
) -> str:
    """The model card in Markdown, from the run's details and each task's sections (``summarise_for_card``
    for the test split, ``summarise_folder_for_card`` for another folder), in the order given."""
    settings = ModelCardSettings.from_params(model_card)
    tests = {section["task"]: section for section in sections if section["scope"] == "test"}
    external = {section["task"]: section for section in sections if section["scope"] == "external"}
    names = " and ".join(f"`{task}`" for task in tests) or "no"
    lines = [f"# Model card: the {names} network{'s' if len(tests) > 1 else ''}", ""]
    if run_details.get("note"):
        lines += [f"> **{run_details['profile']}**: {run_details['note']}", ""]
    lines += [
        "Written by the pipeline (`write_model_card`) from the reports of the run below; every figure is "
        "measured, on the held-out test split unless it says otherwise.",
        "",
    ]
    lines += _details(run_details, preprocessing, list(tests.values()))
    lines += _decisions(list(tests.values()))
    lines += _data(data_summary, embedding_summary)
    lines += ["## Test results", "", *_results(list(tests.values()), settings, "test")]
    lines += ["## By age band, gender and race", ""]
    for task, section in tests.items():
        lines += [f"### `{task}`", "", *_by_group(section, settings)]
    lines += ["## Calibration and age ranges", "", *_calibration(list(tests.values()))]
    lines += [
        "## `--mode accurate`",
        "",
        "The network alone (the default), the embedding head alone and their mix, on the test faces that "
        "have an embedding (`<task>_head_comparison.csv`).",
        "",
        *_modes_table(list(tests.values())),
    ]
    lines += _cross_dataset(list(external.values()), settings)
    lines += _limitations(tests, external)
    lines += ["## Intended uses", "", *(f"- {use}" for use in INTENDED_USES), ""]
    lines += ["## Out of scope", "", *(f"- {use}" for use in OUT_OF_SCOPE), ""]
    card = "\n".join(lines).rstrip() + "\n"
    logger.info("Model card: %d lines for %s", card.count("\n"), ", ".join(tests) or "no task")
    return card
