"""Helpers the tests import (``from tests.helpers import ...``); fixtures live in conftest.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nerkit.model import NerModel

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")
SHARED_DATA = ROOT.parent / "shared" / "data"
# Every head config: a new conf/head/*.yaml is tested without editing the tests.
HEAD_NAMES = sorted(p.stem for p in (ROOT / "conf" / "head").glob("*.yaml"))


def make_cfg(overrides: list[str] | None = None) -> DictConfig:
    """Compose conf/train.yaml with overrides, as `python -m nerkit.train` would."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides or [])


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in sentences) + "\n")
    return path


TOY_SENTENCES = [
    [("John", "B-PER"), ("Smith", "I-PER"), ("lives", "O"), ("in", "O"), ("Berlin", "B-LOC"), (".", "O")],
    [("Maria", "B-PER"), ("works", "O"), ("for", "O"), ("Siemens", "B-ORG"), ("in", "O"), ("Paris", "B-LOC")],
    [("Siemens", "B-ORG"), ("hired", "O"), ("John", "B-PER"), ("Smith", "I-PER"), ("yesterday", "O")],
    [("Paris", "B-LOC"), ("and", "O"), ("Berlin", "B-LOC"), ("are", "O"), ("cities", "O")],
]


def save_tiny_run(tiny_bert_dir: Path, directory: Path, head: str = "softmax", overrides: list[str] | None = None,
                  entity_types: tuple[str, ...] = ("LOC", "ORG", "PER")) -> Path:
    """A run directory holding an untrained tiny-BERT model (short windows, so long texts span several)."""
    cfg = make_cfg([f"head={head}", f"encoder.pretrained={tiny_bert_dir}", "max_length=16", "stride=4", *(overrides or [])])
    torch.manual_seed(0)
    NerModel.from_config(cfg, list(entity_types)).save(directory, cfg)
    return directory


def shared_data(relative: str) -> Path:
    """A path under ../shared/data (the real datasets, which CI has); fails naming it when missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.fail(f"{path} is missing: this test needs the shared datasets (see ../shared/data/README.md)")
    return path
