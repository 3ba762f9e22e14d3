"""Every nerkit module imports, and no import runs in a circle: neither at module level nor
inside functions (lazy imports) nor in ``if __name__ == "__main__"`` blocks."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nerkit"
MODULES = sorted(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
                 for p in PACKAGE.rglob("*.py"))


def imports(module: str, source: str | None = None) -> set[str]:
    """nerkit modules that ``module`` (or ``source``, as its text) imports anywhere: at module level,
    inside functions and classes, under ``if TYPE_CHECKING`` and in ``if __name__ == "__main__"`` blocks."""
    if source is None:
        path = PACKAGE.parent / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
        source = path.read_text()
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in MODULES and name != module}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def walk(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt, path + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := walk(start, [start])):
            return cycle
    return None


def test_no_import_cycle_among_nerkit_modules():
    graph = {module: imports(module) for module in MODULES}
    assert graph["nerkit.train"] >= {"nerkit.engine"}  # the graph sees module-level imports,
    assert graph["nerkit.cli"] >= {"nerkit.onnx_predict"}  # lazy ones (inside a function)
    assert graph["nerkit.serve"] >= {"nerkit.cli"}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_import_finder_sees_lazy_and_main_block_imports():
    source = ("import json\n"
              "def load():\n    from nerkit.predict import Predictor\n"
              "class Face:\n    def run(self):\n        import nerkit.cli\n"
              "if __name__ == '__main__':\n    from nerkit.predict_cli import main\n")
    assert imports("nerkit.example", source) == {"nerkit.predict", "nerkit.predict.Predictor"} & set(MODULES) | {
        "nerkit.cli", "nerkit.predict_cli"}


def test_the_old_batch_command_names_its_new_module():
    """python -m nerkit.predict ran the CLI from inside the Predictor's module (the import circle);
    run the old way it fails with the new command instead of doing nothing."""
    result = subprocess.run([sys.executable, "-m", "nerkit.predict", "run_dir=x"], cwd=PACKAGE.parent,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "python -m nerkit.predict_cli run_dir=DIR" in result.stderr


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module):
    importlib.import_module(module)
