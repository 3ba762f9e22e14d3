"""Red team round three (issue 23), data and limits: inputs that used to be misread silently
(repeated JSON keys, -DOCSTART- inside a sentence, labels with stray whitespace), unhelpful errors
(an empty train file, a directory as a data file) and entity types enough to exhaust memory."""
from __future__ import annotations

import json
import time

import pytest
import torch

from nerkit.data import schemes
from nerkit.data.readers import DataError, read_conll, read_doccano, read_json_spans, read_jsonl_labels
from nerkit.heads.crf import CRFHead
from nerkit.predict_cli import BadLine, Format, parse_line
from nerkit.tasks.ner import NerTask
from nerkit.train import train
from nerkit.validation import GIB, ConfigError, head_memory
from tests.helpers import TOY_SENTENCES, make_cfg, write_conll


# --- case 5 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("read, content, line, key", [
    # Offsets meant for the first text would land on the second: 'Rome ' would become a LOC.
    (read_json_spans, '{"text": "x"}\n{"text": "Rome is", "text": "In Rome ", "entities": []}\n', 2, "text"),
    (read_json_spans, '{"text": "In Rome", "entities": [{"start": 3, "end": 7, "label": "LOC"}], "entities": []}\n',
     1, "entities"),
    # Pretty-printed: the line of the entity object holding the repeated key.
    (read_json_spans, '{\n "text": "In Rome",\n "entities": [\n  {"start": 3, "end": 7, "label": "PER",\n'
                      '   "label": "LOC"}\n ]\n}\n', 4, "label"),
    (read_json_spans, '{"text": "In Rome", "label": {"LOC": {"Rome": [[3, 6]]}, "LOC": {}}}\n', 1, "LOC"),
    (read_doccano, '{"text": "In Rome", "label": [[3, 7, "LOC"]], "label": []}\n', 1, "label"),
    (read_jsonl_labels, '{"text": "fine", "label": "pos", "label": "neg"}\n', 1, "label"),
])
def test_a_key_repeated_in_a_json_object_names_file_line_and_key(tmp_path, read, content, line, key):
    path = tmp_path / "d.json"
    path.write_text(content)
    with pytest.raises(DataError, match=rf"d\.json:{line}: key '{key}' appears twice in the object starting on this line"):
        read(path)


def test_a_key_repeated_in_a_predict_cli_input_line_is_a_bad_line():
    with pytest.raises(BadLine, match=r"key 'text' appears twice in one object"):
        parse_line(b'{"text": "Rome is", "text": "In Rome "}\n', 1, Format.jsonl)


# --- case 6 ---------------------------------------------------------------------------------------

def test_docstart_inside_a_sentence_or_tagged_as_an_entity_is_an_error(tmp_path):
    path = tmp_path / "d.conll"
    path.write_text("John B-PER\nlives O\n-DOCSTART- -X- -X- O\nin O\nBerlin B-LOC\n")
    with pytest.raises(DataError, match=r"d\.conll:3: -DOCSTART- inside a sentence: a document marker needs a blank line"):
        read_conll(path)
    path.write_text("-DOCSTART- B-PER\n\nJohn B-PER\n")
    with pytest.raises(DataError, match=r"d\.conll:1: -DOCSTART- marker tagged as an entity: '-DOCSTART- B-PER'"):
        read_conll(path)
    # Markers of CoNLL-2003 itself, after a blank line, still separate documents.
    path.write_text("-DOCSTART- -X- -X- O\n\nJohn B-PER\n\n-DOCSTART- -X- -X- O\n\nin O\nBerlin B-LOC\n")
    assert [doc.text for doc in read_conll(path, documents=True)] == ["John", "in Berlin"]


# --- case 7 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("label", [" LOC ", "LOC\n", "LOC\u0007"])
def test_labels_with_surrounding_whitespace_or_control_characters_are_errors(tmp_path, label):
    spans = tmp_path / "d.jsonl"
    spans.write_text(json.dumps({"text": "In Rome", "entities": [{"start": 3, "end": 7, "label": label}]}) + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl:1: an entity label .* has surrounding whitespace or control characters"):
        read_json_spans(spans)
    classes = tmp_path / "c.jsonl"
    classes.write_text(json.dumps({"text": "In Rome", "label": label}) + "\n")
    with pytest.raises(DataError, match=r"c\.jsonl:1: a label .* has surrounding whitespace or control characters"):
        read_jsonl_labels(classes)


def test_a_conll_tag_with_a_control_character_is_an_error(tmp_path):
    path = tmp_path / "d.conll"
    path.write_text("In O\nRome B-LO\u0007C\n")
    with pytest.raises(DataError, match=r"d\.conll:2: tag 'B-LO\\x07C': a label .* control characters"):
        read_conll(path)


# --- cases 19 and 20 ------------------------------------------------------------------------------

def test_an_empty_train_file_is_named_and_never_told_to_be_null(tmp_path, toy_conll):
    empty = tmp_path / "train.conll"
    empty.write_text("\n")
    cfg = make_cfg(["encoder=bilstm", f"data.train.path={empty}", f"data.dev.path={toy_conll}"])
    with pytest.raises(ConfigError) as err:
        train(cfg, tmp_path / "run")
    assert str(err.value) == f"data.train ({empty}) gave no documents: check its file"


def test_a_directory_given_as_a_data_file_says_so(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path}: is a directory, not a data file"):
        read_conll(tmp_path)
    with pytest.raises(DataError, match=rf"{tmp_path}: is a directory, not a data file"):
        read_json_spans(tmp_path)


# --- case 1 ---------------------------------------------------------------------------------------

def _many_types(tmp_path, n_types: int):
    return write_conll(tmp_path / "types.conll", [[("x", f"B-T{i}"), ("y", "O")] for i in range(n_types)])


def test_too_many_entity_types_are_refused_before_the_model_is_built(tmp_path):
    data = _many_types(tmp_path, 1001)
    cfg = make_cfg(["encoder=bilstm", "head=crf", f"data.train.path={data}", f"data.dev.path={data}"])
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"the training data has 1001 entity types \(T0, T1, T10, .*, \.\.\. \(991 more\)\), "
                                          r"more than limits.max_entity_types=1000; .* \(limits.max_entity_types=1001\)"):
        train(cfg, tmp_path / "run")
    assert time.perf_counter() - started < 60  # the CRF's transitions over 2003 tags were never built
    assert not (tmp_path / "run").exists()


def test_a_head_whose_scores_would_exceed_the_memory_limit_is_refused(tmp_path):
    data = _many_types(tmp_path, 300)  # a CRF over 601 tags: 601^2 transition scores per word
    cfg = make_cfg(["encoder=bilstm", "head=crf", f"data.train.path={data}", f"data.dev.path={data}",
                    "limits.head_memory_gb=1"])
    needed, _ = head_memory(cfg.head, 300, cfg.trainer.batch_size, cfg.max_length)
    assert needed == 2 * 4 * 16 * 128 * 601**2
    with pytest.raises(ConfigError, match=rf"head CRFHead would need about {needed / GIB:.1f} GiB for the scores of one "
                                          r"training batch \(16 windows x 128 words x 601\^2 tag transitions\), more "
                                          r"than limits.head_memory_gb=1; .*\(limits.head_memory_gb=6\)"):
        train(cfg, tmp_path / "run")


def test_the_crf_mask_is_built_on_arrays_not_per_tag_pair(monkeypatch):
    calls = 0
    real_split = schemes.Scheme.split

    def counting_split(self, tag):
        nonlocal calls
        calls += 1
        return real_split(self, tag)

    monkeypatch.setattr(schemes.Scheme, "split", counting_split)
    types = [f"T{i}" for i in range(200)]
    head = CRFHead(8, types, scheme="BIOES")
    tags = head.tags
    assert calls <= 3 * len(tags)  # a loop over pairs would split each of 801^2 pairs' tags
    # The same rules as the scheme's, pair by pair, on a sample of tags.
    sample = [0, 1, 2, 3, 4, 5, 6, 797, 798, 799, 800]
    for i in sample:
        for j in sample:
            blocked = head.crf.transitions[i, j].item() == -10000.0
            assert blocked == (not head.scheme.allowed([tags[i], tags[j]])[2][0, 1]), (tags[i], tags[j])


def test_global_pointer_dev_batches_stay_within_the_memory_limit(tiny_bert_dir, tmp_path):
    data = write_conll(tmp_path / "toy.conll", TOY_SENTENCES * 4)
    overrides = [f"encoder.pretrained={tiny_bert_dir}", "head=global_pointer", f"data.train.path={data}",
                 f"data.dev.path={data}", "max_length=16", "stride=4", "trainer.batch_size=2"]
    # 3 types x 16^2 word pairs x 6 copies x 4 bytes = 18 KiB per window: a budget of 40 KiB allows 2 windows
    # (a training batch of 2 too), where dev batches would otherwise hold up to 64.
    limited = NerTask(make_cfg([*overrides, f"limits.head_memory_gb={40 * 1024 / GIB}"]), torch.device("cpu"))
    unlimited = NerTask(make_cfg(overrides), torch.device("cpu"))
    unlimited.model.load_state_dict(limited.model.state_dict())
    shapes = []
    limited.model.head.register_forward_hook(lambda module, args, scores: shapes.append(scores.shape))
    assert limited.evaluate(limited.model, "dev") == unlimited.evaluate(unlimited.model, "dev")
    # Each batch's span scores, with the loss's copies, within the 40 KiB; unlimited, one batch of all 16 windows.
    assert len(shapes) > 1 and all(6 * 4 * rows * types * words * words <= 40 * 1024 for rows, types, words, _ in shapes)
    assert limited.inference(limited.model).max_batch_tokens == 40 * 1024 * 16 // (6 * 4 * 3 * 16 * 16)
    assert unlimited.inference(unlimited.model).max_batch_tokens >= 16 * 16
