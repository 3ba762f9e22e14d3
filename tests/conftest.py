"""Shared fixtures: a tiny random-weight BERT (fast unit tests) and the embedded MiniLM."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from transformers import AutoTokenizer, BertConfig, BertModel

from nerkit.config import embedded_model_path, register_resolvers
from nerkit.model import NerModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
register_resolvers()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's uncased WordPiece tokenizer."""
    directory = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


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


@pytest.fixture
def toy_conll(tmp_path) -> Path:
    return write_conll(tmp_path / "toy.conll", TOY_SENTENCES)


def save_tiny_run(tiny_bert_dir: Path, directory: Path, head: str = "softmax", overrides: list[str] | None = None,
                  entity_types: tuple[str, ...] = ("LOC", "ORG", "PER")) -> Path:
    """A run directory holding an untrained tiny-BERT model (short windows, so long texts span several)."""
    cfg = make_cfg([f"head={head}", f"encoder.pretrained={tiny_bert_dir}", "max_length=16", "stride=4", *(overrides or [])])
    torch.manual_seed(0)
    NerModel.from_config(cfg, list(entity_types)).save(directory, cfg)
    return directory
