"""Error classes, per-type scores, confusion and window edges against hand-counted cases; the
report files and the ``python -m nerkit.report errors`` command on a tiny model."""
from __future__ import annotations

import json

import pytest

from nerkit.data.encoding import EncodedText
from nerkit.data.readers import read_conll
from nerkit.data.schemes import Span
from nerkit.data.windowing import Window
from nerkit.error_analysis import NONE, SpanError, classify_errors, confusion, edge_distance, type_scores, window_edges
from nerkit.error_report import highlight, write_error_report
from nerkit.predict import Predictor
from nerkit.report import main as report_main
from tests.helpers import TOY_SENTENCES, save_tiny_run, write_conll


def kinds(errors: list[SpanError]) -> list[str]:
    return [e.kind for e in errors]


def test_exact_match_is_correct_and_no_error():
    correct, errors = classify_errors([Span(0, 10, "PER")], [Span(0, 10, "PER")])
    assert correct == [Span(0, 10, "PER")] and errors == []


@pytest.mark.parametrize("gold, predicted, expected", [
    ([Span(0, 4, "PER")], [], SpanError("missed", Span(0, 4, "PER"), None)),
    ([], [Span(5, 9, "LOC")], SpanError("spurious", None, Span(5, 9, "LOC"))),
    ([Span(5, 9, "LOC")], [Span(20, 25, "LOC")], None),  # no overlap: one missed and one spurious
    ([Span(0, 10, "PER")], [Span(0, 4, "PER")], SpanError("boundary", Span(0, 10, "PER"), Span(0, 4, "PER"))),
    ([Span(0, 4, "PER")], [Span(0, 4, "ORG")], SpanError("type", Span(0, 4, "PER"), Span(0, 4, "ORG"))),
    ([Span(0, 10, "ORG")], [Span(5, 10, "LOC")],
     SpanError("type_and_boundary", Span(0, 10, "ORG"), Span(5, 10, "LOC"))),
])
def test_each_error_class(gold, predicted, expected):
    correct, errors = classify_errors(gold, predicted)
    assert correct == []
    if expected is None:
        assert sorted(kinds(errors)) == ["missed", "spurious"]
    else:
        assert errors == [expected]


def test_a_prediction_overlapping_only_a_found_gold_span_is_spurious():
    correct, errors = classify_errors([Span(0, 10, "PER")], [Span(0, 10, "PER"), Span(5, 10, "LOC")])
    assert correct == [Span(0, 10, "PER")]
    assert errors == [SpanError("spurious", None, Span(5, 10, "LOC"))]


def test_two_fragments_of_one_gold_span_are_two_boundary_errors_and_not_a_miss():
    gold = [Span(0, 13, "LOC")]  # "New York City"
    correct, errors = classify_errors(gold, [Span(0, 8, "LOC"), Span(9, 13, "LOC")])
    assert correct == [] and kinds(errors) == ["boundary", "boundary"]
    assert [e.gold for e in errors] == [gold[0], gold[0]]


def test_same_boundaries_outrank_same_type_and_both_overlapped_gold_spans_are_explained():
    # Nested gold: PER [0, 4) inside ORG [0, 8); the prediction ORG [0, 4) has PER's boundaries.
    _, errors = classify_errors([Span(0, 4, "PER"), Span(0, 8, "ORG")], [Span(0, 4, "ORG")])
    assert errors == [SpanError("type", Span(0, 4, "PER"), Span(0, 4, "ORG"))]


MIXED_GOLD = [Span(0, 5, "PER"), Span(10, 15, "LOC"), Span(20, 30, "ORG"), Span(40, 45, "MISC"), Span(50, 55, "PER")]
MIXED_PREDICTED = [Span(0, 5, "PER"),  # correct
                   Span(10, 14, "LOC"),  # boundary
                   Span(20, 30, "LOC"),  # type
                   Span(38, 44, "ORG"),  # type and boundary (gold MISC)
                   Span(60, 65, "LOC")]  # spurious; gold PER [50, 55) is missed


def test_a_mixed_document_hand_counted():
    correct, errors = classify_errors(MIXED_GOLD, MIXED_PREDICTED)
    assert correct == [Span(0, 5, "PER")]
    assert sorted(kinds(errors)) == sorted(["boundary", "type", "type_and_boundary", "spurious", "missed"])
    # Every prediction is correct or exactly one error.
    assert len(correct) + sum(e.predicted is not None for e in errors) == len(MIXED_PREDICTED)

    pairs = confusion(correct, errors)
    assert pairs == {("PER", "PER"): 1, ("LOC", "LOC"): 1, ("ORG", "LOC"): 1, ("MISC", "ORG"): 1,
                     (NONE, "LOC"): 1, ("PER", NONE): 1}


def test_type_scores_hand_counted():
    scores = type_scores([MIXED_GOLD, [Span(0, 3, "LOC")]], [MIXED_PREDICTED, [Span(0, 3, "LOC")]])
    # PER: gold 2, predicted 1, correct 1. LOC: gold 2, predicted 4, correct 1.
    assert scores["PER"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "gold": 2,
                             "predicted": 1, "correct": 1}
    assert scores["LOC"] == {"precision": 0.25, "recall": 0.5, "f1": pytest.approx(1 / 3), "gold": 2,
                             "predicted": 4, "correct": 1}
    assert scores["MISC"]["f1"] == 0.0 and scores["ORG"]["predicted"] == 1
    assert scores["overall"] == {"precision": 2 / 6, "recall": 2 / 6, "f1": pytest.approx(2 / 6), "gold": 6,
                                 "predicted": 6, "correct": 2}


def hand_encoded(windows: list[Window]) -> EncodedText:
    """10 words of 2 sub-word tokens each; word i is characters [5i, 5i + 4)."""
    return EncodedText(token_ids=list(range(20)), word_token_starts=list(range(0, 20, 2)),
                       word_char_starts=[5 * i for i in range(10)], word_char_ends=[5 * i + 4 for i in range(10)],
                       windows=windows)


def test_window_edges_and_distances_hand_counted():
    enc = hand_encoded([Window(0, 6, 0, 12), Window(4, 10, 8, 20)])
    edges = window_edges(enc)
    assert edges == [8, 12]  # the second window starts at token 8, the first ends at token 12
    assert edge_distance(enc, Span(0, 4, "PER"), edges) == 6  # tokens [0, 2): 6 before the edge at 8
    assert edge_distance(enc, Span(5, 9, "PER"), edges) == 4  # tokens [2, 4)
    assert edge_distance(enc, Span(15, 19, "PER"), edges) == 0  # tokens [6, 8) end at the edge
    assert edge_distance(enc, Span(15, 29, "PER"), edges) == 0  # tokens [6, 12) cross the edge at 8
    assert edge_distance(enc, Span(45, 49, "PER"), edges) == 6  # tokens [18, 20): 6 after the edge at 12

    assert window_edges(hand_encoded([Window(0, 10, 0, 20)])) == []  # one window: no edge inside the text
    truncated = hand_encoded([Window(0, 6, 0, 12)])  # truncate=true keeps only the first window
    assert window_edges(truncated) == [12]
    assert edge_distance(truncated, Span(45, 49, "PER"), [12]) == 6


def test_highlight_escapes_text_and_nests_spans():
    text = "<b>Bank</b> of Berlin & Co"
    spans = [{"start": 0, "end": 21, "label": "ORG", "text": text[:21]},
             {"start": 15, "end": 21, "label": "LOC", "text": "Berlin", "wrong": True},
             {"start": 19, "end": 26, "label": "MISC", "text": text[19:26]}]  # crosses both ends
    out = highlight(text, spans, ["LOC", "ORG"])
    assert "<b>" not in out and "&lt;b&gt;Bank&lt;/b&gt;" in out and "&amp; Co" in out
    org, loc = out.index('data-label="ORG"'), out.index('data-label="LOC"')
    assert org < loc < out.index("</mark>")  # LOC is drawn inside ORG
    assert 'class="ent c0 wrong"' in out and 'class="ent c1"' in out  # colour by position in the types
    assert "not drawn inline: MISC “in &amp; Co” (19–26)" in out  # the crossing span is listed, not dropped


@pytest.fixture(scope="module")
def tiny_run(tiny_bert_dir, tmp_path_factory):
    return save_tiny_run(tiny_bert_dir, tmp_path_factory.mktemp("run"))


def test_write_error_report_is_consistent(tiny_run, tmp_path):
    # All toy sentences as one document: longer than the tiny model's 14-token windows.
    documents = read_conll(write_conll(tmp_path / "toy.conll", TOY_SENTENCES * 3), documents=True)
    documents += read_conll(write_conll(tmp_path / "short.conll", TOY_SENTENCES))
    predictor = Predictor.from_run(tiny_run, "cpu")
    path = write_error_report(predictor, documents, tiny_run, "toy")
    report = json.loads((tiny_run / "errors.json").read_text())

    predicted = predictor.predict([d.text for d in documents])
    n_predicted = sum(len({(e.start, e.end, e.label) for e in doc}) for doc in predicted)
    n_gold = sum(len(d.spans) for d in documents)
    overall = report["scores"]["overall"]
    assert (overall["gold"], overall["predicted"]) == (n_gold, n_predicted)
    assert n_predicted > 0
    errors = {kind: e["count"] for kind, e in report["errors"].items()}
    assert overall["correct"] + sum(n for kind, n in errors.items() if kind != "missed") == n_predicted
    assert sum(map(sum, report["confusion"]["matrix"])) == n_predicted + errors["missed"]

    edges = report["window_edges"]
    assert edges["long_documents"] == 1  # the joined document; the sentences fit one window each
    assert edges["errors_near_edges"] == sum(edges["near_edges_by_class"].values()) == len(edges["examples"])
    assert all(e["edge_distance"] < 3 for e in edges["examples"])

    worst = report["worst_documents"]
    assert [d["errors"] for d in worst] == sorted((d["errors"] for d in worst), reverse=True)
    page = path.read_text()
    for section in ("per-type", "confusion", "errors", "window-edges", "documents"):
        assert f'<section id="{section}">' in page
    assert not list(tiny_run.glob(".errors.*"))  # no temporary file left behind


def test_report_errors_command(tiny_run, tmp_path, capsys):
    data = write_conll(tmp_path / "dev.conll", TOY_SENTENCES)
    assert report_main(["errors", f"run_dir={tiny_run}", f"data.path={data}", "limit=2"]) == 0
    report = json.loads((tiny_run / "errors.json").read_text())
    assert report["documents"] == 2 and report["split"] == "dev.conll (first 2)"
    assert report["scores"]["overall"]["gold"] == 5  # the first two toy sentences: 2 + 3 entities
    assert "exact-span F1" in capsys.readouterr().out

    with pytest.raises(SystemExit, match="exactly one of data=NAME or data.path=FILE"):
        report_main(["errors", f"run_dir={tiny_run}"])
    with pytest.raises(SystemExit, match="no data config 'nosuch' in .*conll2003"):
        report_main(["errors", f"run_dir={tiny_run}", "data=nosuch"])
    with pytest.raises(SystemExit, match="data config 'sample' has no split 'test'"):
        report_main(["errors", f"run_dir={tiny_run}", "data=sample", "split=test"])
    with pytest.raises(SystemExit, match=r"missing required argument\(s\): run_dir"):
        report_main(["errors", f"data.path={data}"])


def test_the_sweep_report_command_still_takes_a_directory(tmp_path, capsys):
    with pytest.raises(SystemExit):
        report_main([str(tmp_path)])
    assert "no Hydra job directories" in capsys.readouterr().err
