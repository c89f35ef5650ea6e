"""The ``face-pipeline`` command: ``face-pipeline predict PHOTO...``, ``face-pipeline train``.

(Not named ``cli.py``: Kedro would load a module of that name as the project's own ``kedro``
commands.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from face_pipeline.embedding.descriptor import PREDICT_MODES
from face_pipeline.imaging.detection import DETECT_MODES

DEFAULT_SETTINGS = "data/06_models/inference_settings.json"


@click.group()
def cli() -> None:
    """Gender and age from face photos."""


def model_options(command):
    """The options that pick the networks, their calibration and settings (``load_predictor``)."""
    options = [
        click.option("--model-uri", help="MLflow run holding every task's model (<task>_model), e.g. runs:/<run id>."),
        click.option(
            "--model",
            "models",
            multiple=True,
            metavar="TASK=SOURCE",
            help="One task's network: a .keras file, a versioned folder or an MLflow URI, e.g. "
            "age=runs:/<run id>/age_model (repeat for several) [default: each task's latest in data/06_models, "
            "or its model in --model-uri].",
        ),
        click.option(
            "--settings",
            "settings_path",
            help=f"Image spec and detection settings saved with the models [default: the run's with --model-uri, "
            f"else {DEFAULT_SETTINGS}].",
        ),
        click.option("--detect", type=click.Choice(DETECT_MODES), help="Face detection mode [default: as saved]."),
        click.option(
            "--mode",
            type=click.Choice(PREDICT_MODES),
            default=PREDICT_MODES[0],
            show_default=True,
            help="fast: the networks alone; accurate: mixed with their embedding heads (dlib's face embedding).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def parse_models(models: tuple[str, ...]) -> dict[str, str]:
    """``("age=path",)`` -> ``{"age": "path"}``; anything else is a usage error."""
    parsed = {}
    for item in models:
        task, equals, source = item.partition("=")
        if not equals or not task or not source:
            raise click.BadParameter(f"{item!r}: expected TASK=SOURCE, e.g. age=data/06_models/age_model.keras")
        parsed[task.strip()] = source.strip()
    return parsed


def load_predictor(
    model_uri: str | None,
    models: tuple[str, ...],
    settings_path: str | None,
    detect: str | None,
    mode: str = PREDICT_MODES[0],
    **options,
):
    """The ``FacePredictor`` for every task's saved network, with the calibration and settings saved
    with them (a clear message instead of a traceback when something is missing)."""
    import os  # noqa: PLC0415

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from face_pipeline.inference.loading import (  # noqa: PLC0415 - keep --help fast
        embedding_backend,
        load_calibration,
        load_embedding_heads,
        load_inference_settings,
        load_keras_model,
        model_sources,
    )
    from face_pipeline.inference.predictor import FacePredictor  # noqa: PLC0415 - keep --help fast
    from face_pipeline.tasks import TASKS  # noqa: PLC0415

    overrides = parse_models(models)
    try:
        sources = model_sources(TASKS, overrides, model_uri)
        networks = {task: load_keras_model(source) for task, source in sources.items()}
        calibration = {task: load_calibration(source) for task, source in sources.items()}
        settings = load_inference_settings(settings_path or model_uri or DEFAULT_SETTINGS)
        accurate = load_embedding_heads(sources, embedding_backend(settings)) if mode == "accurate" else None
    except Exception as exc:
        raise click.ClickException(str(exc)) from exc
    if detect:
        settings = {**settings, "detection": {**settings["detection"], "mode": detect}}
    return FacePredictor.from_settings(networks, settings, calibration=calibration, accurate=accurate, **options)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@model_options
@click.option("--workers", type=int, default=1, show_default=True, help="Processes preparing photos (0: one per core).")
@click.option(
    "--format", "output_format", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
@click.option(
    "--annotate",
    "annotate_dir",
    type=click.Path(file_okay=False),
    help="Also write each photo, at its size, with every face's box and label into this folder.",
)
@click.option(
    "--refuse-outside-links",
    is_flag=True,
    help="For folders you do not trust: a link leading outside its folder is reported, not read "
    "[default: links are followed].",
)
def predict(
    paths: tuple[str, ...],
    workers: int,
    output_format: str,
    annotate_dir: str | None,
    refuse_outside_links: bool,
    **choice,
) -> None:
    """Print every task's answer (gender, age, ...) for every face in PATHS (photos, folders or fsspec
    URLs), one line per face."""
    from face_pipeline.datasets.folders import ImageFilesDataset  # noqa: PLC0415 - keep --help fast

    try:
        photos = ImageFilesDataset(paths=list(paths), refuse_outside_links=refuse_outside_links).load()
    except Exception as exc:  # a clear message instead of a traceback
        raise click.ClickException(str(exc)) from exc
    predictor = load_predictor(**choice, workers=workers)
    # Table and CSV rows are printed chunk by chunk as they come; JSON is one array at the end.
    statuses: list[str] = []
    records: list[dict] = []
    taken: set[str] = set()
    for index, chunk in enumerate(predictor.predict_stream(photos.items())):
        statuses.extend(chunk["status"])
        if annotate_dir:
            _write_annotated(chunk, photos, Path(annotate_dir), taken, predictor.spec.max_pixels)
        if output_format == "csv":
            chunk.to_csv(sys.stdout, index=False, header=index == 0)
        elif output_format == "json":
            records.extend(json.loads(chunk.to_json(orient="records")))
        else:
            _print_rows(chunk)
        sys.stdout.flush()
    if output_format == "json":
        click.echo(json.dumps(records, indent=2))
    if statuses and all(status == "error" for status in statuses):
        sys.exit(1)


def _write_annotated(chunk, photos, folder: Path, taken: set[str], max_pixels: int) -> None:
    """Each photo of ``chunk`` with its faces drawn on it into ``folder``; one that could not be
    read or drawn is named on stderr with the reason, and the others go on."""
    from face_pipeline.imaging.annotate import annotated_photos, encoded  # noqa: PLC0415
    from face_pipeline.tasks import face_label  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    for photo in annotated_photos(chunk, photos, taken, face_label, max_pixels):
        if photo.picture is None:
            click.echo(f"{photo.file}: not annotated ({photo.reason})", err=True)
        else:
            (folder / photo.name).write_bytes(encoded(photo.picture, photo.name))


def _print_rows(table) -> None:
    """One line per face: the photo, the face's box and every task's answer (``tasks.answers_text``)."""
    from face_pipeline.tasks import answers_text  # noqa: PLC0415

    for row in table.to_dict("records"):
        name = Path(str(row["file"])).name
        if row["status"] == "ok":
            box = f"[{row['box_x']},{row['box_y']} {row['box_size']}px]"
            click.echo(f"{name}  face {row['face']} {box}  {answers_text(row)}")
        else:
            click.echo(f"{name}  {row['status']}: {row['reason']}")


@cli.command()
@model_options
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to listen on (another exposes the page)."
)
@click.option("--port", type=int, default=7860, show_default=True)
def demo(host: str, port: int, **choice) -> None:
    """A local web page to try the models: drop photos, see them annotated and the table of faces."""
    import uvicorn  # noqa: PLC0415

    from face_pipeline.commands.demo import create_app  # noqa: PLC0415

    app = create_app(load_predictor(**choice))
    click.echo(f"face_pipeline demo on http://{host}:{port}/ (Ctrl+C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def main() -> None:
    from face_pipeline.commands.train import train  # noqa: PLC0415

    cli.add_command(train)
    cli()
