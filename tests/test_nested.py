"""Nested entities end to end: token-span readers -> training -> scoring with nesting kept."""
from __future__ import annotations

import json

import pytest

from nerkit.data.readers import DataError, read_token_spans, read_w2ner
from nerkit.data.schemes import Span, inner_spans
from nerkit.error_analysis import enclosing, nested_errors
from nerkit.evaluation import score
from nerkit.train import train
from tests.helpers import HEAD_NAMES, make_cfg, shared_data

NESTED_HEADS = {"global_pointer", "efficient_global_pointer"}  # heads whose class says supports_nested


def write_lines(path, objects) -> str:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects), encoding="utf-8")
    return str(path)


def test_token_spans_become_character_spans_into_the_space_joined_text(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [
        {"tokens": ["the", "IL-2", "receptor", "gene"], "entities": [
            {"start": 1, "end": 4, "label": "DNA"}, {"start": 1, "end": 3, "label": "protein"},
            {"start": 1, "end": 3, "label": "protein"}]},  # a duplicate line of the annotation is one entity
        "",
        {"id": "s2", "tokens": ["none", "here"], "entities": []},
    ])
    first, second = read_token_spans(path)
    assert first.text == "the IL-2 receptor gene"
    assert first.tokens == [(0, 3), (4, 8), (9, 17), (18, 22)]
    assert first.spans == [Span(4, 17, "protein"), Span(4, 22, "DNA")]
    assert [first.text[s:e] for s, e, _ in first.spans] == ["IL-2 receptor", "IL-2 receptor gene"]
    assert first.id == "d.jsonl:1" and second.id == "s2" and second.spans == []


def test_w2ner_index_lists_become_spans_with_nesting_kept(tmp_path):
    path = write_lines(tmp_path / "w.json", [
        {"sentence": ["beta", "1", "receptor", "mRNA"], "ner": [{"index": [0, 1, 2], "type": "protein"},
                                                                 {"index": [0, 1, 2, 3], "type": "RNA"},
                                                                 {"index": [3], "type": "RNA"}]}])
    (doc,) = read_w2ner(path)
    assert doc.text == "beta 1 receptor mRNA"
    assert [(doc.text[s:e], label) for s, e, label in doc.spans] == [
        ("beta 1 receptor", "protein"), ("beta 1 receptor mRNA", "RNA"), ("mRNA", "RNA")]
    assert inner_spans(doc.spans) == {Span(0, 15, "protein"), Span(16, 20, "RNA")}


def test_genia_nested_reads_with_its_documented_counts():
    root = shared_data("ner/genia_nested")
    for split, sentences, entities, inner in (("train", 1200, 3596, 406), ("dev", 250, 709, 79)):
        docs = read_w2ner(root / f"{split}.json")
        assert len(docs) == sentences
        assert sum(len(d.spans) for d in docs) == entities
        assert sum(len(inner_spans(d.spans)) for d in docs) == inner
        assert all(d.text == " ".join(d.text[s:e] for s, e in d.tokens) for d in docs)


GOOD = {"sentence": ["a", "b", "c"], "ner": [{"index": [0, 1], "type": "X"}]}


@pytest.mark.parametrize("reader, bad, problem", [
    (read_w2ner, {"sentence": ["a", "b", "c"], "ner": [{"index": [0, 2], "type": "X"}]}, "is not contiguous: [0, 2]"),
    (read_w2ner, {"sentence": ["a", "b", "c"], "ner": [{"index": [2, 1], "type": "X"}]}, "is not contiguous"),
    (read_w2ner, {"sentence": ["a", "b"], "ner": [{"index": [1, 2], "type": "X"}]}, "out of range for 2 tokens"),
    (read_w2ner, {"sentence": ["a", "b"], "ner": [{"index": [], "type": "X"}]}, "non-empty list of token positions"),
    (read_w2ner, {"sentence": ["a", "b"], "ner": [{"index": [0], "type": ""}]}, "non-empty string"),
    (read_w2ner, {"sentence": ["a", "b"], "ner": [{"index": [0]}]}, "needs 'index' and 'type'"),
    (read_w2ner, {"sentence": "a b", "ner": []}, "list of strings under 'sentence'"),
    (read_w2ner, {"sentence": ["a", ""], "ner": []}, "token 1 must be a non-empty string"),
    (read_w2ner, {"sentence": ["a"]}, "expected a list under 'ner'"),
    (read_w2ner, '{"sentence": ["a"], "ner": [}', "invalid JSON"),
    (read_token_spans, {"tokens": ["a", "b"], "entities": [{"start": 1, "end": 1, "label": "X"}]}, "[1, 1)"),
    (read_token_spans, {"tokens": ["a", "b"], "entities": [{"start": 0, "end": 3, "label": "X"}]}, "out of range"),
    (read_token_spans, {"tokens": ["a", "b"], "entities": [{"start": 0, "end": True, "label": "X"}]},
     "integer token index"),
    (read_token_spans, {"tokens": ["a", "b"], "entities": [{"start": 0, "label": "X"}]}, "needs 'start', 'end'"),
    (read_token_spans, {"text": "a b", "entities": []}, "list of strings under 'tokens'"),
    (read_token_spans, {"tokens": ["a", "New York"], "entities": []}, "without whitespace"),
    (read_token_spans, {"tokens": ["a"], "entities": [{"start": 0, "end": 1, "label": " X "}]},
     "surrounding whitespace"),
    (read_token_spans, '{"tokens": ["a"], "entities": [{"start": 0, "end": 1, "label": "X", "label": "Y"}]}',
     "'label' appears twice"),
])
def test_bad_lines_name_file_line_and_problem(tmp_path, reader, bad, problem):
    good = GOOD if reader is read_w2ner else {"tokens": ["a", "b"], "entities": []}
    path = write_lines(tmp_path / "bad.jsonl", [good, "", bad])
    with pytest.raises(DataError) as err:
        reader(path)
    assert str(err.value).startswith(f"{path}:3: ") and problem in str(err.value)


def test_a_json_array_file_is_refused_naming_the_format(tmp_path):
    path = write_lines(tmp_path / "array.json", [json.dumps([GOOD])])
    with pytest.raises(DataError, match="expected JSON Lines .* found a JSON array"):
        read_w2ner(path)


def nested_documents(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [
        {"tokens": ["the", "IL-2", "receptor", "gene", "binds"], "entities": [
            {"start": 1, "end": 4, "label": "DNA"}, {"start": 1, "end": 3, "label": "protein"},
            {"start": 1, "end": 2, "label": "protein"}]},
        {"tokens": ["CD4", "cells"], "entities": [{"start": 0, "end": 2, "label": "cell_type"},
                                                  {"start": 0, "end": 1, "label": "protein"}]}])
    return read_token_spans(path)


def test_span_head_scores_keep_every_nested_gold_entity(tmp_path):
    docs = nested_documents(tmp_path)
    gold = [[(1, 4, "DNA"), (1, 3, "protein"), (1, 2, "protein")], [(0, 2, "cell_type"), (0, 1, "protein")]]
    perfect = score(docs, gold, nested=True)
    assert perfect["f1"] == 1.0 and perfect["gold_entities"] == 5
    assert perfect["scored_on"] == "dataset tokens, exact span match, nested entities kept"
    assert perfect["nesting"]["inner_recall"] == 1.0 and perfect["nesting"]["gold_inner_entities"] == 3
    assert perfect["per_type"]["protein"]["support"] == 3 and perfect["ci95"] == [1.0, 1.0]
    # Only the outer entities: every inner one missed, nothing wrong predicted.
    outer = score(docs, [[(1, 4, "DNA")], [(0, 2, "cell_type")]], nested=True)
    assert outer["precision"] == 1.0 and outer["recall"] == pytest.approx(2 / 5)
    assert outer["nesting"]["inner_recall"] == 0.0


def test_tag_head_scores_as_before_and_counts_what_flattening_dropped(tmp_path):
    docs = nested_documents(tmp_path)
    flat = [[(1, 4, "DNA")], [(0, 1, "protein")]]  # a tag head can only predict flat spans
    metrics = score(docs, flat, nested=False)
    assert metrics["scored_on"] == "dataset tokens, seqeval strict IOB2"
    # Flattened gold keeps the longest of each nest: DNA [1,4) and cell_type [0,2); 3 dropped.
    assert metrics["overlapping_entities_dropped"] == {"gold": 3, "predicted": 0}
    assert metrics["gold_entities"] == 2 and metrics["f1"] == pytest.approx(0.5)
    # Against the nested truth: 2 of 5 gold found, 1 of the 3 inner ones.
    assert metrics["nesting"]["recall"] == pytest.approx(2 / 5) and metrics["nesting"]["precision"] == 1.0
    assert metrics["nesting"]["inner_recall"] == pytest.approx(1 / 3)
    nested_prediction = score(docs, [[(1, 4, "DNA"), (1, 2, "protein")], []], nested=False)
    assert nested_prediction["overlapping_entities_dropped"] == {"gold": 3, "predicted": 1}


def test_nested_errors_hand_counted():
    gold = [Span(0, 20, "DNA"), Span(0, 10, "protein"), Span(12, 20, "protein")]
    predicted = [Span(0, 20, "DNA"), Span(0, 10, "protein"), Span(0, 4, "protein"), Span(30, 35, "RNA")]
    errors = nested_errors(gold, predicted)
    assert errors == {"found_inner": [Span(0, 10, "protein")], "missed_inner": [Span(12, 20, "protein")],
                      "spurious_inner": [Span(0, 4, "protein")]}
    assert enclosing(Span(0, 4, "protein"), predicted) == Span(0, 10, "protein")  # the smallest enclosing one
    assert enclosing(Span(30, 35, "RNA"), predicted) is None


@pytest.mark.slow
@pytest.mark.parametrize("head", HEAD_NAMES)
def test_nested_data_round_trips_through_training_and_scoring(head, tiny_bert_dir, tmp_path):
    """Reader -> windows -> training -> dev scoring -> error report, for every head: span heads are
    selected and scored on every nested gold entity, tag heads say what flattening dropped."""
    sentence = {"tokens": ["the", "IL-2", "receptor", "gene", "in", "CD4", "T", "cells"], "entities": [
        {"start": 1, "end": 4, "label": "DNA"}, {"start": 1, "end": 3, "label": "protein"},
        {"start": 5, "end": 8, "label": "cell_type"}, {"start": 5, "end": 6, "label": "protein"}]}
    path = write_lines(tmp_path / "nested.jsonl", [sentence] * 6)
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}", f"head={head}", "data=genia_nested",
                    "data.train._target_=nerkit.data.readers.read_token_spans", f"data.train.path={path}",
                    "data.dev._target_=nerkit.data.readers.read_token_spans", f"data.dev.path={path}",
                    "trainer.epochs=15", "trainer.lr=3e-3", "head.lr=3e-3", "trainer.batch_size=2",
                    "trainer.eval_every=15", "report_errors=true"])
    best = train(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    dev = max((h["dev"] for h in metrics["history"]), key=lambda d: d["f1"])
    assert metrics["best_dev_f1"] == best == dev["f1"]  # model selection on the score below
    assert dev["nesting"]["gold_inner_entities"] == 12
    if head in NESTED_HEADS:
        assert dev["scored_on"] == "dataset tokens, exact span match, nested entities kept"
        assert dev["gold_entities"] == 24 and dev["f1"] == dev["nesting"]["f1"]
        assert dev["nesting"]["inner_recall"] > 0, "the span head predicts no inner entity: nesting was lost"
    else:
        assert dev["overlapping_entities_dropped"]["gold"] == 12 and dev["gold_entities"] == 12
        assert dev["overlapping_entities_dropped"]["predicted"] == 0
    report = json.loads((tmp_path / "run" / "errors.json").read_text())
    nesting = report["nesting"]
    assert nesting["gold_inner"] == 12
    assert nesting["found_inner"] + nesting["missed_inner"]["count"] == 12
    assert nesting["found_inner"] == round(dev["nesting"]["inner_recall"] * 12)
    assert 'id="nesting"' in (tmp_path / "run" / "errors.html").read_text()
