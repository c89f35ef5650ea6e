"""Project settings. See https://docs.kedro.org/en/stable/configure/configuration_basics/."""

import os
import sys

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from face_pipeline.hooks import MlflowTagsHook, OneTrainingAtATime, ParametersCheckHook, RunNoteHook, TrackingStoreCheck
from face_pipeline.inference.packaging import pinned_requirements
from face_pipeline.ops.services import ServiceCheckHook

# TensorFlow's C++ start-up chatter (oneDNN, CPU features) hides the pipeline's own log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Without a terminal (CI, `kedro run > run.log`) Kedro's rich log handler wraps lines at 80
# columns, splitting each epoch's metrics over several lines; wider keeps each on one line.
if not sys.stdout.isatty():
    os.environ.setdefault("COLUMNS", "250")

# kedro-mlflow registers its own hook. The checks below run before it (tryfirst), in reverse order
# of this tuple (pluggy calls the last registered first): ParametersCheckHook reads every
# parameter block (a misspelt key fails the run at once), ServiceCheckHook names in one line
# every configured server that does not answer, TrackingStoreCheck checks the MLflow store itself;
# OneTrainingAtATime refuses a second training at once in the project; MlflowTagsHook adds code
# and data tags to the run; RunNoteHook logs run.note at the start and end of the run.
HOOKS = (
    RunNoteHook(),
    MlflowTagsHook(),
    OneTrainingAtATime(),
    TrackingStoreCheck(),
    ServiceCheckHook(),
    ParametersCheckHook(),
)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Kedro allows ${oc.env:...} only in credentials by default; globals.yml and mlflow.yml use
    # it so FACE_DATA_DIR and MLFLOW_TRACKING_URI work without editing configuration.
    # ${network_requirements:} in the catalog: the pinned pip requirements of a logged network.
    "custom_resolvers": {"oc.env": oc.env, "network_requirements": pinned_requirements},
    # Environments (conf/local, conf/seed) and --params change single keys of conf/base
    # instead of replacing whole top-level blocks.
    "merge_strategy": {"parameters": "soft"},
}
