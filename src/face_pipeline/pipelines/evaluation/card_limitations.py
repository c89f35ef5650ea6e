"""The model card's limitations, written from the measured figures: the weakest groups, where
the intervals overlap, what the embedding changes by race."""

from __future__ import annotations

from typing import Any

from face_pipeline.pipelines.evaluation.card_summary import (
    as_number,
)
from face_pipeline.pipelines.evaluation.card_tables import (
    formatted,
    group_row,
    label_of,
    with_interval,
)


def limitations_section(tests: dict[str, dict[str, Any]], external: dict[str, dict[str, Any]]) -> list[str]:
    """What the figures show the networks do badly, from the figures."""
    lines = ["## Limitations", ""]
    for task, section in tests.items():
        headline, sign = section["headline"], 1 if section["higher_is_better"] else -1
        children = group_row(section, "age_band", youngest_band(section))
        worse = children and children.get(headline) is not None and section["value"] is not None
        worse = worse and sign * (children[headline] - section["value"]) < 0
        if worse:
            text = (
                f"- **Children**: `{task}` {label_of(headline)} for ages {children['group']} is "
                f"{with_interval(headline, children[headline], children['low'], children['high'])} on "
                f"{children['count']:,} test faces, against {formatted(headline, section['value'])} overall"
            )
            other = group_row(external.get(task), "age_band", children["group"])
            if other and other.get(headline) is not None:
                text += f"; {formatted(headline, other[headline])} on `{external[task]['folder']}`"
            lines.append(text + ".")
        for grouping, gap in section["gaps"].items():
            if grouping == "age_band" and worse and gap["worst_group"] == children["group"]:
                continue  # said above
            text = (
                f"- `{task}` differs by {grouping.replace('_', ' ')}: {label_of(gap['metric'])} "
                f"{formatted(gap['metric'], gap['gap'])} worse for {gap['worst_group']} than for {gap['best_group']}"
            )
            best, worst = (
                group_row(section, grouping, gap["best_group"]),
                group_row(section, grouping, gap["worst_group"]),
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
            f"- **Another population**: `{task}` {label_of(headline)} {formatted(headline, section['value'])} on the "
            f"test split, {formatted(headline, other['value'])} on `{other['folder']}`"
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
        or any(as_number(row.get(key)) is None for row in (first, second) for key in ("low", "high"))
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
            f"{label_of(headline)} {formatted(headline, head[headline])} alone against the network's "
            f"{formatted(headline, network[headline])}, the mix (`--mode accurate`) "
            f"{formatted(headline, mix.get(headline))}"
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
                f"; on `{external[task]['folder']}` the head alone scores "
                f"{formatted(headline, other['head'][headline])} "
                f"against the network's {formatted(headline, other['network'][headline])}"
            )
        lines.append(text + ".")
    return lines
