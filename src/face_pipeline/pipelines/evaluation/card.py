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
from typing import Any

from face_pipeline.parameters import ModelCardSettings
from face_pipeline.pipelines.evaluation.card_limitations import (
    limitations_section,
)
from face_pipeline.pipelines.evaluation.card_summary import (
    as_number,
)
from face_pipeline.pipelines.evaluation.card_tables import (
    by_group_section,
    calibration_section,
    cross_dataset_section,
    formatted,
    markdown_table,
    modes_table,
    results_section,
)

logger = logging.getLogger(__name__)


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


# ---- the card ------------------------------------------------------------------------------------


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
        downsample = as_number(decided.get("downsample")) or 1.0
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
    return [*lines, *markdown_table(header, table, right_from=len(header))]


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
            formatted("share", split.get("female_share")),
            formatted("mae", split.get("age_mean")),
        ]
        for name, split in splits.items()
    ]
    lines += markdown_table(["split", "images", "female share", "mean age"], rows)
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
    lines += ["## Test results", "", *results_section(list(tests.values()), settings, "test")]
    lines += ["## By age band, gender and race", ""]
    for task, section in tests.items():
        lines += [f"### `{task}`", "", *by_group_section(section, settings)]
    lines += ["## Calibration and age ranges", "", *calibration_section(list(tests.values()))]
    lines += [
        "## `--mode accurate`",
        "",
        "The network alone (the default), the embedding head alone and their mix, on the test faces that "
        "have an embedding (`<task>_head_comparison.csv`).",
        "",
        *modes_table(list(tests.values())),
    ]
    lines += cross_dataset_section(list(external.values()), settings)
    lines += limitations_section(tests, external)
    lines += ["## Intended uses", "", *(f"- {use}" for use in INTENDED_USES), ""]
    lines += ["## Out of scope", "", *(f"- {use}" for use in OUT_OF_SCOPE), ""]
    card = "\n".join(lines).rstrip() + "\n"
    logger.info("Model card: %d lines for %s", card.count("\n"), ", ".join(tests) or "no task")
    return card


HEADLINE_KEYS = ("task", "scope", "headline", "value", "low", "high", "images", "confidence")


def card_headlines(run_details: dict[str, Any], *sections: dict[str, Any]) -> dict[str, Any]:
    """The card's headline figures, machine-readable (``08_reporting/model_card.json``): the run's
    details and, per task and scope, the headline metric with its interval, as the card prints them.
    The README's results table is made from this file (``make reference-table``)."""
    return {
        "run": dict(run_details),
        "sections": [
            {key: section.get(key) for key in HEADLINE_KEYS}
            | ({"folder": section["folder"]} if "folder" in section else {})
            for section in sections
        ],
    }
