"""Bad input: each case gives a clear error naming file, line and problem, or exact, reported handling."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from nerkit.data.readers import DataError, read_conll, read_json_spans
from nerkit.data.schemes import Span, get_scheme
from nerkit.heads.softmax import SoftmaxHead
from nerkit.model import LABELS, NerModel
from nerkit.predict import Predictor
from nerkit.tasks.ner import entity_types_of
from tests.helpers import TOY_SENTENCES, make_cfg, write_conll

TYPES = ["LOC", "ORG", "PER"]


# --- CoNLL files -------------------------------------------------------------------------------

def test_wrong_column_count_names_file_and_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("John NNP B-PER\nSmith NNP I-PER\nlives O\n")
    with pytest.raises(DataError, match=r"bad.conll:3: expected 3 columns like the first token line, found 2"):
        read_conll(path)
    path.write_text("John\n")
    with pytest.raises(DataError, match=r"bad.conll:1: expected a token and a tag column"):
        read_conll(path)


@pytest.mark.parametrize("tag", ["E-PER", "S-PER", "B_PER", "b-PER", "B-", "PER"])
def test_tag_outside_the_scheme(tmp_path, tag):
    path = write_conll(tmp_path / "bad.conll", [[("John", "B-PER"), ("Smith", "O")], [("x", "O"), ("Berlin", tag)]])
    with pytest.raises(DataError, match=rf"bad.conll:5: tag '{tag}' is not a valid BIO tag \(scheme=BIO\)"):
        read_conll(path, scheme="BIO")


def test_i_without_b_is_repaired_in_data_and_reported(tmp_path, caplog):
    path = write_conll(tmp_path / "t.conll", [[("x", "O"), ("John", "I-PER"), ("Smith", "I-PER"), ("in", "I-LOC")]])
    with caplog.at_level(logging.WARNING):
        (doc,) = read_conll(path)
    assert doc.spans == [Span(2, 12, "PER"), Span(13, 15, "LOC")]
    assert "2 repaired tags" in caplog.text
    bioes = write_conll(tmp_path / "e.conll", [[("John", "B-PER"), ("Smith", "I-PER"), ("x", "O")]])
    with caplog.at_level(logging.WARNING):
        assert read_conll(bioes, scheme="BIOES")[0].spans == [Span(0, 10, "PER")]  # an entity never closed by E-
    assert "1 repaired tags" in caplog.text


def test_i_without_b_is_repaired_deterministically_in_predictions():
    head = SoftmaxHead(4, TYPES, scheme="BIO")
    tags = ["O", "I-PER", "I-PER", "B-LOC", "I-ORG", "I-ORG"]
    scores = torch.full((1, len(tags), len(head.tags)), -5.0)
    for i, tag in enumerate(tags):
        scores[0, i, head.tag_ids[tag]] = 5.0
    spans = head.decode(scores, torch.ones(1, len(tags), dtype=torch.bool))[0]
    assert [(s.start, s.end, s.label) for s in spans] == [(1, 3, "PER"), (3, 4, "LOC"), (4, 6, "ORG")]
    assert get_scheme("BIO").decode(tags) == ([Span(1, 3, "PER"), Span(3, 4, "LOC"), Span(4, 6, "ORG")], 2)


def test_labels_unseen_in_train_are_reported(tmp_path, caplog):
    train = read_conll(write_conll(tmp_path / "train.conll", TOY_SENTENCES))
    dev = read_conll(write_conll(tmp_path / "dev.conll", [[("Rust", "B-LANG"), ("rocks", "O")]]))
    with caplog.at_level(logging.WARNING):
        assert entity_types_of(train, {"dev": dev}) == TYPES
    assert "dev has entity types never seen in train (they count as missed): ['LANG']" in caplog.text


def test_empty_sentences_and_documents_are_skipped_and_counted(tmp_path, caplog):
    path = tmp_path / "t.conll"
    path.write_text("-DOCSTART- -X- O O\n\nJohn B-PER\nlives O\n\n\n\nin O\n\n-DOCSTART- -X- O O\n\n"
                    "-DOCSTART- -X- O O\n\nBerlin B-LOC\n")
    with caplog.at_level(logging.WARNING):
        sentences = read_conll(path)
    assert [d.text for d in sentences] == ["John lives", "in", "Berlin"]
    assert "t.conll: 2 empty sentences" in caplog.text and "t.conll: 1 empty documents" in caplog.text
    documents = read_conll(path, documents=True)
    assert [(d.text, d.spans) for d in documents] == [
        ("John lives\nin", [Span(0, 4, "PER")]), ("Berlin", [Span(0, 6, "LOC")])]


def test_bom_zero_width_and_emoji_tokens_keep_exact_offsets(tmp_path):
    path = tmp_path / "t.conll"
    path.write_bytes("\ufeffJohn B-PER\nZ\u200bX I-PER\n🎉 O\n東京 B-LOC\n".encode("utf-8"))
    (doc,) = read_conll(path)
    assert doc.text == "John Z\u200bX 🎉 東京"
    assert [doc.text[s:e] for s, e, _ in doc.spans] == ["John Z\u200bX", "東京"]


def test_non_utf8_and_missing_files(tmp_path):
    path = tmp_path / "latin1.conll"
    path.write_bytes("John B-PER\n\nM\u00fcller B-PER\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.conll:3: not valid UTF-8 \(byte 0xfc\)"):
        read_conll(path)
    with pytest.raises(DataError, match=r"nope.conll: file not found"):
        read_conll(tmp_path / "nope.conll")
    with pytest.raises(DataError, match=r"nope.json: file not found"):
        read_json_spans(tmp_path / "nope.json")


# --- JSON span files ---------------------------------------------------------------------------

def _jsonl(tmp_path, *objects) -> str:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(o, ensure_ascii=False) for o in objects) + "\n")
    return path


def test_overlapping_json_spans_are_kept(tmp_path):
    path = _jsonl(tmp_path, {"text": "Bank of China", "entities": [
        {"start": 0, "end": 13, "label": "ORG"}, {"start": 8, "end": 13, "label": "LOC"}]})
    assert read_json_spans(path)[0].spans == [Span(0, 13, "ORG"), Span(8, 13, "LOC")]


@pytest.mark.parametrize("entity, problem", [
    ({"start": 0, "end": 99, "label": "ORG"}, r"span \[0, 99\) of 'ORG' is out of range for a text of 13 characters"),
    ({"start": -1, "end": 4, "label": "ORG"}, r"span \[-1, 4\) of 'ORG' is out of range"),
    ({"start": 4, "end": 4, "label": "ORG"}, r"span \[4, 4\) of 'ORG' is out of range"),
    ({"start": 0, "end": 4, "label": "ORG", "text": "Bonk"}, r"span \[0, 4\) of 'ORG' reads 'Bank', not 'Bonk'"),
    ({"start": 0, "end": 4}, r"an entity needs 'start', 'end' and 'label'"),
])
def test_bad_json_spans_name_file_and_line(tmp_path, entity, problem):
    path = _jsonl(tmp_path, {"text": "fine", "entities": []}, {"text": "Bank of China", "entities": [entity]})
    with pytest.raises(DataError, match=rf"d.jsonl:2: {problem}"):
        read_json_spans(path)


def test_bad_cluener_labels_and_invalid_json(tmp_path):
    path = _jsonl(tmp_path, {"text": "北京", "label": {"address": {"北京": [[0, 5]]}}})
    with pytest.raises(DataError, match=r"d.jsonl:1: span \[0, 6\) of 'address' is out of range"):
        read_json_spans(path)
    path = _jsonl(tmp_path, {"text": "北京", "label": {"address": ["北京"]}})
    with pytest.raises(DataError, match=r"d.jsonl:1: 'label' must map type -> surface"):
        read_json_spans(path)
    path.write_text('{"text": "a"}\n{"text": "b",\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: invalid JSON"):
        read_json_spans(path)


def test_empty_json_documents_are_skipped_and_counted(tmp_path, caplog):
    path = _jsonl(tmp_path, {"text": ""}, {"text": " \n\t"}, {"text": "Paris", "entities": []})
    with caplog.at_level(logging.WARNING):
        assert [d.text for d in read_json_spans(path)] == ["Paris"]
    assert "2 empty documents" in caplog.text


# --- Prediction on raw text --------------------------------------------------------------------

@pytest.fixture(scope="module")
def predictor(tiny_bert_dir, tmp_path_factory) -> Predictor:
    """A random-weight tiny BERT saved and loaded as a run: it predicts entities all over the text."""
    run = tmp_path_factory.mktemp("run")
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}", "max_length=64", "stride=16"])
    torch.manual_seed(0)
    NerModel.from_config(cfg, TYPES).save(run, cfg)
    return Predictor.from_run(run, "cpu")


def _words(predictor: Predictor, text: str) -> list[str]:
    (enc,) = predictor.text_encoder.encode([text])
    return [text[s:e] for s, e in zip(enc.word_char_starts, enc.word_char_ends)]


def _check_offsets(text: str, entities) -> None:
    for ent in entities:
        assert 0 <= ent.start < ent.end <= len(text) and text[ent.start : ent.end] == ent.text
        assert ent.text == ent.text.strip() and ent.text.strip("\ufeff\u200b\u200d\x00\x07")


def test_empty_and_whitespace_only_texts_give_no_entities(predictor):
    assert predictor.predict(["", " ", "\n\n\t  \r\n"]) == [[], [], []]


@pytest.mark.parametrize("text, words", [
    ("\ufeffJohn\u200b Smith\x00 lives\x07in Berlin\u200d.", ["John", "Smith", "lives", "in", "Berlin", "."]),
    ("Meet 李明 in 東京 🎉 today, Ünïcödé 😀x",
     ["Meet", "李", "明", "in", "東", "京", "🎉", "today", ",", "Ünïcödé", "😀x"]),
    ("John   Smith\t\tlives\n\n\nin  Berlin\r\n.", ["John", "Smith", "lives", "in", "Berlin", "."]),
])
def test_odd_characters_and_whitespace_keep_exact_offsets(predictor, text, words):
    assert _words(predictor, text) == words
    (entities,) = predictor.predict([text])
    assert entities  # random weights tag most words
    _check_offsets(text, entities)


def test_a_100k_character_document_is_windowed_not_truncated(predictor):
    sentence = "Maria Schmidt from Siemens visited Paris and Berlin in May. "
    text = (sentence * (100_000 // len(sentence) + 1))[:100_000]
    (enc,) = predictor.text_encoder.encode([text])
    assert len(enc.windows) > 100
    assert enc.windows[0].word_start == 0 and enc.windows[-1].word_end == enc.n_words
    assert all(b.word_start < a.word_end for a, b in zip(enc.windows, enc.windows[1:]))  # overlapping, no gaps
    assert enc.word_char_ends[-1] == len(text.rstrip())  # the last word is covered
    (entities,) = predictor.predict([text])
    _check_offsets(text, entities)
    first_window_end = enc.word_char_ends[enc.windows[0].word_end - 1]
    assert max(e.start for e in entities) > 99_000 > first_window_end


# --- Saved runs --------------------------------------------------------------------------------

def test_a_label_map_that_does_not_match_the_weights(tiny_bert_dir, tmp_path):
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}"])
    NerModel.from_config(cfg, TYPES).save(tmp_path, cfg)
    labels = tmp_path / LABELS
    labels.write_text(json.dumps({"entity_types": ["LOC", "ORG", "PERSON"]}))  # same size, renamed
    with pytest.raises(ValueError, match=r"labels.json lists entity types .*PERSON.* was trained with .*'PER'\]"):
        Predictor.from_run(tmp_path, "cpu")
    labels.write_text(json.dumps({"entity_types": ["LOC", "ORG"]}))
    with pytest.raises(ValueError, match=r"labels.json lists entity types \['LOC', 'ORG'\]"):
        Predictor.from_run(tmp_path, "cpu")
    labels.write_text("LOC ORG PER")
    with pytest.raises(ValueError, match=r"labels.json: not a nerkit label map"):
        Predictor.from_run(tmp_path, "cpu")
