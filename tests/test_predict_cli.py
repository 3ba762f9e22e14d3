"""The batch prediction CLI: formats, bad lines, chunked streaming, atomic output."""
from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nerkit.predict import Predictor
from nerkit.predict_cli import Format, PredictConfig, main, predict_file
from tests.helpers import save_tiny_run

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "John Smith lives in Berlin .",
    "Maria works for Siemens in Paris",
    " ".join(["Siemens hired John Smith yesterday in Berlin and Paris ."] * 6),  # several windows
    "Paris",
    "  leading and trailing spaces are part of the text  ",
]


@pytest.fixture(scope="module")
def run_dir(tiny_bert_dir, tmp_path_factory) -> Path:
    return save_tiny_run(tiny_bert_dir, tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def predictor(run_dir) -> Predictor:
    return Predictor.from_run(run_dir, "cpu")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_entities(got: list[dict], expected) -> None:
    assert [(e["start"], e["end"], e["label"], e["text"]) for e in got] == [
        (e.start, e.end, e.label, e.text) for e in expected
    ]
    assert [e["score"] for e in got] == pytest.approx([e.score for e in expected], abs=1e-5)


def test_jsonl_with_bad_lines_is_streamed_in_chunks(tmp_path, predictor, caplog):
    lines = [
        "\ufeff" + json.dumps({"id": "a", "text": TEXTS[0]}),  # a BOM before the first line
        json.dumps({"text": TEXTS[1], "meta": 1}),  # no id: the line number is its id
        '{"id": "broken", "text": ',
        "",
        json.dumps({"id": 7, "text": TEXTS[2]}),
        json.dumps({"id": "x", "body": "no text field"}),
        json.dumps({"id": ["not", "scalar"], "text": "x"}),
        json.dumps({"id": "d", "text": TEXTS[3]}),
        json.dumps({"id": "e", "text": TEXTS[4]}),
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    chunks = []
    original = predictor.predict
    predictor.predict = lambda texts: chunks.append(list(texts)) or original(texts)
    try:
        cfg = PredictConfig(run_dir="unused", input=str(source), output=str(tmp_path / "out" / "out.jsonl"),
                            chunk_docs=2, progress=False)
        stats = predict_file(predictor, cfg)
    finally:
        del predictor.predict

    assert (stats.documents, stats.bad_lines, stats.blank_lines) == (5, 3, 1)
    assert chunks == [TEXTS[0:2], TEXTS[2:4], TEXTS[4:5]]  # never more than chunk_docs at once
    records = read_jsonl(tmp_path / "out" / "out.jsonl")
    assert [r["id"] for r in records] == ["a", 2, 7, "d", "e"]
    expected = predictor.predict(TEXTS)
    assert sum(len(e) for e in expected) == stats.entities > 0
    for record, text, entities in zip(records, TEXTS, expected):
        assert_same_entities(record["entities"], entities)
        assert all(text[e["start"] : e["end"]] == e["text"] for e in record["entities"])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"{source}:3: invalid JSON: Expecting value at column 26",
        f"{source}:6: expected a JSON object with a string \"text\" field or a \"tokens\" list of strings",
        f"{source}:7: \"id\" must be a string or an integer, got ['not', 'scalar']",
    ]


def test_jsonl_token_lines_are_predicted_on_their_tokens(tmp_path, predictor, caplog):
    tokens = [text.split() for text in TEXTS]
    lines = [
        json.dumps({"id": "t0", "tokens": tokens[0]}),
        json.dumps({"id": "x", "text": TEXTS[1]}),
        json.dumps({"id": "t2", "tokens": tokens[2]}),
        json.dumps({"id": "space", "tokens": ["New York", "is"]}),
        json.dumps({"id": "string", "tokens": "John Smith"}),
        json.dumps({"id": "empty-token", "tokens": ["John", ""]}),
        json.dumps({"id": "both", "text": "Paris", "tokens": ["Paris"]}),
        json.dumps({"id": "none", "tokens": []}),
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = PredictConfig(run_dir="unused", input=str(source), output=str(tmp_path / "out.jsonl"), progress=False)
    stats = predict_file(predictor, cfg)

    assert (stats.documents, stats.bad_lines) == (4, 4)
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in records] == ["t0", "x", "t2", "none"]
    expected = predictor.predict_tokens([tokens[0], tokens[2], []])
    assert sum(map(len, expected)) > 0
    for record, doc_tokens, entities in zip([records[0], records[2], records[3]], [tokens[0], tokens[2], []], expected):
        assert_same_entities(record["entities"], entities)
        assert [(e["token_start"], e["token_end"]) for e in record["entities"]] == [(e.token_start, e.token_end) for e in entities]
        assert all(" ".join(doc_tokens[e["token_start"]:e["token_end"]]) == e["text"] for e in record["entities"])
    [text_entities] = predictor.predict([TEXTS[1]])
    assert_same_entities(records[1]["entities"], text_entities)
    assert all("token_start" not in e for e in records[1]["entities"])  # text lines keep their record format
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"{source}:4: \"tokens\"[0] 'New York' contains whitespace: a token is one or more characters without "
        "whitespace (entity offsets are into the tokens joined by single spaces)",
        f"{source}:5: \"tokens\" is a str, not a list of str tokens",
        f"{source}:6: \"tokens\"[1] is empty: a token is one or more characters without whitespace (entity offsets "
        "are into the tokens joined by single spaces)",
        f"{source}:7: give either a \"text\" or a \"tokens\" field, not both",
    ]


def test_chunks_are_also_bounded_by_characters(tmp_path, predictor):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(["abcdefghij"] * 5) + "\n")
    chunks = []
    predictor.predict = lambda texts: chunks.append(len(texts)) or [[] for _ in texts]
    try:
        predict_file(predictor, PredictConfig(run_dir="unused", input=str(source), output=str(tmp_path / "o.jsonl"),
                                              chunk_chars=25, progress=False))
    finally:
        del predictor.predict
    assert chunks == [3, 2]


def test_module_entry_point_reads_plain_text(tmp_path, run_dir, predictor):
    source = tmp_path / "in.txt"
    source.write_bytes(TEXTS[0].encode() + b"\n" + b"caf\xe9 latin-1\n" + TEXTS[2].encode() + b"\r\n{not json}\n")
    target = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "nerkit.predict_cli", f"run_dir={run_dir}", f"input={source}", f"output={target}",
         "format=text", "device=cpu", "threads=1"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 1, result.stderr  # a bad line: output written, but the status says so
    assert f"{source}:2: not valid UTF-8 (byte 0xe9, the line's byte 4)" in result.stderr
    assert "3 documents" in result.stderr and "1 bad lines skipped" in result.stderr
    records = read_jsonl(target)
    assert [r["id"] for r in records] == [1, 3, 4]
    texts = [TEXTS[0], TEXTS[2], "{not json}"]
    for record, entities in zip(records, predictor.predict(texts)):
        assert_same_entities(record["entities"], entities)


def test_auto_format_follows_the_first_line(tmp_path, predictor):
    source = tmp_path / "in.txt"
    source.write_text("\n" + TEXTS[1] + "\n" + '{"text": "json-looking text line"}\n')
    target = tmp_path / "out.jsonl"
    stats = predict_file(predictor, PredictConfig(run_dir="x", input=str(source), output=str(target), progress=False))
    assert stats.bad_lines == 0
    assert [r["id"] for r in read_jsonl(target)] == [2, 3]


def test_a_crash_leaves_no_partial_output(tmp_path, predictor):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    target = tmp_path / "out.jsonl"
    target.write_text("previous results\n")
    calls = []

    def failing(texts):
        calls.append(texts)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return [[] for _ in texts]

    predictor.predict = failing
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            predict_file(predictor, PredictConfig(run_dir="x", input=str(source), output=str(target), chunk_docs=2,
                                                  progress=False))
    finally:
        del predictor.predict
    assert target.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.jsonl"]


def test_argument_errors_are_explained(tmp_path, run_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "python -m nerkit.predict_cli run_dir=DIR" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"missing required argument\(s\): input=\.\.\., output=\.\.\."):
        main([f"run_dir={run_dir}"])
    with pytest.raises(SystemExit, match="bad argument: .*formt"):
        main([f"run_dir={run_dir}", "input=a", "output=b", "formt=text"])
    with pytest.raises(SystemExit, match="bad argument: .*xml"):
        main([f"run_dir={run_dir}", "input=a", "output=b", "format=xml"])
    with pytest.raises(SystemExit, match="bad argument: .*bf61"):
        main([f"run_dir={run_dir}", "input=a", "output=b", "precision=bf61"])
    source = tmp_path / "in.txt"
    source.write_text("x\n")
    with pytest.raises(ValueError, match="fp16 needs a GPU"):  # paths are checked first: these exist
        main([f"run_dir={run_dir}", f"input={source}", f"output={tmp_path / 'out.jsonl'}", "precision=fp16", "device=cpu"])
    with pytest.raises(ValueError, match="overwrite the input"):
        predict_file(None, PredictConfig(run_dir="x", input=str(source), output=str(source), format=Format.text))
    with pytest.raises(FileNotFoundError, match="missing.txt: input file not found"):
        predict_file(None, PredictConfig(run_dir="x", input=str(tmp_path / "missing.txt"), output="o"))


def test_precision_reaches_the_predictor(tmp_path, run_dir, predictor):
    source, target = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert main([f"run_dir={run_dir}", f"input={source}", f"output={target}", "precision=fp32", "device=cpu",
                 "progress=false"]) == 0
    fp32 = Predictor.from_run(run_dir, "cpu", precision="fp32")
    for got, expected in zip(read_jsonl(target), fp32.predict(TEXTS)):
        assert_same_entities(got["entities"], expected)


def test_batch_size_and_chunk_sizes_below_one_are_bad_arguments(tmp_path, run_dir):
    source = tmp_path / "in.txt"
    source.write_text("x\n")
    for option in ("batch_size=0", "batch_size=-3", "chunk_docs=0", "chunk_chars=0", "threads=0"):
        name, value = option.split("=")
        with pytest.raises(SystemExit, match=f"bad argument: {name}={value}: must be at least 1"):
            main([f"run_dir={run_dir}", f"input={source}", f"output={tmp_path / 'out.jsonl'}", option])
    assert not (tmp_path / "out.jsonl").exists()


def test_output_keeps_the_mode_of_the_file_it_replaces_or_follows_the_umask(tmp_path, predictor):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    cfg = PredictConfig(run_dir="x", input=str(source), output=str(tmp_path / "out.jsonl"), progress=False)
    old_umask = os.umask(0o022)
    try:
        predict_file(predictor, cfg)  # a new file: 0666 less the umask
        assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o644
        os.umask(0o077)
        predict_file(predictor, cfg)  # replacing a file keeps its mode, whatever the umask
        assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o644
        (tmp_path / "out.jsonl").chmod(0o640)
        predict_file(predictor, cfg)
        assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o640
        (tmp_path / "out.jsonl").unlink()
        predict_file(predictor, cfg)
        assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o600
    finally:
        os.umask(old_umask)
    assert len(read_jsonl(tmp_path / "out.jsonl")) == len(TEXTS)


def test_stale_partial_outputs_of_killed_runs_are_removed_at_the_next_run(tmp_path, predictor, caplog):
    source, target = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("\n".join(TEXTS) + "\n")
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()  # a process that is gone
    stale = [tmp_path / f".out.jsonl.{killed.pid}.0a1b2c3d.partial", tmp_path / ".out.jsonl.k2j_9xq1.partial"]
    running = tmp_path / f".out.jsonl.{os.getpid()}.00ff00ff.partial"  # a process still running: kept, named
    other_output = tmp_path / f".other.jsonl.{killed.pid}.0a1b2c3d.partial"
    for path in [*stale, running, other_output]:
        path.write_text('{"id": 1, "entities": []}\n')
    with caplog.at_level(logging.WARNING, logger="nerkit.predict_cli"):
        predict_file(predictor, PredictConfig(run_dir="x", input=str(source), output=str(target), progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["in.txt", "out.jsonl", running.name, other_output.name])
    assert len(read_jsonl(target)) == len(TEXTS)
    warnings = [r.getMessage() for r in caplog.records]
    assert sorted(warnings) == sorted(
        [f"removed {path}, the unfinished output of an earlier run that was stopped" for path in stale]
        + [f"{running}: process {os.getpid()} is writing this output too; its result or this run's will be lost"])
