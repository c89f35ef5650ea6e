"""Project settings. See https://docs.kedro.org/en/stable/configure/configuration_basics/."""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Kedro allows ${oc.env:...} only in credentials by default; globals.yml uses it
    # so FACE_DATA_DIR can point the pipelines at any image folder.
    "custom_resolvers": {"oc.env": oc.env},
}
