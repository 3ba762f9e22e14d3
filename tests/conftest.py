"""Shared fixtures: a tiny random-weight BERT (fast unit tests) and the embedded MiniLM."""
from __future__ import annotations

import os

# Before transformers / huggingface_hub are imported: they read it once, at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gc  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, BertConfig, BertModel  # noqa: E402

from nerkit.config import embedded_model_path, register_resolvers  # noqa: E402
from tests.helpers import TOY_SENTENCES, make_cfg, write_conll  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))
register_resolvers()


@pytest.fixture(autouse=True)
def _collector_unfrozen_after_each_test():
    """Loading a run freezes what is alive (``nerkit.inference.freeze_loaded_objects``): after each
    test the collector sees everything again, so that one test's runs, once garbage, are collected."""
    yield
    gc.unfreeze()


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


@pytest.fixture
def toy_conll(tmp_path) -> Path:
    return write_conll(tmp_path / "toy.conll", TOY_SENTENCES)


@pytest.fixture(scope="session")
def fitted_toy_run(tiny_bert_dir, tmp_path_factory) -> Path:
    """A tiny BERT trained to fit the toy data (dev = train), as the int8 exports' tests start from:
    copy it before writing into it."""
    from nerkit.train import train

    tmp = tmp_path_factory.mktemp("fitted_toy")
    data = write_conll(tmp / "toy.conll", TOY_SENTENCES)
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}", "trainer.epochs=15", "trainer.lr=3e-3", "head.lr=3e-3",
                    "trainer.batch_size=2", "report_errors=false", "max_length=16", "stride=4",
                    f"data.train.path={data}", f"data.dev.path={data}"])
    assert train(cfg, tmp / "run") == 1.0  # it fits the toy data: its predictions mean something
    return tmp / "run"


@pytest.fixture(scope="session")
def bert_without_dropout(tiny_bert_dir, tmp_path_factory) -> Path:
    """Dropout draws from each process's own random stream; without it the runs are comparable."""
    directory = tmp_path_factory.mktemp("tiny_bert_no_dropout")
    shutil.copytree(tiny_bert_dir, directory, dirs_exist_ok=True)
    config = BertConfig.from_pretrained(directory)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(directory)
    return directory
