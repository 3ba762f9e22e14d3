"""data=hf: HuggingFace datasets give the same documents as read_conll, and clear errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, List, Value
from hydra.utils import get_class

from nerkit.data.hf import read_hf
from nerkit.data.readers import DataError, read_conll
from tests.helpers import make_cfg

CONLL = Path(__file__).resolve().parents[1] / "../shared/data/ner/conll2003"
ROOT = Path(__file__).resolve().parents[1]


def conll_rows(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """Sentences of a CoNLL-2003 file as (tokens, tags), parsed independently of read_conll."""
    tokens, tags, sentence = [], [], []
    for line in [*path.read_text().splitlines(), ""]:
        if line.strip() and not line.startswith("-DOCSTART-"):
            sentence.append(line.split())
        elif sentence:
            tokens.append([c[0] for c in sentence])
            tags.append([c[-1] for c in sentence])
            sentence = []
    return tokens, tags


def as_classlabel_split(path: Path, names: list[str]) -> Dataset:
    tokens, tags = conll_rows(path)
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=names))})
    return Dataset.from_dict({"tokens": tokens, "ner_tags": [[names.index(t) for t in s] for s in tags]}, features=features)


NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


@pytest.fixture(scope="module")
def saved_conll(tmp_path_factory) -> Path:
    """CoNLL-2003 valid and test as a saved DatasetDict with ClassLabel tags, as the hub has it."""
    folder = tmp_path_factory.mktemp("conll_hf") / "conll2003"
    DatasetDict({"validation": as_classlabel_split(CONLL / "valid.txt", NAMES),
                 "test": as_classlabel_split(CONLL / "test.txt", NAMES)}).save_to_disk(str(folder))
    return folder


def token_spans(text: str) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for token in text.split(" "):
        spans.append((pos, pos + len(token)))
        pos += len(token) + 1
    return spans


@pytest.mark.parametrize("split,file", [("validation", "valid.txt"), ("test", "test.txt")])
def test_saved_datasetdict_reads_like_read_conll(saved_conll, split, file):
    docs = read_hf(saved_conll, split, num_proc=2 if split == "test" else None)
    expected = read_conll(CONLL / file)
    assert len(docs) == len(expected) > 3000
    assert [(d.text, d.spans) for d in docs] == [(d.text, d.spans) for d in expected]
    assert sum(len(d.spans) for d in docs) == {"valid.txt": 5942, "test.txt": 5648}[file]
    assert all(d.tokens == token_spans(d.text) for d in docs)
    assert docs[5].id == f"{split}:5"
    # The conversion is a cached map over the saved Arrow files.
    again = read_hf(saved_conll, split)
    assert [(d.text, d.spans, d.tokens) for d in again] == [(d.text, d.spans, d.tokens) for d in docs]
    assert any(p.name.startswith("cache-") for p in (saved_conll / split).iterdir())


def test_parquet_string_tags_and_limit(tmp_path):
    rows = {"words": [["Ann", "met", "Bob", "Lee"], [], ["in", "New", "York"]],
            "labels": [["B-PER", "O", "B-PER", "I-PER"], [], ["O", "B-LOC", "I-LOC"]]}
    path = tmp_path / "train.parquet"
    Dataset.from_dict(rows).to_parquet(str(path))
    docs = read_hf(path, "train", tokens_column="words", tags_column="labels")
    assert [(d.text, [tuple(s) for s in d.spans]) for d in docs] == [
        ("Ann met Bob Lee", [(0, 3, "PER"), (8, 15, "PER")]),
        ("in New York", [(3, 11, "LOC")]),
    ]
    assert docs[1].id == "train:2" and docs[1].tokens == [(0, 2), (3, 6), (7, 11)]
    assert len(read_hf(path, "train", tokens_column="words", tags_column="labels", limit=1)) == 1


def test_csv_and_integer_tags_with_label_names(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('tokens,ner_tags\nAnn met Bob,"[1, 0, 1]"\n')
    docs = read_hf(path, "train", label_names=["O", "B-PER", "I-PER"])
    assert [(d.text, [tuple(s) for s in d.spans]) for d in docs] == [("Ann met Bob", [(0, 3, "PER"), (8, 11, "PER")])]
    with pytest.raises(DataError, match=r"row 0: tags \[1, 0, 1\] are not strings, .*data.label_names"):
        read_hf(path, "train")


def test_missing_column_names_the_columns(saved_conll):
    with pytest.raises(DataError, match=r"\[validation\]: no column 'tags'; the columns are \['tokens', 'ner_tags'\]"):
        read_hf(saved_conll, "validation", tags_column="tags")


def test_missing_split_lists_the_splits(saved_conll):
    with pytest.raises(DataError, match=r"has no split 'train'; its splits are \['test', 'validation'\]"):
        read_hf(saved_conll, "train")


def test_bad_rows_are_named(tmp_path):
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=["O", "B-PER", "I-PER"]))})
    # An id past the ClassLabel's names, as a corrupted export holds it (datasets checks ids only
    # when it encodes Python values, not when it takes Arrow data).
    table = pa.table({"tokens": [["Ann"], ["Bob", "Lee"]], "ner_tags": pa.array([[1], [1, 7]], pa.list_(pa.int64()))})
    ds = Dataset(table.cast(features.arrow_schema), info=DatasetInfo(features=features))
    folder = tmp_path / "bad_id"
    ds.save_to_disk(str(folder))
    with pytest.raises(DataError, match=r"row 1: tag id 7 is out of range for the 3 tag names"):
        read_hf(folder, "train", num_proc=2)
    path = tmp_path / "lengths.jsonl"
    path.write_text(json.dumps({"tokens": ["a", "b"], "ner_tags": ["O"]}) + "\n")
    with pytest.raises(DataError, match=r"row 0: 2 tokens but 1 tags"):
        read_hf(path, "train")
    path.write_text(json.dumps({"tokens": ["a"], "ner_tags": ["X-PER"]}) + "\n")
    with pytest.raises(DataError, match=r"row 0: tag 'X-PER' is not a valid BIO tag"):
        read_hf(path, "train")


@pytest.mark.slow
def test_train_cli_on_a_saved_dataset(tiny_bert_dir, tmp_path):
    sentences = as_classlabel_split(CONLL / "valid.txt", NAMES)
    folder = tmp_path / "small"
    DatasetDict({"train": sentences.select(range(40)), "validation": sentences.select(range(40, 60)),
                 "test": sentences.select(range(60, 80))}).save_to_disk(str(folder))
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "nerkit.train", "data=hf", f"data.path={folder}", f"encoder.pretrained={tiny_bert_dir}",
                    "trainer.max_steps=2", "trainer.batch_size=4", "trainer.device=cpu",
                    f"hydra.run.dir={run}"], cwd=ROOT, env=env, check=True, capture_output=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_windows"] == 40 and metrics["history"][0]["step"] == 2 and metrics["test"]["gold_entities"] > 0
    assert "Dev (seqeval strict" in (run / "README.md").read_text()


@pytest.mark.parametrize("task", ["ner", "classify"])
def test_model_card_code_imports_what_it_names(task, tiny_bert_dir):
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}", f"task={task}"])
    card = get_class(cfg.task._target_).model_card(cfg, ["A", "B"])
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    imports = [line for line in code.splitlines() if line.startswith(("from ", "import "))]
    assert imports
    for line in imports:
        exec(line, {})  # an ImportError here means users copy a card that does not run
