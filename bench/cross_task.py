"""Both networks answering both questions: each task's own network, the other network's auxiliary
head for it, and their weighted mean, on the validation and test splits.

    FACE_DATA_DIR=../shared/data/utkface .venv/bin/python bench/cross_task.py [--age-aux-gender 2]
    .venv/bin/python bench/cross_task.py --report-only   # the figures again, from the saved networks

Needs the preprocessed arrays of a previous run (``kedro run --pipelines=preprocessing``).
Trains the default gender network with age as an auxiliary output (``model.auxiliary``) and the
default age network with gender as one, with everything else from ``conf/`` (time budgets
included), through the training node itself, and saves both (every head) to
``bench/out/cross_task_<task>_network.keras``. Each head is then served as the saved models
are (mirror-averaged), and for each task the mean ``w x own network + (1 - w) x the other
network's head`` is scored for ``w`` = 1, 0.9, ... 0. The ``w`` with the lowest validation loss
(log loss for gender, MAE for age) is chosen, and the test split reports only that choice and
the two networks alone. Saved to ``bench/out/cross_task.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import keras
import numpy as np
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from face_pipeline.models import TASKS, inference_model
from face_pipeline.pipelines.evaluation.nodes import age_scores, gender_scores
from face_pipeline.pipelines.training.nodes import train_model
from face_pipeline.predict import predict_in_batches

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT = PROJECT_ROOT / "bench" / "out"
HEADLINE = {"gender": "accuracy", "age": "mae"}
SELECTION_LOSS = {"gender": "log_loss", "age": "mae"}
OWN_SHARES = np.round(np.linspace(1, 0, 11), 1)


def network_path(task: str) -> Path:
    return OUT / f"cross_task_{task}_network.keras"


def load_project() -> tuple:
    bootstrap_project(PROJECT_ROOT)
    with KedroSession.create(project_path=PROJECT_ROOT) as session:
        context = session.load_context()
        return context.catalog, context.params


def train(catalog, params, auxiliary: dict[str, dict[str, float]], images: int | None) -> None:
    """Both networks through ``train_model``, each saved with every head.

    ``images``: only the first that many of each split, two epochs, no time budget (a quick check
    of the setup, not a measurement).
    """
    names = ("train_images", "train_labels", "val_images", "val_labels")
    data = [catalog.load(name)[:images] for name in names]
    for task in TASKS:
        model_options = {**params[task]["model"], "auxiliary": auxiliary[task]}
        training = params[task]["training"]
        if images:
            training = {**training, "epochs": 2, "time_budget_minutes": None, "backup_dir": None}
            block = model_options["architecture"]
            model_options[block] = {**model_options[block], "downsample": 2}
        started = time.perf_counter()
        trained, _ = train_model(*data, params[task]["task"], model_options, training, keep_training_outputs=True)
        logging.info("%s network trained in %.1f min", task, (time.perf_counter() - started) / 60)
        trained.save(network_path(task))


def _scores(task: str, truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    scores = gender_scores(truth, predicted) if task == "gender" else age_scores(truth, predicted)
    return {name: scores[name] for name in {HEADLINE[task], SELECTION_LOSS[task]}}


def report(catalog, params, images: int | None) -> dict:
    """Scores of each network's heads and of their mean, the mean's weight chosen on validation."""
    trained = {task: keras.saving.load_model(network_path(task)) for task in TASKS}
    splits = {
        split: (catalog.load(f"{split}_images")[:images], catalog.load(f"{split}_labels")[:images])
        for split in ("val", "test")
    }
    # predicted[split][network][task]: each head served as the saved models are.
    predicted = {split: {network: {} for network in TASKS} for split in splits}
    for network, model in trained.items():
        mirror_average = bool(params[network]["model"].get("mirror_average"))
        for task in TASKS:
            served = inference_model(model, task, mirror_average=mirror_average)
            for split, (split_images, _) in splits.items():
                predicted[split][network][task] = predict_in_batches(served, split_images).astype(float)
    results = {}
    for task in TASKS:
        other = next(name for name in TASKS if name != task)

        def scored(split: str, share: float, task=task, other=other) -> dict[str, float]:
            mixed = share * predicted[split][task][task] + (1 - share) * predicted[split][other][task]
            return _scores(task, splits[split][1][task].to_numpy(float), mixed)

        losses = {float(share): scored("val", share)[SELECTION_LOSS[task]] for share in OWN_SHARES}
        chosen = min(losses, key=lambda share: (losses[share], -share))
        results[task] = {
            "weights": {task: chosen, other: round(1 - chosen, 1)},
            "validation_loss_by_own_share": losses,
            **{
                split: {
                    f"{task}_network": scored(split, 1.0),
                    f"{other}_network": scored(split, 0.0),
                    "ensemble": scored(split, chosen),
                }
                for split in ("val", "test")
            },
        }
    return results


def print_report(results: dict) -> None:
    for task, result in results.items():
        other = next(name for name in TASKS if name != task)
        metric = HEADLINE[task]
        shares = result["weights"]
        print(f"\n{task} {metric}; ensemble: {shares[task]} x {task} network + {shares[other]} x {other} network\n")
        print("| predictor | validation | test |\n|---|---:|---:|")
        for name, label in (
            (f"{task}_network", f"{task} network"),
            (f"{other}_network", f"{other} network's {task} head"),
            ("ensemble", "ensemble"),
        ):
            print(f"| {label} | {result['val'][name][metric]:.4f} | {result['test'][name][metric]:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gender-aux-age", type=float, default=0.01, help="age loss weight in the gender network")
    parser.add_argument("--age-aux-gender", type=float, default=2.0, help="gender loss weight in the age network")
    parser.add_argument("--images", type=int, help="first N images of each split, 2 epochs: a quick check")
    parser.add_argument("--report-only", action="store_true", help="report the saved networks, train nothing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    OUT.mkdir(parents=True, exist_ok=True)
    catalog, params = load_project()
    if not args.report_only:
        auxiliary = {"gender": {"age": args.gender_aux_age}, "age": {"gender": args.age_aux_gender}}
        train(catalog, params, auxiliary, args.images)
    results = report(catalog, params, args.images)
    (OUT / "cross_task.json").write_text(json.dumps(results, indent=2))
    print_report(results)


if __name__ == "__main__":
    main()
