"""Hostile or damaged run directories (issue 23): size limits before parsing, YAML aliases, label
maps that do not match the weights, symbolic link loops, truncated weights, the ONNX backend's
checks, and model cards that escape what the data names; and what loading one leaves behind in
the process (no garbage-collector pauses over the loaded model)."""
from __future__ import annotations

import gc
import json
import os
import shutil
import stat
import time
import weakref
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file

from nerkit.export import export_onnx
from nerkit.messages import shorten
from nerkit.onnx_predict import OnnxPredictor
from nerkit.predict import Predictor
from nerkit.runs import (CONFIG, ENCODER_DIR, LABELS, WEIGHTS, RunLimitError, UnsafeRunError, read_run,
                         write_text_atomically)
from nerkit.tasks.ner import NerTask
from nerkit.weights import stamp_labels
from tests.helpers import make_cfg, save_tiny_run


@pytest.fixture(scope="module")
def good_run(tiny_bert_dir, tmp_path_factory) -> Path:
    return save_tiny_run(tiny_bert_dir, tmp_path_factory.mktemp("run"))


@pytest.fixture
def run(good_run, tmp_path) -> Path:
    return Path(shutil.copytree(good_run, tmp_path / "run"))


def _set_weights_metadata(run: Path, metadata: dict[str, str] | None) -> None:
    weights = load_file(str(run / WEIGHTS))
    save_file(weights, str(run / WEIGHTS), metadata=metadata)


def _edit_config(run: Path, edit) -> None:
    config = yaml.safe_load((run / CONFIG).read_text())
    edit(config)
    (run / CONFIG).write_text(yaml.safe_dump(config))


def test_yaml_aliases_in_a_run_config_are_refused_before_they_expand(run):
    """Billion laughs: nine levels of ten aliases each would be 10^9 leaves."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    (run / CONFIG).write_text((run / CONFIG).read_text() + "\n".join(lines) + "\n")
    started = time.perf_counter()
    with pytest.raises(UnsafeRunError, match=r"config.yaml, line \d+: a YAML alias \(\*l0\)"):
        Predictor.from_run(run, "cpu")
    assert time.perf_counter() - started < 5


def test_a_config_over_the_size_limit_is_refused_unread_and_the_limit_can_be_raised(run, monkeypatch):
    size = (run / CONFIG).stat().st_size
    monkeypatch.setenv("NERKIT_MAX_CONFIG_BYTES", str(size - 1))
    with pytest.raises(RunLimitError, match=rf"config.yaml: {size:,} bytes, over the limit of {size - 1:,}; .* "
                                            rf"raise the limit: NERKIT_MAX_CONFIG_BYTES={size}"):
        Predictor.from_run(run, "cpu")
    monkeypatch.setenv("NERKIT_MAX_CONFIG_BYTES", str(size))
    assert Predictor.from_run(run, "cpu").entity_types == ["LOC", "ORG", "PER"]
    monkeypatch.setenv("NERKIT_MAX_CONFIG_BYTES", "lots")
    with pytest.raises(ValueError, match="NERKIT_MAX_CONFIG_BYTES='lots': must be a positive whole number"):
        Predictor.from_run(run, "cpu")


def test_a_million_labels_are_refused_by_size_before_parsing(run):
    labels = [f"T{i}" for i in range(1_000_000)]
    (run / LABELS).write_text(json.dumps({"entity_types": labels}))
    started = time.perf_counter()
    with pytest.raises(RunLimitError, match=r"labels.json: [\d,]+ bytes, over the limit of 4,194,304; "
                                            r".*NERKIT_MAX_LABELS_BYTES="):
        read_run(run, "entity_types")
    assert time.perf_counter() - started < 5


def test_more_labels_than_the_count_limit_are_refused_in_labels_json_and_in_the_weights(run, monkeypatch):
    labels = [f"T{i}" for i in range(10_001)]
    (run / LABELS).write_text(json.dumps({"entity_types": labels}))
    with pytest.raises(RunLimitError, match=r"labels.json: entity_types: 10,001 labels, over the limit of 10,000; "
                                            r".*NERKIT_MAX_LABELS=10001"):
        read_run(run, "entity_types")
    # The weights' metadata with a million labels (a 10 MB header): refused by count, quickly.
    (run / LABELS).write_text(json.dumps({"entity_types": ["LOC", "ORG", "PER"]}))
    _set_weights_metadata(run, {"entity_types": json.dumps([f"T{i}" for i in range(1_000_000)])})
    started = time.perf_counter()
    with pytest.raises(RunLimitError, match=r"model.safetensors: the label map in its metadata: 1,000,000 labels, over"):
        read_run(run, "entity_types")
    assert time.perf_counter() - started < 5
    monkeypatch.setenv("NERKIT_MAX_WEIGHTS_HEADER_BYTES", "1000000")
    with pytest.raises(RunLimitError, match=r"model.safetensors: the safetensors header: [\d,]+ bytes, over the limit "
                                            r"of 1,000,000; .*NERKIT_MAX_WEIGHTS_HEADER_BYTES="):
        read_run(run, "entity_types")


def test_a_label_mismatch_message_is_short_and_names_the_first_difference(run):
    labels = [f"TYPE_{i}" for i in range(5000)]
    (run / LABELS).write_text(json.dumps({"entity_types": labels}))
    _set_weights_metadata(run, {"entity_types": json.dumps(labels[:4000] + labels[4001:] + [labels[4000]])})
    with pytest.raises(ValueError) as err:
        read_run(run, "entity_types")
    message = str(err.value)
    assert len(message) < 1500, len(message)
    assert "5,000 in all" in message and "first difference at position 4000: 'TYPE_4000' against 'TYPE_4001'" in message


def test_shorten_keeps_both_ends_counts_the_rest_and_cuts_long_items():
    assert shorten(["a", "b"]) == "['a', 'b']"
    short = shorten([str(i) for i in range(100)])
    assert short.startswith("['0', '1', '2', '3', '4', ... 90 more ..., '95'") and short.endswith("(100 in all)")
    assert len(shorten(["x" * 10_000])) < 80


def test_weights_without_a_label_map_are_refused_with_a_hint_then_stamped(run):
    """Metadata removed and labels.json reordered: loading would permute the predicted labels."""
    _set_weights_metadata(run, None)
    (run / LABELS).write_text(json.dumps({"entity_types": ["PER", "ORG", "LOC"]}))
    with pytest.raises(ValueError, match=r"model.safetensors holds no label map in its metadata .* cannot be checked"
                                         r".*stamp_labels\('.*run'\)"):
        Predictor.from_run(run, "cpu")
    (run / LABELS).write_text(json.dumps({"entity_types": ["LOC", "ORG", "PER"]}))  # the original, restored
    stamp_labels(run)
    assert read_run(run, "entity_types")[1] == ["LOC", "ORG", "PER"]
    assert Predictor.from_run(run, "cpu").entity_types == ["LOC", "ORG", "PER"]


def test_duplicate_labels_are_refused(run):
    (run / LABELS).write_text(json.dumps({"entity_types": ["LOC", "LOC", "PER"]}))
    _set_weights_metadata(run, {"entity_types": json.dumps(["LOC", "LOC", "PER"])})
    with pytest.raises(ValueError, match=r"labels.json: entity_types: labels listed more than once: \['LOC'\]"):
        Predictor.from_run(run, "cpu")
    (run / LABELS).write_text('{"entity_types": ["LOC", "ORG", "PER"], "entity_types": ["PER"]}')
    with pytest.raises(ValueError, match=r"labels.json: not a nerkit label map .*'entity_types' appears twice"):
        Predictor.from_run(run, "cpu")


def test_a_symlink_loop_as_run_dir_says_so(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ValueError, match=r"loop is not a complete nerkit run directory: it is a symbolic link loop"):
        Predictor.from_run(loop, "cpu")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match=r"dangling .*: it is a symbolic link to .*gone, which does not exist"):
        Predictor.from_run(dangling, "cpu")


def test_a_truncated_encoder_weights_file_is_named(run):
    encoder_weights = run / ENCODER_DIR / "model.safetensors"
    encoder_weights.write_bytes(encoder_weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match=rf"{encoder_weights}: not a readable safetensors file, truncated or corrupt"):
        Predictor.from_run(run, "cpu")


def test_weights_that_do_not_fit_the_config_name_both_files(run):
    def to_crf(c):  # a softmax run's weights under a CRF head's config
        c["head"].update(_target_="nerkit.heads.crf.CRFHead")
        c["head"].pop("loss_divisor")  # the softmax head's own key

    _edit_config(run, to_crf)
    with pytest.raises(ValueError, match=r"model.safetensors does not match labels.json and config.yaml of .*run: "
                                         r"unexpected weights \[\], missing weights \['head.crf.end_transitions'"):
        Predictor.from_run(run, "cpu")


@pytest.fixture(scope="module")
def exported(good_run, tmp_path_factory) -> Path:
    run = Path(shutil.copytree(good_run, tmp_path_factory.mktemp("onnx") / "run"))
    export_onnx(run)
    return run


ONNX_TAMPERING = {
    "foreign target": (lambda c: c["encoder"].update(_target_="shutil.copyfile"), UnsafeRunError,
                       r"encoder._target_='shutil.copyfile': allowed here is"),
    "trust_remote_code": (lambda c: c["encoder"].update(trust_remote_code=True), UnsafeRunError,
                          r"sets encoder.trust_remote_code=true"),
    "interpolation": (lambda c: c.update(max_length="${oc.env:HOME}"), UnsafeRunError,
                      r"max_length='\$\{oc.env:HOME\}': interpolations are not allowed"),
}


@pytest.mark.parametrize("tampering", ONNX_TAMPERING)
def test_the_onnx_backend_checks_the_run_directory_as_torch_does(exported, tmp_path, tampering):
    edit, error, message = ONNX_TAMPERING[tampering]
    run = Path(shutil.copytree(exported, tmp_path / "run"))
    assert OnnxPredictor.from_run(run).entity_types == ["LOC", "ORG", "PER"]
    _edit_config(run, edit)
    with pytest.raises(error, match=message):
        OnnxPredictor.from_run(run)


class _Cycle:
    pass


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_loading_a_run_takes_what_it_loaded_out_of_the_garbage_collectors_view(exported, backend):
    gc.unfreeze()
    garbage = _Cycle()
    garbage.me = garbage  # a cycle already unreachable when loading starts: collected, not frozen
    gone = weakref.ref(garbage)
    del garbage
    if backend == "torch":
        predictor = Predictor.from_run(exported, "cpu", precision="fp32")
    else:
        predictor = OnnxPredictor.from_run(exported)
    assert gone() is None
    assert gc.get_freeze_count() > 0
    later = _Cycle()
    tracked = {id(o) for o in gc.get_objects()}  # what a collection walks
    assert id(predictor) not in tracked and id(predictor.decoder) not in tracked
    assert id(later) in tracked
    assert predictor.entity_types == ["LOC", "ORG", "PER"]


def test_the_onnx_backend_refuses_an_auto_map_in_the_encoder(exported, tmp_path):
    run = Path(shutil.copytree(exported, tmp_path / "run"))
    model_config = json.loads((run / ENCODER_DIR / "config.json").read_text())
    model_config["auto_map"] = {"AutoModel": "custom.CustomModel"}
    (run / ENCODER_DIR / "config.json").write_text(json.dumps(model_config))
    with pytest.raises(UnsafeRunError, match=r"config.json maps classes to custom code \(auto_map\)"):
        OnnxPredictor.from_run(run)


def test_the_model_card_escapes_html_and_markdown_in_label_names(tiny_bert_dir):
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}"])
    labels = ["<script>alert(1)</script>", "[click](javascript:alert(1))", "A|B"]
    metrics = {"epoch": 1, "step": 2, "dev": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "per_type": {
        labels[0]: {"precision": 0.5, "recall": 0.5, "f1-score": 0.5, "support": 2}}}}
    card = NerTask.model_card(cfg, labels, metrics)
    assert "<script>" not in card and "&lt;script&gt;alert(1)&lt;/script&gt;" in card
    assert "\\[click\\](javascript:alert(1))" in card and "A\\|B" in card
    assert "| &lt;script&gt;alert(1)&lt;/script&gt; | 0.5000 |" in card


def test_the_model_card_of_a_transformer_run_says_how_to_load_it(tiny_bert_dir):
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}"])
    card = NerTask.model_card(cfg, ["LOC", "ORG", "PER"])
    assert "AutoModel.from_pretrained(\"RUN_DIR/encoder\")" in card and "Entity types: LOC, ORG, PER" in card
    assert "python -m nerkit.predict_cli run_dir=RUN_DIR" in card


def test_a_yaml_fence_in_the_data_config_cannot_close_the_card_code_block(tiny_bert_dir):
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}"])
    cfg.data.train.path = "x```\n<img src=x>"
    card = NerTask.model_card(cfg, ["LOC"])
    data_block = card.split("## Data", 1)[1].split("## Scores", 1)[0]
    assert data_block.strip().startswith("````yaml") and data_block.strip().endswith("````")


def test_nothing_in_a_run_directory_check_imports_torch(good_run):
    import subprocess
    import sys

    script = (f"import sys; from nerkit.runs import read_run; read_run({str(good_run)!r}, 'entity_types'); "
              "print('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"


def test_an_atomic_write_keeps_the_mode_it_replaces_and_follows_the_umask_for_new_files(tmp_path):
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    kept.chmod(0o640)
    write_text_atomically(kept, "new")
    assert kept.read_text() == "new" and stat.S_IMODE(kept.stat().st_mode) == 0o640
    umask = os.umask(0o022)
    try:
        write_text_atomically(tmp_path / "new.json", "{}")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o644
