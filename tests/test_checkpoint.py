"""Crash-safe checkpoints, exact resume after SIGKILL, pickle-free loading, failing sweep jobs."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import get_linear_schedule_with_warmup

from nerkit import checkpoint as ckpt
from nerkit.checkpoint import Checkpointer, TrainerState, complete_checkpoints, find_resume_checkpoint
from nerkit.model import NerModel
from nerkit.predict import Predictor
from tests.helpers import SIGNAL_AT_STEP, TOY_SENTENCES, make_cfg, tiny_ner_task, write_conll

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["LOC", "ORG", "PER"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _task_data(task: str, tmp_path: Path) -> list[str]:
    """12 training examples for ``task``: 6 steps of 2 per epoch."""
    if task == "ner":
        data = write_conll(tmp_path / "toy.conll", TOY_SENTENCES * 3)
        return [f"data.train.path={data}", f"data.dev.path={data}"]
    rows = [{"text": ("good news " if i % 2 else "bad news ") * (3 + i), "label": "pos" if i % 2 else "neg"}
            for i in range(12)]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["task=classify", "data=classify_jsonl", f"data.root={tmp_path}", "max_length=16", "stride=4"]


def _overrides(tiny_bert_dir: Path, data: list[str], run_dir: Path) -> list[str]:
    return [f"encoder.pretrained={tiny_bert_dir}", *data, "trainer.epochs=2", "trainer.batch_size=2",
            "trainer.lr=1e-3", "trainer.checkpoint_every=4", "trainer.log_every=1", "trainer.device=cpu",
            f"hydra.run.dir={run_dir}"]


def _train_records(run_dir: Path) -> list[tuple]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["lr"]) if r["type"] == "train" else (r["step"], r["dev"]) for r in records]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ner", "classify"])
def test_sigkill_mid_epoch_then_resume_gives_identical_weights_and_metrics(tiny_bert_dir, tmp_path, task):
    data = _task_data(task, tmp_path)
    plain, crashed = tmp_path / "plain", tmp_path / "crashed"
    train = [sys.executable, "-m", "nerkit.train"]
    # Step 10 is the 4th of epoch 1: the newest checkpoint then is step 8, 2 steps into epoch 1.
    jobs = [subprocess.Popen(train + _overrides(tiny_bert_dir, data, plain), env=_env(), cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True),
            subprocess.Popen([sys.executable, "-c", SIGNAL_AT_STEP, *_overrides(tiny_bert_dir, data, crashed)],
                             env={**_env(), "SIGNAL_AT_STEP": "10", "STEP_SIGNAL": "SIGKILL"}, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    (_, plain_err), (_, crash_err) = [job.communicate(timeout=300) for job in jobs]
    assert jobs[0].returncode == 0, plain_err
    assert jobs[1].returncode == -9, crash_err
    # The killed run's metrics.json says how far it got, and that it did not finish.
    killed = json.loads((crashed / "metrics.json").read_text())
    assert killed["finished"] is False and [h["step"] for h in killed["history"]] == [6]
    assert [p.name for p in complete_checkpoints(crashed / "checkpoints")] == ["step-00000006", "step-00000008"]

    resumed = subprocess.run(train + _overrides(tiny_bert_dir, data, crashed) + ["resume=true"], env=_env(), cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr

    want, got = (json.loads((d / "metrics.json").read_text()) for d in (plain, crashed))
    metric = "best_dev_f1" if task == "ner" else "best_dev_accuracy"
    assert got["resumed_from"] == str(crashed / "checkpoints" / "step-00000008") and got["finished"] is True
    assert got["history"] == want["history"] and got[metric] == want[metric]
    # metrics.jsonl: the crashed attempt's records past step 8 were replaced by the resumed run's.
    assert _train_records(crashed) == _train_records(plain) and len(_train_records(plain)) == 12 + 2
    final = "checkpoints/step-00000012"
    for name in ("model.safetensors", f"{final}/model.safetensors", f"{final}/trainer_state.safetensors"):
        a, b = load_file(plain / name), load_file(crashed / name)  # weights; optimizer moments and RNG
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs"


def _checkpointer(tiny_bert_dir: Path, root: Path, keep: int = 2) -> Checkpointer:
    task = tiny_ner_task(tiny_bert_dir, root.parent / "data")
    optimizer = torch.optim.AdamW(task.param_groups(1e-3, 0.01))
    scheduler = get_linear_schedule_with_warmup(optimizer, 1, 10)
    return Checkpointer(root, task, optimizer, scheduler, keep)


def _step(checkpointer: Checkpointer) -> None:
    """One optimizer step, so that the optimizer has state (exp_avg, step) to save."""
    loss = sum(p.sum() for p in checkpointer.task.model.parameters())
    loss.backward()
    checkpointer.optimizer.step()
    checkpointer.scheduler.step()


def test_rotation_keeps_the_last_n_and_the_best(tiny_bert_dir, tmp_path):
    checkpointer = _checkpointer(tiny_bert_dir, tmp_path / "checkpoints", keep=2)
    for step in range(1, 6):
        checkpointer.save(TrainerState(step=step, best_step=2))
    kept = [p.name for p in complete_checkpoints(checkpointer.root)]
    assert kept == ["step-00000002", "step-00000004", "step-00000005"]


def test_a_half_written_checkpoint_is_never_picked_up(tiny_bert_dir, tmp_path, monkeypatch):
    checkpointer = _checkpointer(tiny_bert_dir, tmp_path / "checkpoints")
    good = checkpointer.save(TrainerState(step=1))

    def die(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", die)  # the crash hits after the weights are written
    with pytest.raises(OSError, match="disk full"):
        checkpointer.save(TrainerState(step=2))
    assert [p.name for p in checkpointer.root.iterdir() if p.name.startswith(".tmp-step-00000002")]
    assert find_resume_checkpoint(True, checkpointer.root) == good
    # A step-* folder without the marker (e.g. copied by hand) is skipped too, and refused by name.
    unmarked = checkpointer.root / "step-00000003"
    unmarked.mkdir()
    assert find_resume_checkpoint(True, checkpointer.root) == good
    assert find_resume_checkpoint(str(tmp_path), checkpointer.root) == good
    with pytest.raises(FileNotFoundError, match="incomplete checkpoint"):
        find_resume_checkpoint(str(unmarked), checkpointer.root)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        find_resume_checkpoint(str(tmp_path / "nowhere"), checkpointer.root)
    assert find_resume_checkpoint(False, checkpointer.root) is None


def test_restore_is_exact_and_uses_no_pickle(tiny_bert_dir, tmp_path, monkeypatch):
    source = _checkpointer(tiny_bert_dir, tmp_path / "checkpoints")
    _step(source)
    torch.manual_seed(123)
    saved = source.save(TrainerState(epoch=1, batch=3, step=7, best_metric=0.5, best_step=7, history=[{"epoch": 0}]))
    expected_draw = torch.rand(3)

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle used")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, name, no_pickle)
    target = _checkpointer(tiny_bert_dir, tmp_path / "other" / "checkpoints")
    state = target.restore(saved, tmp_path / "other")
    assert state == TrainerState(epoch=1, batch=3, step=7, best_metric=0.5, best_step=7, history=[{"epoch": 0}])
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG continues where it was saved
    for a, b in zip(source.task.model.parameters(), target.task.model.parameters()):
        assert torch.equal(a, b)
    src, dst = source.optimizer.state_dict(), target.optimizer.state_dict()
    assert src["param_groups"] == dst["param_groups"]
    for k, moments in src["state"].items():
        assert all(torch.equal(v, dst["state"][k][name]) for name, v in moments.items())
    assert source.scheduler.state_dict() == target.scheduler.state_dict()
    # The best model was exported into the new run directory, and loads without pickle.
    assert Predictor.from_run(tmp_path / "other", "cpu").model.head.entity_types == TYPES


def test_resume_refuses_a_checkpoint_with_other_entity_types(tiny_bert_dir, tmp_path):
    saved = _checkpointer(tiny_bert_dir, tmp_path / "a").save(TrainerState(step=1))
    other = _checkpointer(tiny_bert_dir, tmp_path / "b")
    other.task.model.head.entity_types = ["LOC", "ORG", "PERSON"]
    with pytest.raises(ValueError, match=r"trained on entity types \['LOC', 'ORG', 'PER'\].*PERSON"):
        other.restore(saved, tmp_path)


@pytest.mark.parametrize("config_says, loader_asks", [(False, False), (False, True), (True, True)])
def test_trust_remote_code_only_when_the_loader_asks(tiny_bert_dir, tmp_path, monkeypatch, config_says, loader_asks):
    """The run's config.yaml never decides (a config that asks without the loader: test_security.py)."""
    from transformers import AutoConfig

    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}", f"encoder.trust_remote_code={config_says}"])
    NerModel.from_config(cfg, TYPES).save(tmp_path, cfg)
    seen = []
    real = AutoConfig.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoConfig, "from_pretrained", classmethod(spy))
    Predictor.from_run(tmp_path, "cpu", trust_remote_code=loader_asks)
    assert seen and set(seen) == {loader_asks}


def test_a_failing_sweep_job_is_recorded_and_the_others_finish(tiny_bert_dir, tmp_path):
    data = write_conll(tmp_path / "toy.conll", TOY_SENTENCES)
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "nerkit.train", "--multirun", f"encoder.pretrained={tiny_bert_dir}",
         f"data.train.path={tmp_path / 'missing.conll'},{data}", f"data.dev.path={data}", "trainer.epochs=1",
         "trainer.device=cpu", f"hydra.sweep.dir={sweep}"],
        env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    failed, finished = sweep / "0", sweep / "1"
    assert "missing.conll: file not found" in (failed / "FAILED").read_text()
    assert "missing.conll: file not found" in (failed / "train.log").read_text()
    assert not (failed / "metrics.json").exists()
    assert json.loads((finished / "metrics.json").read_text())["history"]
    assert not (finished / "FAILED").exists()


def test_resume_with_a_changed_config_names_the_changed_keys(tiny_bert_dir, tmp_path, caplog):
    saved = _checkpointer(tiny_bert_dir, tmp_path / "a").save(TrainerState(step=1))
    other = _checkpointer(tiny_bert_dir, tmp_path / "b")
    other.task.cfg.trainer.epochs, other.task.cfg.resume = 7, True
    other.restore(saved, tmp_path / "b")
    assert "differs from the checkpoint's in ['trainer.epochs']" in caplog.text


def test_resume_without_the_best_checkpoint_warns(tiny_bert_dir, tmp_path, caplog):
    checkpointer = _checkpointer(tiny_bert_dir, tmp_path / "checkpoints", keep=5)
    checkpointer.save(TrainerState(step=1, best_metric=0.25, best_step=1))
    latest = checkpointer.save(TrainerState(step=2, best_metric=0.25, best_step=1))
    shutil.rmtree(tmp_path / "checkpoints" / "step-00000001")  # e.g. only the latest one was copied
    checkpointer.restore(latest, tmp_path / "new")
    assert "step-00000001 is gone: the run directory gets a model only when the dev metric beats 0.2500" in caplog.text
    assert not (tmp_path / "new" / "model.safetensors").exists()


def test_the_fp16_gradient_scaler_is_checkpointed_and_must_match_on_resume(tiny_bert_dir, tmp_path):
    source = _checkpointer(tiny_bert_dir, tmp_path / "a" / "checkpoints")
    source.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    source.scaler.scale(torch.tensor(1.0))  # the scale exists from the first scaled loss on
    source.scaler.update(512.0)  # as after a step whose gradients overflowed
    saved = source.save(TrainerState(step=1))
    target = _checkpointer(tiny_bert_dir, tmp_path / "b" / "checkpoints")
    target.scaler = torch.amp.GradScaler("cpu")
    target.restore(saved, tmp_path / "b")
    assert target.scaler.state_dict() == source.scaler.state_dict() and target.scaler.get_scale() == 512.0
    without = _checkpointer(tiny_bert_dir, tmp_path / "c" / "checkpoints")
    with pytest.raises(ValueError, match="trained with fp16 gradient scaling; resume it with the same trainer.precision"):
        without.restore(saved, tmp_path / "c")
