import json

import pytest

from nerkit.data.readers import DataError, read_conll, read_json_spans


def test_conll_sentences_spans_and_documents(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n"
                    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n-DOCSTART- -X- -X- O\n\nHi UH O O\n")
    sents = read_conll(path)
    assert [d.text for d in sents] == ["EU rejects German", "Peter Blackburn", "Hi"]
    assert [(d.text[s:e], lab) for d in sents for s, e, lab in d.spans] == [
        ("EU", "ORG"), ("German", "MISC"), ("Peter Blackburn", "PER")]
    docs = read_conll(path, documents=True)
    assert [d.text for d in docs] == ["EU rejects German\nPeter Blackburn", "Hi"]
    assert [docs[0].text[s:e] for s, e, _ in docs[0].spans] == ["EU", "German", "Peter Blackburn"]


def test_conll_wrong_column_count_names_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("EU NNP B-ORG\nrejects O\n")
    with pytest.raises(DataError, match=r"bad.conll:2: expected 3 columns"):
        read_conll(path)


def test_conll_tag_outside_scheme_names_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("EU B-ORG\nrejects M-ORG\n")
    with pytest.raises(DataError, match=r"bad.conll:2: .*'M-ORG'"):
        read_conll(path, scheme="BIO")


def test_bmes_characters_join_without_spaces(tmp_path):
    path = tmp_path / "zh.bmes"
    path.write_text("高 B-NAME\n勇 E-NAME\n： O\n男 O\n")
    (doc,) = read_conll(path, scheme="BMES", token_separator="")
    assert doc.text == "高勇：男" and doc.spans == [(0, 2, "NAME")]


def test_cluener_concatenated_pretty_json_and_jsonl(tmp_path):
    objs = [{"text": "浙商银行叶老桂", "label": {"company": {"浙商银行": [[0, 3]]}, "name": {"叶老桂": [[4, 6]]}}},
            {"text": "生生不息CSOL", "label": {"game": {"CSOL": [[4, 7]]}}}]
    pretty = tmp_path / "pretty.json"
    pretty.write_text("\n".join(json.dumps(o, ensure_ascii=False, indent=2) for o in objs))
    lines = tmp_path / "lines.jsonl"
    lines.write_text("\n".join(json.dumps(o, ensure_ascii=False) for o in objs))
    for path in (pretty, lines):
        docs = read_json_spans(path)
        assert [[d.text[s:e] for s, e, _ in d.spans] for d in docs] == [["浙商银行", "叶老桂"], ["CSOL"]]


def test_json_span_out_of_range_and_mismatch(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "abc", "entities": []}\n{"text": "abc", "entities": [{"start": 1, "end": 9, "label": "X"}]}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: span \[1, 9\) of 'X' is out of range"):
        read_json_spans(path)
    path.write_text('{"text": "abc", "label": {"X": {"bc": [[0, 1]]}}}')
    with pytest.raises(DataError, match=r"reads 'ab', not 'bc'"):
        read_json_spans(path)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_conll(tmp_path / "nope.conll")
    path = tmp_path / "latin1.conll"
    path.write_bytes("Ok O\n\nCaf\xe9 O\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.conll:3: not valid UTF-8"):
        read_conll(path)
