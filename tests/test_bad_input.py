"""Bad input: each case gives a clear error naming file, line and problem, or exact, reported handling."""
from __future__ import annotations

import json
import logging
import re

import pytest
import torch

from nerkit.data.readers import DataError, read_conll, read_doccano, read_json_spans
from nerkit.data.schemes import Span, get_scheme
from nerkit.heads.softmax import SoftmaxHead
from nerkit.model import NerModel
from nerkit.predict import Predictor
from nerkit.predict_cli import main as predict_main
from nerkit.runs import LABELS, WEIGHTS
from nerkit.tasks.ner import entity_types_of
from nerkit.train import train
from nerkit.validation import ConfigError, validate_config
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

    with pytest.raises(DataError, match=r"nope.conll: file not found$"):  # absolute: the path says it all
        read_conll(tmp_path / "nope.conll")


def test_a_missing_relative_path_names_the_directory_it_was_looked_for_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=rf"data/sample/train.conll: file not found \(relative to the current directory {re.escape(str(tmp_path))}\)"):
        read_conll("data/sample/train.conll")


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
     ["Meet", "李", "明", "in", "東", "京", "🎉", "today", ",", "Ünïcödé", "😀", "x"]),  # data.words=conll
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


def test_truncated_weights_name_the_file(tiny_bert_dir, tmp_path):
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}"])
    NerModel.from_config(cfg, TYPES).save(tmp_path, cfg)
    weights = tmp_path / WEIGHTS
    data = weights.read_bytes()
    for cut in (len(data) // 2, 12):  # the tensors, or the header, cut off
        weights.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=rf"{WEIGHTS}: not a readable safetensors file, truncated or corrupt"):
            Predictor.from_run(tmp_path, "cpu")


# --- The Python prediction API -------------------------------------------------------------------

def test_no_texts_give_no_results_and_a_non_string_is_named(predictor):
    assert predictor.predict([]) == []
    with pytest.raises(TypeError, match=r"texts\[0\] is a NoneType, not a str"):
        predictor.predict([None])
    with pytest.raises(TypeError, match=r"texts\[2\] is a bytes, not a str"):
        predictor.predict(["Berlin", "", b"Paris"])


# --- The batch prediction CLI --------------------------------------------------------------------

def test_an_unwritable_output_fails_before_the_model_is_loaded(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("John lives in Berlin\n")
    no_run = tmp_path / "no_run"  # loading it would fail: the output check must come first
    args = [f"run_dir={no_run}", f"input={source}", "progress=false"]
    with pytest.raises(IsADirectoryError, match=rf"output={tmp_path} is a directory; give a file name"):
        predict_main([*args, f"output={tmp_path}"])
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OSError, match=r"output=.*a_file/out.jsonl: cannot write in .*a_file"):
        predict_main([*args, f"output={tmp_path / 'a_file' / 'out.jsonl'}"])
    with pytest.raises(FileNotFoundError, match="no_run is not a complete nerkit run directory"):
        predict_main([*args, f"output={tmp_path / 'out.jsonl'}"])  # a good output gets as far as the model


# --- Training configs: checked before any data is read or model built ---------------------------

@pytest.mark.parametrize("override, message", [
    ("trainer.lr=-5e-5", r"trainer.lr=-5e-05: must be a number > 0"),
    ("head.lr=-1e-3", r"head.lr=-0.001: must be a number > 0 or null"),
    ("trainer.epochs=0", r"trainer.epochs=0: must be an integer >= 1"),
    ("trainer.max_steps=0", r"trainer.max_steps=0: must be an integer >= 1 or null"),
    ("trainer.batch_size=0", r"trainer.batch_size=0: must be an integer >= 1"),
    ("trainer.eval_batch_size=0", r"trainer.eval_batch_size=0: must be an integer >= 1"),
    ("stride=128", r"stride=128: must be an integer in \[0, max_length=128\)"),
    ("trainer.warmup_ratio=1.5", r"trainer.warmup_ratio=1.5: must be a number in \[0, 1\]"),
    ("head.dropout=1.0", r"head.dropout=1.0: must be a number in \[0, 1\)"),
    ("task._target_=nerkit.tasks.nre.NreTask", r"task._target_='nerkit.tasks.nre.NreTask': allowed here is a subclass of nerkit.tasks.base.Task"),
    ("trainer.accumulate=0", r"trainer.accumulate=0: must be an integer >= 1"),
    ("trainer.patience=0", r"trainer.patience=0: must be an integer >= 1 or null"),
    ("trainer.eval_every=0", r"trainer.eval_every=0: must be an integer >= 1 or null"),
    ("trainer.log_every=0", r"trainer.log_every=0: must be an integer >= 1"),
    ("trainer.precision=fp8", r"trainer.precision='fp8': must be one of fp32\|bf16\|fp16\|auto"),
    ("trainer.batch_order=shortest", r"trainer.batch_order='shortest': must be one of length\|random"),
])
def test_out_of_range_training_values_fail_before_reading_data(tmp_path, override, message):
    # The data file does not exist: reading it first would raise a DataError instead.
    cfg = make_cfg([override, f"data.train.path={tmp_path / 'missing.conll'}", "encoder=bilstm"])
    with pytest.raises(ConfigError, match=message):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_every_bad_value_is_reported_at_once(tmp_path):
    cfg = make_cfg(["trainer.lr=0", "trainer.epochs=-1", "trainer.batch_size=two", "encoder=bilstm"])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert str(err.value).splitlines()[1:] == [
        "  trainer.lr=0: must be a number > 0",
        "  trainer.epochs=-1: must be an integer >= 1",
        "  trainer.batch_size='two': must be an integer >= 1",
    ]
    validate_config(make_cfg(["encoder=bilstm", "head=crf", "trainer.precision=bf16", "+trainer.patience=null"]))


def test_a_missing_local_encoder_path_says_so(tmp_path):
    for name in (tmp_path / "no_such_model", "./models/minilm", "../models/x"):
        with pytest.raises(ConfigError, match=rf"encoder.pretrained='{name}': no such local folder, and not a hub model name"):
            validate_config(make_cfg([f"encoder.pretrained={name}"]))
    # A well-formed hub name that is neither a local folder nor in the offline cache.
    with pytest.raises(ConfigError, match=r"'models/minilm': no such local folder, and no hub model of that name"):
        validate_config(make_cfg(["encoder.pretrained=models/minilm"]))
    with pytest.raises(ConfigError, match=r"encoder.vocab='/nonexistent/vocab': no such local folder"):
        validate_config(make_cfg(["encoder=bilstm", "encoder.vocab=/nonexistent/vocab"]))


def test_max_length_beyond_the_encoders_positions(tiny_bert_dir):
    validate_config(make_cfg([f"encoder.pretrained={tiny_bert_dir}", "max_length=512"]))
    with pytest.raises(ConfigError, match=r"max_length=513: must be <= 512, the most tokens .* takes"):
        validate_config(make_cfg([f"encoder.pretrained={tiny_bert_dir}", "max_length=513"]))


def test_an_empty_dev_file_fails_before_the_model_is_built(tmp_path, toy_conll):
    (tmp_path / "dev.conll").write_text("")
    cfg = make_cfg(["encoder=bilstm", f"data.train.path={toy_conll}", f"data.dev.path={tmp_path / 'dev.conll'}"])
    with pytest.raises(ConfigError, match=r"data.dev \(.*dev.conll\) gave no documents: check its file, or set data.dev=null"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --- JSON span and doccano data ------------------------------------------------------------------

def test_unrecognised_entity_keys_are_reported(tmp_path, caplog):
    doccano = _jsonl(tmp_path, {"text": "Angela Merkel", "label": [[0, 13, "PER"]]})
    with pytest.raises(DataError, match=r"d.jsonl:1: 'label' must map .*found a list \(a doccano export\? "
                                        r"read it with read_doccano: data=doccano\)"):
        read_json_spans(doccano)
    typo = _jsonl(tmp_path, {"text": "Angela Merkel", "entites": [{"start": 0, "end": 13, "label": "PER"}]},
                  {"text": "Paris", "entities": []})
    with caplog.at_level(logging.WARNING):
        docs = read_json_spans(typo)
    assert [d.spans for d in docs] == [[], []]
    assert ("d.jsonl:1: no entity key 'entities' (or CLUENER's 'label'), found keys ['entites', 'text']: "
            "read as a document without entities") in caplog.text
    assert "d.jsonl: none of its 2 documents has an entity" in caplog.text


def test_doccano_exports_are_read(tmp_path, caplog):
    path = _jsonl(tmp_path, {"id": 7, "text": "Angela Merkel visited Paris.", "label": [[0, 13, "PER"], [22, 27, "LOC"]]},
                  {"text": "Berlin!", "entities": [{"id": 1, "start_offset": 0, "end_offset": 6, "label": "LOC"}]})
    docs = read_doccano(path)
    assert [(d.id, [(d.text[s:e], lab) for s, e, lab in d.spans]) for d in docs] == [
        ("7", [("Angela Merkel", "PER"), ("Paris", "LOC")]), ("d.jsonl:2", [("Berlin", "LOC")])]
    path = _jsonl(tmp_path, {"text": "Paris"}, {"text": "Rome", "label": [[0, 4, "LOC"]]})
    with caplog.at_level(logging.WARNING):
        assert [d.spans for d in read_doccano(path)] == [[], [Span(0, 4, "LOC")]]
    assert "d.jsonl:1: no entity key 'label' (or 'entities'), found keys ['text']" in caplog.text
    path = _jsonl(tmp_path, {"text": "Rome", "label": ["positive"]})  # a text-classification export
    with pytest.raises(DataError, match=r"d.jsonl:1: 'label' must be a list of \[start, end, type\] triples"):
        read_doccano(path)


def test_boolean_offsets_are_rejected(tmp_path):
    path = _jsonl(tmp_path, {"text": "Bank of China", "entities": [{"start": True, "end": 4, "label": "ORG"}]})
    with pytest.raises(DataError, match=r"d.jsonl:1: span start of 'ORG' must be an integer character offset, got True"):
        read_json_spans(path)
    path = _jsonl(tmp_path, {"text": "北京", "label": {"address": {"北京": [[False, True]]}}})
    with pytest.raises(DataError, match=r"d.jsonl:1: span start of 'address' must be an integer character offset, got False"):
        read_json_spans(path)
    path = _jsonl(tmp_path, {"text": "Paris", "label": [[0, 5.0, "LOC"]]})
    with pytest.raises(DataError, match=r"d.jsonl:1: span end of 'LOC' must be an integer character offset, got 5.0"):
        read_doccano(path)


@pytest.mark.parametrize("read, entity", [
    (read_json_spans, {"entities": [{"start": 0, "end": 5, "label": ""}]}),
    (read_json_spans, {"label": {"": {"Paris": [[0, 4]]}}}),
    (read_json_spans, {"entities": [{"start": 0, "end": 5, "label": " "}]}),
    (read_doccano, {"label": [[0, 5, ""]]}),
    (read_doccano, {"label": [[0, 5, None]]}),
])
def test_empty_entity_labels_are_rejected(tmp_path, read, entity):
    path = _jsonl(tmp_path, {"text": "Rome"}, {"text": "Paris", **entity})
    with pytest.raises(DataError, match=r"d.jsonl:2: an entity label must be a non-empty string, got"):
        read(path)


# --- Unicode line separators ---------------------------------------------------------------------

@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1c", "\x1e"])
def test_unicode_line_separators_end_no_conll_line(tmp_path, separator):
    path = tmp_path / "t.conll"
    path.write_text(f"John B-PER{separator}\nSmith I-PER\nlives O\n\nParis B-LOC\r\n\r\nin O\rRome B-LOC\n",
                    encoding="utf-8")
    assert [(d.text, d.spans) for d in read_conll(path)] == [
        ("John Smith lives", [Span(0, 10, "PER")]), ("Paris", [Span(0, 5, "LOC")]), ("in Rome", [Span(3, 7, "LOC")])]


@pytest.mark.parametrize("separator", ["\u2028", "\x85", "\x0c"])
def test_unicode_separators_inside_tokens_and_json_strings(tmp_path, separator):
    path = tmp_path / "t.conll"
    path.write_text(f"Bank{separator}of B-ORG\nChina I-ORG\nrocks O\n", encoding="utf-8")
    (doc,) = read_conll(path)
    assert doc.text == f"Bank{separator}of China rocks" and doc.spans == [Span(0, 13, "ORG")]
    text = f"Bank{separator}of China"  # valid JSON: only control characters below U+0020 must be escaped
    raw = f'{{"text": "{text}", "entities": [{{"start": 0, "end": 13, "label": "ORG"}}]}}\n'
    if separator == "\x0c":
        raw = raw.replace(separator, "\\f")
    (tmp_path / "d.jsonl").write_text(raw + '{"text": "Rome", "entities": []}\n', encoding="utf-8")
    docs = read_json_spans(tmp_path / "d.jsonl")
    assert [(d.text, d.spans) for d in docs] == [(text, [Span(0, 13, "ORG")]), ("Rome", [])]
