"""Benchmarks compare configurations, never patched code: no bench module assigns to (or deletes,
or setattr's) an attribute or item of anything it imported from nerkit, and importing every bench
module leaves every nerkit module and class as it was."""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import sys

import pytest

import nerkit
from bench.common import ROOT

BENCH_FILES = sorted((ROOT / "bench").glob("*.py"))


def nerkit_names(tree: ast.Module) -> set[str]:
    """Local names bound to nerkit modules or objects by the module's imports."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == "nerkit"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "nerkit":
            names |= {a.asname or a.name for a in node.names}
    return names


def root_name(node: ast.AST) -> str | None:
    """``a`` of ``a.b.c`` or ``a.b[c]``."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def patches(source: str, filename: str = "<bench>") -> list[str]:
    """Every place the source changes something it imported from nerkit."""
    tree = ast.parse(source, filename)
    imported = nerkit_names(tree)
    found = []
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            targets = node.args[:1]
        for target in targets:
            for sub in ast.walk(target):  # tuple targets: a, NerTask.batch = ...
                if isinstance(sub, (ast.Attribute, ast.Subscript)) and root_name(sub) in imported:
                    found.append(f"{filename}:{node.lineno}: {ast.unparse(sub)}")
                    break
            else:
                if isinstance(node, ast.Call) and root_name(target) in imported:
                    found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("source, expected", [
    ("import nerkit.engine\nnerkit.engine.adamw = None\n", ["nerkit.engine.adamw"]),
    ("from nerkit.tasks.ner import NerTask\nNerTask.batch = lambda t, r: r\n", ["NerTask.batch"]),
    ("from nerkit.heads.softmax import SoftmaxHead as S\nx, S.loss = 1, 2\n", ["S.loss"]),
    ("from nerkit.data.batching import BATCH_ORDERS\nBATCH_ORDERS['length'] = sorted\n", ["BATCH_ORDERS['length']"]),
    ("from nerkit.classifier import Classifier\nsetattr(Classifier, 'input_features', len)\n", ["setattr(Classifier"]),
    ("from nerkit import predict\ndel predict.Predictor.scores\n", ["predict.Predictor.scores"]),
])
def test_the_scan_finds_each_kind_of_patch(source, expected):
    found = patches(source)
    assert len(found) == len(expected)
    for line, what in zip(found, expected):
        assert what in line


def test_the_scan_leaves_local_objects_alone():
    source = ("from nerkit.predict import Predictor\nimport torch\n"
              "class Timed(Predictor):\n    seconds = 0.0\n"
              "p = Timed.__new__(Timed)\nconfig = {}\nconfig['a'] = 1\ntorch.backends.x = 1\n")
    assert patches(source) == []


def test_no_bench_module_patches_nerkit():
    found = [line for path in BENCH_FILES for line in patches(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert found == [], "bench/ must compare configurations, not patch nerkit:\n" + "\n".join(found)


def nerkit_state() -> dict[str, int]:
    """id() of every attribute of every loaded nerkit module and of every class defined in one."""
    state = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] != "nerkit" or module is None:
            continue
        for attr, value in vars(module).items():
            state[f"{name}.{attr}"] = id(value)
            if inspect.isclass(value) and value.__module__ == name:
                state |= {f"{name}.{attr}.{k}": id(v) for k, v in vars(value).items()}
                for k, v in vars(value).items():
                    if isinstance(v, dict):  # class-level tables (registries) by content
                        state[f"{name}.{attr}.{k}[]"] = hash(tuple((key, id(item)) for key, item in v.items()))
            elif isinstance(value, dict):
                state[f"{name}.{attr}[]"] = hash(tuple((key, id(item)) for key, item in value.items()))
    return state


def test_importing_every_bench_module_changes_no_nerkit_attribute():
    for info in pkgutil.walk_packages(nerkit.__path__, "nerkit."):
        importlib.import_module(info.name)
    before = nerkit_state()
    for path in BENCH_FILES:
        importlib.import_module(f"bench.{path.stem}")
    after = nerkit_state()
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert changed == [], f"importing bench/ changed nerkit attributes: {changed}"


def test_the_state_sees_a_replaced_method_and_a_changed_table(monkeypatch):
    from nerkit.data.batching import BATCH_ORDERS
    from nerkit.tasks.ner import NerTask

    before = nerkit_state()
    monkeypatch.setattr(NerTask, "batch", lambda task, rows: rows)
    monkeypatch.setitem(BATCH_ORDERS, "length", sorted)
    after = nerkit_state()
    changed = {k for k in before if after.get(k) != before[k]}
    assert {"nerkit.tasks.ner.NerTask.batch", "nerkit.data.batching.BATCH_ORDERS[]"} <= changed
    # the table is seen wherever a module imported it (nerkit.engine, nerkit.validation), nothing else
    assert all(k == "nerkit.tasks.ner.NerTask.batch" or k.endswith(".BATCH_ORDERS[]") for k in changed)
