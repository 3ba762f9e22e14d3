"""Red team round three (issue 23), training: unknown keys, an unwritable or busy run directory,
a full disk at a checkpoint, and a graceful stop on SIGTERM that resumes exactly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from nerkit import checkpoint as ckpt
from nerkit.checkpoint import complete_checkpoints
from nerkit.run_lock import LOCK_FILE, RunDirectoryBusy
from nerkit.train import train
from nerkit.validation import ConfigError, unknown_keys, validate_config
from tests.helpers import SIGNAL_AT_STEP, TOY_SENTENCES, make_cfg, require, write_conll

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _overrides(tiny_bert_dir: Path, data: Path, *more: str) -> list[str]:
    return [f"encoder.pretrained={tiny_bert_dir}", f"data.train.path={data}", f"data.dev.path={data}",
            "trainer.batch_size=2", "trainer.lr=1e-3", "trainer.device=cpu", "trainer.log_every=1", *more]


# --- case 9 ---------------------------------------------------------------------------------------

def test_unknown_keys_added_with_plus_are_refused():
    with pytest.raises(ConfigError) as err:
        validate_config(make_cfg(["+trainer.epoch=2", "+task.pooling=max", "+sed=1"]))
    message = str(err.value)
    assert "trainer.epoch: unknown key (did you mean trainer.epochs?)" in message
    assert "task.pooling: unknown key" in message  # a classification key, under the NER task
    assert "sed: unknown key (did you mean seed?)" in message
    # Keys that a file of conf/ sets pass, added with + or not, under the task that has them.
    validate_config(make_cfg(["+trainer.patience=2", "task=classify", "task.pooling=max"]))
    assert unknown_keys(make_cfg(["experiment=seed_comparison"])) == []  # its per_encoder table is a key of its own


# --- case 14 --------------------------------------------------------------------------------------

# Trains into a directory made read-only after the process started (before any step).
TRAIN_INTO_READ_ONLY = """
import sys
from nerkit.config import register_resolvers
from nerkit.train import train
from tests.helpers import make_cfg
register_resolvers()
train(make_cfg(sys.argv[2:]), sys.argv[1])
"""


@pytest.mark.slow
def test_a_run_directory_that_cannot_be_written_fails_before_the_first_step(tiny_bert_dir, tmp_path, toy_conll):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_dir.chmod(0o555)
    # Root writes anywhere; without CAP_DAC_OVERRIDE it obeys the mode bits like everyone else.
    as_user = ["setpriv", "--bounding-set=-dac_override"] if os.geteuid() == 0 else []
    done = subprocess.run([*as_user, sys.executable, "-c", TRAIN_INTO_READ_ONLY, str(run_dir),
                           *_overrides(tiny_bert_dir, toy_conll, "trainer.max_steps=2")],
                          env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"PermissionError: {run_dir}: cannot write there" in done.stderr
    assert "train:" not in done.stderr  # the progress bar of the steps never started
    assert list(run_dir.iterdir()) == []


# --- case 15 --------------------------------------------------------------------------------------

def test_a_full_disk_at_a_checkpoint_names_the_path(tiny_bert_dir, tmp_path, toy_conll, monkeypatch):
    def disk_full(tensors, filename, *args, **kwargs):
        if "trainer_state" in filename:  # what safetensors raises when the disk fills
            raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                                  'message: "No space left on device" })')
        return real_save_file(tensors, filename, *args, **kwargs)

    real_save_file = ckpt.save_file
    monkeypatch.setattr(ckpt, "save_file", disk_full)
    run_dir = tmp_path / "run"
    with pytest.raises(OSError, match=rf"{run_dir}/checkpoints/step-00000002: could not write this checkpoint "
                                      r".*No space left on device"):
        train(make_cfg(_overrides(tiny_bert_dir, toy_conll, "trainer.max_steps=2")), run_dir)
    assert complete_checkpoints(run_dir / "checkpoints") == []  # the half-written one is not a checkpoint


# --- case 16 --------------------------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from pathlib import Path
from nerkit.run_lock import claim_run_directory
lock = claim_run_directory(Path(sys.argv[1]))  # held while the object lives
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_training_into_the_same_run_directory_fails_at_once_naming_the_pid(tiny_bert_dir, tmp_path,
                                                                                     toy_conll):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], env=_env(), cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        cfg = make_cfg(_overrides(tiny_bert_dir, toy_conll, "trainer.max_steps=2"))
        with pytest.raises(RunDirectoryBusy, match=rf"{run_dir} is in use by another training \(PID {holder.pid} on "):
            train(cfg, run_dir)
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # before any step, record or checkpoint
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing anything: its lock is stale and taken over.
    train(cfg, run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["finished"] is True
    assert (run_dir / LOCK_FILE).read_text().startswith(f"PID {os.getpid()} on ")


# --- case 17 --------------------------------------------------------------------------------------


def _records(run_dir: Path) -> list[tuple]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["lr"]) if r["type"] == "train" else (r["step"], r["dev"]) for r in records]


@pytest.mark.slow
def test_sigterm_finishes_the_step_checkpoints_and_resumes_identically(tiny_bert_dir, tmp_path):
    data = write_conll(tmp_path / "toy.conll", TOY_SENTENCES * 3)  # 6 steps of 2 per epoch
    plain, stopped = tmp_path / "plain", tmp_path / "stopped"
    common = _overrides(tiny_bert_dir, data, "trainer.epochs=2", "trainer.checkpoint_every=4")
    train_command = [sys.executable, "-m", "nerkit.train"]
    jobs = [subprocess.Popen(train_command + common + [f"hydra.run.dir={plain}"], env=_env(), cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True),
            subprocess.Popen([sys.executable, "-c", SIGNAL_AT_STEP, *common, f"hydra.run.dir={stopped}"],
                             env={**_env(), "SIGNAL_AT_STEP": "10", "STEP_SIGNAL": "SIGTERM"}, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    (_, plain_err), (_, stop_err) = [job.communicate(timeout=300) for job in jobs]
    assert jobs[0].returncode == 0, plain_err
    # Step 10 was finished and checkpointed (the regular ones are at 4, 6 and 8), then the run exited non-zero.
    assert jobs[1].returncode == 1, stop_err
    checkpoint = stopped / "checkpoints" / "step-00000010"
    assert (f"training stopped by SIGTERM after step 10: checkpoint {checkpoint}; resume with the same command "
            f"plus resume=true (hydra.run.dir={stopped})") in stop_err
    assert complete_checkpoints(stopped / "checkpoints")[-1] == checkpoint
    assert not list((stopped / "checkpoints").glob(".tmp-*"))
    assert json.loads((stopped / "metrics.json").read_text())["finished"] is False
    assert _records(stopped)[-1][0] == 10

    resumed = subprocess.run(train_command + common + [f"hydra.run.dir={stopped}", "resume=true"], env=_env(),
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    want, got = (json.loads((d / "metrics.json").read_text()) for d in (plain, stopped))
    assert got["resumed_from"] == str(checkpoint) and got["finished"] is True
    assert got["history"] == want["history"] and got["best_dev_f1"] == want["best_dev_f1"]
    assert _records(stopped) == _records(plain)
    final = "checkpoints/step-00000012"
    for name in ("model.safetensors", f"{final}/model.safetensors", f"{final}/trainer_state.safetensors"):
        a, b = load_file(plain / name), load_file(stopped / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_from_outside_stops_training_with_a_checkpoint(tiny_bert_dir, tmp_path, toy_conll, signum):
    run_dir = tmp_path / "run"
    job = subprocess.Popen([sys.executable, "-m", "nerkit.train",
                            *_overrides(tiny_bert_dir, toy_conll, "trainer.max_steps=100000", "trainer.checkpoint_every=null",
                                        "trainer.eval_every=100000", f"hydra.run.dir={run_dir}")],
                           env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not ((run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").read_text()):
        assert job.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.1)
    job.send_signal(signum)
    err, _ = job.communicate(timeout=120)  # the log (stdout) and the error (stderr)
    assert job.returncode == 1, err
    name = signal.Signals(signum).name
    assert f"{name} received: stopping after the current step" in err and f"training stopped by {name} after step" in err
    [checkpoint] = complete_checkpoints(run_dir / "checkpoints")
    steps = int(checkpoint.name.removeprefix("step-"))
    assert f"checkpoint {checkpoint}; resume with" in err and 1 <= steps < 100000
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == steps


@pytest.mark.slow
def test_a_submitit_preemption_checkpoints_requeues_and_resumes_identically(tiny_bert_dir, tmp_path):
    require("hydra_plugins.hydra_submitit_launcher", "pip install -e .[cluster]")
    data = write_conll(tmp_path / "toy.conll", TOY_SENTENCES * 3)
    common = _overrides(tiny_bert_dir, data, "trainer.max_steps=120", "trainer.eval_every=1000",
                        "trainer.checkpoint_every=null", "resume=true")  # resume=true: a requeued job continues
    plain, sweep = tmp_path / "plain", tmp_path / "sweep"
    train_command = [sys.executable, "-m", "nerkit.train"]
    jobs = [subprocess.Popen(train_command + common + [f"hydra.run.dir={plain}"], env=_env(), cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True),
            subprocess.Popen(train_command + ["-m", "hydra/launcher=submitit_local", *common, f"hydra.sweep.dir={sweep}"],
                             env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    run_dir, deadline = sweep / "0", time.monotonic() + 240
    while not ((run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").read_text()):
        assert jobs[1].poll() is None and time.monotonic() < deadline, "the submitit job did not start training"
        time.sleep(0.1)
    # The job's process, as its lock file names it, gets the preemption signal SLURM would send.
    job_pid = int((run_dir / LOCK_FILE).read_text().split()[1])
    os.kill(job_pid, signal.SIGUSR2)
    (_, plain_err), (_, sweep_err) = [job.communicate(timeout=600) for job in jobs]
    assert jobs[0].returncode == 0, plain_err
    assert jobs[1].returncode == 0, sweep_err

    [job_log] = (sweep / ".submitit").glob("*/*_0_log.out")
    log = job_log.read_text()
    assert "training stopped by SIGUSR2 after step" in log and "Requeued job" in log
    stopped_at = int(log.split("training stopped by SIGUSR2 after step ")[1].split(":")[0])
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, plain))
    assert 1 <= stopped_at < 120 and got["resumed_from"] == str(run_dir / "checkpoints" / f"step-{stopped_at:08d}")
    assert got["finished"] is True and got["history"] == want["history"]
    assert _records(run_dir) == _records(plain)
    a, b = load_file(plain / "model.safetensors"), load_file(run_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
