"""Scoring on the dataset's own tokens (conlleval-comparable), character-span scoring, and
the bootstrap interval."""
from __future__ import annotations

import random

import pytest
from seqeval.metrics import f1_score as conlleval_f1  # default mode: conlleval's rules
from transformers import AutoTokenizer

from nerkit.config import embedded_model_path
from nerkit.data.batching import window_dataset
from nerkit.data.encoding import TextEncoder
from nerkit.data.readers import Document, read_conll
from nerkit.data.schemes import get_scheme
from nerkit.evaluation import bootstrap_f1_ci, evaluate, score
from nerkit.model import NerModel
from nerkit.predict import Predictor
from tests.helpers import make_cfg

TAGS = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
# Tokens the pre-tokenizer would split ("1996-08-22", "U.S.") or drop entirely (zero-width space).
WORDS = ["Smith", "1996-08-22", "U.S.", "in", "Berlin", "\u200b", "Siemens", "o'clock", "the"]


def random_conll(path, n_sentences: int, seed: int):
    """A CoNLL file with a gold and a "predicted" tag column, both random (ill-formed I- starts included)."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n_sentences):
        n = rng.randint(1, 12)
        sentences.append([(rng.choice(WORDS), rng.choice(TAGS), rng.choice(TAGS)) for _ in range(n)])
    path.write_text("\n\n".join("\n".join(" ".join(row) for row in s) for s in sentences) + "\n", encoding="utf-8")
    return sentences


def test_read_conll_records_the_dataset_tokens(tmp_path):
    sentences = random_conll(tmp_path / "d.conll", 30, seed=1)
    for documents in (False, True):
        docs = read_conll(tmp_path / "d.conll", tag_column=1, documents=documents)
        tokens = [doc.text[s:e] for doc in docs for s, e in doc.tokens]
        assert tokens == [w for s in sentences for w, _, _ in s]


def test_f1_equals_conlleval_on_the_raw_tag_columns(tmp_path):
    sentences = random_conll(tmp_path / "d.conll", 200, seed=2)
    docs = read_conll(tmp_path / "d.conll", tag_column=1)
    gold_column = [[g for _, g, _ in s] for s in sentences]
    pred_column = [[p for _, _, p in s] for s in sentences]
    scheme = get_scheme("BIO")
    predicted = [scheme.decode(tags)[0] for tags in pred_column]  # the repair conlleval applies
    metrics = score(docs, predicted, "BIO")
    expected = conlleval_f1(gold_column, pred_column)
    assert 0.05 < expected < 0.95  # a real mix of hits and misses
    assert metrics["f1"] == pytest.approx(expected, abs=1e-12)
    assert metrics["scored_units"] == sum(len(s) for s in sentences)
    assert metrics["scored_on"] == "dataset tokens, seqeval strict IOB2"
    lo, hi = metrics["ci95"]
    assert lo < metrics["f1"] < hi


def test_evaluate_scores_every_dataset_token_including_ones_without_subtokens(tmp_path, tiny_bert_dir):
    sentences = random_conll(tmp_path / "d.conll", 40, seed=3)
    docs = read_conll(tmp_path / "d.conll", tag_column=1)
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}", "max_length=16", "stride=4"])
    predictor = Predictor(NerModel.from_config(cfg, ["LOC", "ORG", "PER"]), max_length=16, stride=4)
    encodings = predictor.text_encoder.encode([d.text for d in docs], [d.tokens for d in docs])
    assert [e.n_words for e in encodings] == [len(s) for s in sentences]  # words are the dataset's tokens
    zero_width = sum(w == "\u200b" for s in sentences for w, _, _ in s)
    assert zero_width and sum(e.unk_tokens for e in encodings) == zero_width

    metrics = evaluate(predictor, docs)
    assert metrics["scored_units"] == sum(len(s) for s in sentences)
    assert metrics["tokens_without_subtokens"] == zero_width
    # The same predictions, scored independently by conlleval's rules on tag columns.
    scheme = get_scheme("BIO")
    pred_column = [scheme.encode(sorted((s, e, label) for s, e, label, _ in spans), len(doc.tokens))
                   for doc, spans in zip(docs, predictor.predict_encoded(encodings))]
    assert metrics["f1"] == pytest.approx(conlleval_f1([[g for _, g, _ in s] for s in sentences], pred_column), abs=1e-12)


def test_training_rows_label_the_first_subtoken_of_each_dataset_token():
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    text = "Smith visited 1996-08-22 \u200b Berlin"
    tokens = [(0, 5), (6, 13), (14, 24), (25, 26), (27, 33)]
    doc = Document("d", text, [(14, 24, "DATE"), (25, 33, "LOC")], tokens=tokens)
    encoder = TextEncoder(tokenizer, max_length=64, stride=8)
    [row] = window_dataset([doc], encoder, ["DATE", "LOC"], nested=False).to_list()
    assert len(row["word_index"]) == 5  # one label per dataset token, not per pre-tokenizer word
    pieces = [tokenizer.convert_ids_to_tokens(row["input_ids"][i]) for i in row["word_index"]]
    assert pieces == ["smith", "visited", "1996", tokenizer.unk_token, "berlin"]
    assert row["spans"] == [[2, 3, 0], [3, 5, 1]]


def test_character_span_data_needs_exact_offsets():
    docs = [Document("a", "Ann met Bob Lee", [(0, 3, "PER"), (8, 15, "PER")]), Document("b", "Cy", [(0, 2, "PER")])]
    metrics = score(docs, [[(0, 3, "PER"), (8, 11, "PER")], [(0, 2, "LOC")]])
    assert metrics["scored_on"] == "characters, exact span match"
    assert (metrics["precision"], metrics["recall"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert metrics["per_type"]["PER"]["recall"] == pytest.approx(1 / 3)


def test_mixed_units_are_refused():
    with pytest.raises(ValueError, match="mix"):
        score([Document("a", "x", tokens=[(0, 1)]), Document("b", "y")], [[], []])


def test_bootstrap_interval_is_seeded_and_narrows_with_more_documents():
    rng = random.Random(0)
    docs = [(t := rng.randint(0, 3), t + rng.randint(0, 2), t + rng.randint(0, 2)) for _ in range(2000)]
    small = bootstrap_f1_ci(docs[:100], seed=1)
    assert small == bootstrap_f1_ci(docs[:100], seed=1)
    large = bootstrap_f1_ci(docs, seed=1)
    assert large[1] - large[0] < small[1] - small[0]
    assert bootstrap_f1_ci([(2, 2, 2)] * 50) == [1.0, 1.0]


def test_classification_accuracy_carries_a_seeded_bootstrap_interval():
    from nerkit.data.readers import Document
    from nerkit.tasks.classify import accuracy

    docs = [Document(str(i), "text", label="pos" if i % 3 else "neg") for i in range(300)]
    predicted = [("pos", 0.9)] * 300  # right on the 200 "pos" documents
    result = accuracy(predicted, docs, ["neg", "pos"])
    lo, hi = result["ci95"]
    assert result["accuracy"] == 200 / 300 and lo < 200 / 300 < hi
    assert 0.04 < hi - lo < 0.15  # about ±1.96 * sqrt(p(1-p)/n) = ±0.053
    assert accuracy(predicted, docs, ["neg", "pos"])["ci95"] == [lo, hi]  # seeded: the same interval again
