"""The documentation and notebooks cannot drift from the code and configuration."""

import importlib.util
import json

import pytest
from conftest import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))


def config_reference():
    spec = importlib.util.spec_from_file_location("gen_config_reference", PROJECT_ROOT / "docs/gen_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_up_to_date():
    generator = config_reference()
    assert generator.PAGE.read_text() == generator.render(), "run: python docs/gen_config_reference.py"


def test_every_parameter_is_described():
    generator = config_reference()
    for name in generator.FILES:
        undocumented = [
            key for key, _, description in generator.rows(PROJECT_ROOT / "conf/base" / name) if not description
        ]
        assert not undocumented, f"{name}: add a comment to {undocumented}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: clear the outputs"


@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_notebooks_run_on_generated_data(trained_project, name, monkeypatch):
    import nbformat  # noqa: PLC0415
    from nbclient import NotebookClient  # noqa: PLC0415

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{trained_project / 'mlflow.db'}")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(trained_project / "notebooks" / name, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(trained_project / "notebooks")}},
    ).execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any(
        o.get("output_type") in {"display_data", "execute_result"} for c in notebook.cells for o in c.get("outputs", [])
    )
