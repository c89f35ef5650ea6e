"""Imports run one way: no cycle among the package's modules, and no TensorFlow where workers prepare photos."""

import ast
import subprocess
import sys
from pathlib import Path

from conftest import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "src" / "face_pipeline"


def module_name(path: Path) -> str:
    parts = ("face_pipeline", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere: at the top and inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {candidate for candidate in candidates if candidate in modules and candidate != name}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan), and modules importing themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while (member := stack.pop()) != module:
                group.append(member)
            group.append(module)
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def test_no_import_cycle_even_inside_functions():
    graph = import_graph()
    assert len(graph) > 40  # the whole package was read
    found = cycles(graph)
    assert not found, "\n".join(
        " <-> ".join(group) + ": " + "; ".join(f"{m} -> {sorted(graph[m] & set(group))}" for m in group)
        for group in found
    )


def package_of(module: str) -> str:
    """``face_pipeline.inference.loading`` -> ``inference``; a module at the top is its own package."""
    return module.split(".")[1] if "." in module else module


def test_packages_import_one_way():
    """The layers of docs/architecture.md: a package imports only packages below it, never back."""
    packages: dict[str, set[str]] = {}
    for module, imported in import_graph().items():
        packages.setdefault(package_of(module), set()).update(package_of(other) for other in imported)
    for package, imported in packages.items():
        imported.discard(package)
    assert not cycles(packages), cycles(packages)


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_preparing_photos_in_a_worker_imports_neither_tensorflow_nor_keras():
    """What a prediction worker runs (``prepare_photos``: decoding, detection, alignment, the
    embedding chip) in a fresh interpreter, then which modules it loaded."""
    script = """
import sys
from skimage import data
from PIL import Image
import io
from face_pipeline.imaging.detection import DetectionSettings
from face_pipeline.imaging.decoding import ImageSpec
from face_pipeline.inference.photos import prepare_photos
import face_pipeline.inference.predictor  # what a worker process imports besides
buffer = io.BytesIO()
Image.fromarray(data.astronaut()).save(buffer, "JPEG")
prepared = prepare_photos([("a.jpg", buffer.getvalue())], ImageSpec(), DetectionSettings(), embedding_chips=True)
assert prepared.rows[0]["status"] == "ok" and prepared.chips.shape == (1, 150, 150, 3)
print(sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras")))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


KEDRO_FILES = {"__init__.py", "__main__.py", "settings.py", "pipeline_registry.py"}


def test_modules_stay_readable_and_the_top_of_the_package_short():
    """A module is at most 350 lines, and the top of the package holds Kedro's own files and at
    most 8 modules besides: the rest lives in the folders that show the design."""
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 350
    }
    assert not long, long
    top = sorted(path.name for path in PACKAGE.glob("*.py") if path.name not in KEDRO_FILES)
    assert len(top) <= 8, top
