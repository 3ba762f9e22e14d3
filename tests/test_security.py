"""A run directory is data: loading one never runs code that its files name."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from nerkit.predict import Predictor
from nerkit.predict_cli import main as predict_main
from nerkit.runs import CONFIG, ENCODER_DIR, UnsafeRunError, target_problem
from nerkit.validation import ConfigError, validate_config
from tests.helpers import CONF_DIR, make_cfg, save_tiny_run

VICTIM_TEXT = "the original content\n"


@pytest.fixture(scope="module")
def good_run(tiny_bert_dir, tmp_path_factory) -> Path:
    return save_tiny_run(tiny_bert_dir, tmp_path_factory.mktemp("run"))


def _copy_run(good_run: Path, directory: Path) -> Path:
    return Path(shutil.copytree(good_run, directory))


def _batch_cli_refuses(run: Path, tmp_path: Path, message: str) -> None:
    """The batch CLI (python -m nerkit.predict) loads a run as Predictor.from_run does: refused, no output."""
    source, output = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("John lives in Berlin\n")
    with pytest.raises(UnsafeRunError, match=message):
        predict_main([f"run_dir={run}", f"input={source}", f"output={output}", "progress=false"])
    assert not output.exists()


def _tampered_run(good_run: Path, tmp_path: Path, edit) -> tuple[Path, Path, Path]:
    """A copy of ``good_run`` whose config.yaml ``edit(config, copy_call)`` changed, where
    ``copy_call`` is a ``shutil.copyfile`` that would overwrite ``victim`` with ``attacker``."""
    run = _copy_run(good_run, tmp_path / "run")
    victim, attacker = tmp_path / "victim.txt", tmp_path / "attacker.txt"
    victim.write_text(VICTIM_TEXT)
    attacker.write_text("overwritten\n")
    config = yaml.safe_load((run / CONFIG).read_text())
    edit(config, {"_target_": "shutil.copyfile", "src": str(attacker), "dst": str(victim)})
    (run / CONFIG).write_text(yaml.safe_dump(config))
    return run, victim, attacker


ATTACKS = {
    "encoder target": lambda c, call: c["encoder"].update(call),
    "nested in the encoder": lambda c, call: c["encoder"].update(pretrained=call),
    "head target": lambda c, call: c.update(head={**call, "entity_types": ["PER"]}),
    "nested in the head": lambda c, call: c["head"].update(dropout=call),
    "in a list": lambda c, call: c["trainer"].update(callbacks=[call]),
    "data reader": lambda c, call: c["data"].update(train=call),
    "new top-level key": lambda c, call: c.update(setup=call),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_target_in_a_run_config_is_refused_before_anything_is_built(good_run, tmp_path, attack):
    run, victim, _ = _tampered_run(good_run, tmp_path, ATTACKS[attack])
    with pytest.raises(UnsafeRunError, match=r"config.yaml names code .* nothing was built:\n.*'shutil.copyfile'"):
        Predictor.from_run(run, "cpu")
    _batch_cli_refuses(run, tmp_path, "shutil.copyfile")
    assert victim.read_text() == VICTIM_TEXT


def test_other_instantiate_keys_and_interpolations_are_refused(good_run, tmp_path):
    run = _copy_run(good_run, tmp_path / "run")
    config = yaml.safe_load((run / CONFIG).read_text())
    config["encoder"]["_args_"] = ["x"]
    config["head"]["_partial_"] = True
    config["trainer"]["lr"] = "${oc.env:HOME}"
    (run / CONFIG).write_text(yaml.safe_dump(config))
    with pytest.raises(UnsafeRunError) as err:
        Predictor.from_run(run, "cpu")
    assert "encoder._args_: Hydra instantiate keys other than _target_ are not allowed" in str(err.value)
    assert "head._partial_" in str(err.value)
    assert "trainer.lr='${oc.env:HOME}': interpolations are not allowed" in str(err.value)


def test_training_refuses_targets_a_run_directory_could_not_load(tmp_path):
    cfg = make_cfg(["+data.extra._target_=os.system", "+data.extra.command=touch " + str(tmp_path / "pwned")])
    with pytest.raises(ConfigError, match=r"data.extra._target_='os.system': allowed here is a reader function .* would not load"):
        validate_config(cfg)
    assert not (tmp_path / "pwned").exists()


def test_every_target_in_conf_is_allowed_in_its_place():
    """What conf/ names loads; the allow-list is derived from base classes, so a new head,
    encoder or task needs no entry anywhere but its own file and yaml."""
    places = {"encoder": "encoder", "head": "head", "task": "task", "data": "data.train"}

    def targets(node):
        if isinstance(node, dict):
            if "_target_" in node:
                yield node["_target_"]
            for value in node.values():
                yield from targets(value)

    named = 0
    for group, place in places.items():
        for path in (Path(CONF_DIR) / group).glob("*.yaml"):
            for target in targets(OmegaConf.to_container(OmegaConf.load(path))):
                assert target_problem(place, target) is None, (path, target)
                named += 1
    assert named >= 15  # every encoder, head, task and data config was looked at


@pytest.mark.parametrize("place,target", [
    ("head", "nerkit.encoders.bert.BertEncoder"),  # nerkit's own, but not a head
    ("head", "nerkit.heads.base.log"),  # inside the package, not a Head subclass
    ("head", "nerkit.heads.nowhere.Head"),  # no such module
    ("encoder", "torch.nn.Linear"),  # outside the package: never imported
    ("task", "nerkit.model.NerModel"),
    ("data.train", "nerkit.data.readers.Document"),  # not a reader function
    ("data.train", "shutil.copyfile"),
    ("trainer", "nerkit.heads.crf.CRFHead"),  # a place that names nothing
])
def test_targets_outside_their_place_are_refused(place, target):
    assert "allowed here is" in target_problem(place, target)


CUSTOM_CODE = '''
from pathlib import Path
from transformers import BertConfig, BertModel

Path({marker!r}).write_text("encoder/custom.py ran")


class CustomConfig(BertConfig):
    pass


class CustomModel(BertModel):
    config_class = CustomConfig
'''


def _remote_code_run(good_run: Path, tmp_path: Path, config_says: bool) -> tuple[Path, Path]:
    """A run whose encoder/config.json maps to Python in encoder/custom.py, which leaves a marker."""
    run, marker = _copy_run(good_run, tmp_path / "run"), tmp_path / "marker"
    (run / ENCODER_DIR / "custom.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    model_config = json.loads((run / ENCODER_DIR / "config.json").read_text())
    model_config["auto_map"] = {"AutoConfig": "custom.CustomConfig", "AutoModel": "custom.CustomModel"}
    (run / ENCODER_DIR / "config.json").write_text(json.dumps(model_config))
    config = yaml.safe_load((run / CONFIG).read_text())
    config["encoder"]["trust_remote_code"] = config_says
    (run / CONFIG).write_text(yaml.safe_dump(config))
    return run, marker


@pytest.mark.parametrize("config_says", [True, False])
def test_remote_code_runs_only_when_the_caller_asks(good_run, tmp_path, config_says):
    run, marker = _remote_code_run(good_run, tmp_path, config_says)
    refused = r"encoder.trust_remote_code=true" if config_says else r"config.json maps classes to custom code"
    with pytest.raises(UnsafeRunError, match=rf"{refused}.*pass trust_remote_code=True"):
        Predictor.from_run(run, "cpu")
    _batch_cli_refuses(run, tmp_path, "trust_remote_code=true")
    assert not marker.exists()
    # The caller's word is the one that counts: then the encoder's own code runs, and the model works.
    predictor = Predictor.from_run(run, "cpu", trust_remote_code=True)
    assert marker.read_text() == "encoder/custom.py ran"
    assert type(predictor.model.encoder.model).__name__ == "CustomModel"
    assert predictor.predict(["John lives in Berlin"])[0]
