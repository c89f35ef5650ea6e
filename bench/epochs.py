"""Seconds per training epoch with tf.data's autotuning off (the default) and on.

    FACE_DATA_DIR=../shared/data/utkface .venv/bin/python bench/epochs.py [--images 4096] [--epochs 12]

Needs the preprocessed arrays of a previous run (``kedro run --pipelines=preprocessing``).
Trains the default gender network and input pipeline (parameters from conf/base; full-size
faces where ``downsample`` is ``auto``) on the first ``--images`` training images for
``--epochs`` epochs, once per setting, each in a fresh process, and prints the seconds of each
epoch with their median and maximum. Saved to bench/out/epochs.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def epoch_seconds(images: int, epochs: int, autotune: bool) -> list[float]:
    """One setting, in this process."""
    # Imported here: `--help` and the parent process, which only starts the two runs, need none of them.
    import keras  # noqa: PLC0415
    from kedro.framework.session import KedroSession  # noqa: PLC0415
    from kedro.framework.startup import bootstrap_project  # noqa: PLC0415

    from face_pipeline.modelling.builders import ModelSettings, build_model, compile_model  # noqa: PLC0415
    from face_pipeline.modelling.precision import resolve_precision  # noqa: PLC0415
    from face_pipeline.pipelines.training.data import make_dataset, model_targets  # noqa: PLC0415
    from face_pipeline.tasks import get_task  # noqa: PLC0415

    bootstrap_project(PROJECT_ROOT)
    with KedroSession.create(project_path=PROJECT_ROOT) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params["gender"]
        if not catalog.exists("train_images"):
            sys.exit("No model-input arrays: run `kedro run --pipelines=preprocessing` first (FACE_DATA_DIR).")
    train_images = catalog.load("train_images")[:images]
    train_labels = catalog.load("train_labels")[:images]
    spec = get_task("gender")
    settings, training = ModelSettings.from_params(params["model"], "gender.model"), params["training"]
    options = {
        **settings.builder_options(),
        "loss": settings.loss,
        "augment": settings.augment,
        "label_stats": spec.label_stats(spec.targets(train_labels)),
    }
    if str(options.get("downsample")).lower() == "auto":
        options["downsample"] = 1  # full-size faces: what the time budget picks where they fit
    keras.utils.set_random_seed(training["seed"])
    precision = resolve_precision(training["precision"])
    network = build_model(settings.architecture, train_images.shape[1:], "gender", precision=precision, **options)
    model = compile_model(network, "gender", training["learning_rate"], settings.loss)
    labels = model_targets(model, train_labels, "gender")
    dataset = make_dataset(train_images, labels, training["batch_size"], shuffle=True, seed=1, autotune=autotune)
    seconds: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[Timer()])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--autotune", choices=["on", "off"], help=argparse.SUPPRESS)  # one setting, in-process
    args = parser.parse_args()
    if args.autotune:
        print(json.dumps(epoch_seconds(args.images, args.epochs, args.autotune == "on")))
        return

    results = {"images": args.images, "epochs": args.epochs}
    for setting in ("off", "on"):
        command = [sys.executable, __file__, f"--images={args.images}", f"--epochs={args.epochs}"]
        output = subprocess.run(
            [*command, f"--autotune={setting}"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        )
        results[f"autotune_{setting}_seconds"] = json.loads(output.stdout.strip().splitlines()[-1])
    out = PROJECT_ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "epochs.json").write_text(json.dumps(results, indent=2))
    print(f"\n{args.images} training images per epoch, default gender network\n")
    print("| tf.data autotuning | seconds per epoch | median | max |\n|---|---|---:|---:|")
    for setting in ("off", "on"):
        seconds = results[f"autotune_{setting}_seconds"]
        listed = " ".join(f"{s:.0f}" for s in seconds)
        print(f"| {setting} | {listed} | {statistics.median(seconds):.1f} | {max(seconds):.1f} |")


if __name__ == "__main__":
    main()
