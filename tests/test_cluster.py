"""Beyond one process: sweep jobs through submitit (the SLURM launcher's local twin) and Ray with
a failed job's record there, the SLURM config as sbatch sees it, an Optuna search that survives
being killed, and ``accelerate launch`` with two CPU processes.

The launcher tests need the ``cluster`` extra (``pip install -e .[cluster]``) and fail without it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from transformers import BertConfig

from tests.helpers import CONF_DIR, TOY_SENTENCES, multirun, require, write_conll

REPO = Path(__file__).resolve().parents[1]
CLUSTER = "pip install -e .[cluster]"




def assert_two_jobs_trained_and_one_failed(done: subprocess.CompletedProcess, sweep_dir: Path) -> None:
    """The sweep ``head.scheme=BIO,IOBES,NOPE``: NOPE raises when the head is built."""
    assert done.returncode != 0, "a failed job must fail the sweep"
    for job, scheme in [(0, "BIO"), (1, "IOBES")]:
        run = sweep_dir / str(job)
        assert OmegaConf.load(run / "config.yaml").head.scheme == scheme
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["parameters"] > 0 and 0.0 <= metrics["best_dev_f1"] <= 1.0
        assert (run / "model.safetensors").is_file() and not (run / "FAILED").exists()
    failed = sweep_dir / "2"
    assert not (failed / "metrics.json").exists()
    assert OmegaConf.load(failed / ".hydra" / "overrides.yaml")[-1] == "head.scheme=NOPE"
    record = (failed / "FAILED").read_text()
    assert record.startswith("Traceback") and "unknown tagging scheme 'NOPE'" in record
    assert "unknown tagging scheme 'NOPE'" in (failed / "train.log").read_text()


@pytest.mark.slow
def test_submitit_runs_each_job_in_its_own_process_and_records_the_failed_one(tmp_path, tiny_bert_dir):
    require("hydra_plugins.hydra_submitit_launcher", CLUSTER)
    done, sweep_dir = multirun(tmp_path, "hydra/launcher=submitit_local", f"encoder.pretrained={tiny_bert_dir}",
                               "head.scheme=BIO,IOBES,NOPE")
    assert_two_jobs_trained_and_one_failed(done, sweep_dir)
    # Each job ran in a process of its own, which wrote the FAILED record (Hydra's callbacks run
    # in the job's process, here a submitit job, not in the sweep's).
    logs = sorted((sweep_dir / ".submitit").glob("*/*_0_log.out"))
    assert len(logs) == 3 and len({log.parent.name for log in logs}) == 3
    assert sum("unknown tagging scheme 'NOPE'" in log.read_text() for log in logs) == 1


@pytest.fixture(scope="module")
def ray_cluster() -> str:
    """A 2-CPU Ray instance of this test process, as `ray start --head` would give; its address."""
    ray = require("ray", CLUSTER)
    require("hydra_plugins.hydra_ray_launcher", CLUSTER)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(REPO)  # the Ray workers (this process's children) import nerkit from here
    try:
        context = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20)
    finally:
        os.environ.pop("PYTHONPATH") if old is None else os.environ.update(PYTHONPATH=old)
    yield context.address_info["gcs_address"]
    ray.shutdown()


@pytest.mark.slow
def test_ray_cluster_launcher_runs_the_jobs_on_a_running_cluster_and_records_the_failed_one(
        tmp_path, tiny_bert_dir, ray_cluster):
    done, sweep_dir = multirun(tmp_path, "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={ray_cluster}",
                               "hydra.launcher.ray.remote.num_cpus=1", "hydra.launcher.ray.remote.num_gpus=0",
                               f"encoder.pretrained={tiny_bert_dir}", "head.scheme=BIO,IOBES,NOPE")
    assert_two_jobs_trained_and_one_failed(done, sweep_dir)
    assert f"Initializing ray with config: {{'address': '{ray_cluster}'" in done.stderr + done.stdout


class KillAtJob(Callback):
    """Kills the sweep (SIGKILL, as a scheduler or an OOM killer would) when job ``job`` starts,
    once: the basic launcher runs the jobs in the sweep's own process."""

    def __init__(self, job: int, marker: str) -> None:
        self.job, self.marker = job, Path(marker)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.job.num == self.job and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_optuna_search_continues_where_it_stopped_when_rerun(tmp_path, tiny_bert_dir):
    optuna = require("optuna", "pip install -e .[test]")
    search = ["hparams_search=optuna", "hydra.sweeper.params=null", "head.dropout=interval(0.0,0.5)",
              "hydra.sweeper.n_trials=3", f"encoder.pretrained={tiny_bert_dir}"]
    kill = ["+hydra.callbacks.kill._target_=tests.test_cluster.KillAtJob", "+hydra.callbacks.kill.job=1",
            f"+hydra.callbacks.kill.marker={tmp_path / 'killed'}"]

    def study() -> list[optuna.trial.FrozenTrial]:
        return optuna.load_study(study_name="nerkit", storage=f"sqlite:///{sweep_dir}/optuna.db").trials

    done, sweep_dir = multirun(tmp_path, *search, *kill)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    first, interrupted = study()
    assert first.state == optuna.trial.TrialState.COMPLETE and interrupted.state == optuna.trial.TrialState.RUNNING
    finished = (sweep_dir / "0" / "metrics.json").read_text(), (sweep_dir / "0" / "metrics.json").stat().st_mtime_ns
    assert not (sweep_dir / "1" / "metrics.json").exists()

    done, _ = multirun(tmp_path, *search, *kill)  # the same command: the kill has happened already
    assert done.returncode == 0, done.stderr[-3000:]
    trials = study()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[0].params == first.params and trials[0].value == first.value  # loaded back, not re-run
    assert ((sweep_dir / "0" / "metrics.json").read_text(), (sweep_dir / "0" / "metrics.json").stat().st_mtime_ns) \
        == finished
    assert trials[1].user_attrs["interrupted"] and trials[2].params == interrupted.params  # run again
    assert trials[3].params != trials[0].params  # the sampler did not restart its random stream
    assert [t.user_attrs["hydra_job_num"] for t in trials] == [0, 1, 2, 3]
    for trial in (trials[0], trials[2], trials[3]):
        run = sweep_dir / str(trial.user_attrs["hydra_job_num"])
        assert json.loads((run / "metrics.json").read_text())["best_dev_f1"] == trial.value
        assert OmegaConf.load(run / "config.yaml").head.dropout == pytest.approx(trial.params["head.dropout"])
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_value == max(t.value for t in trials if t.value is not None)

    done, _ = multirun(tmp_path, *search)  # complete: a rerun runs nothing and reports the same best
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(study()) == 4 and OmegaConf.load(sweep_dir / "optimization_results.yaml") == best


@pytest.mark.slow
def test_accelerate_launch_starts_two_cpu_processes_that_train_the_model_of_one(tiny_bert_dir, tmp_path):
    # `accelerate launch --cpu` starts one process (several only through mpirun, whose environment
    # nerkit does not read); --multi_gpu starts torchrun's processes, which train on CPU (gloo) too.
    require("accelerate", CLUSTER)
    bert = tmp_path / "bert"  # without dropout, which draws from each process's own random stream
    shutil.copytree(tiny_bert_dir, bert)
    config = BertConfig.from_pretrained(bert)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(bert)
    data = write_conll(tmp_path / "toy.conll", TOY_SENTENCES * 3 + TOY_SENTENCES[:1])
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["-m", "nerkit.train", f"encoder.pretrained={bert}", "head.dropout=0", f"data.train.path={data}",
            f"data.dev.path={data}", "trainer.epochs=2", "trainer.batch_size=3", "trainer.lr=1e-3", "trainer.device=cpu"]
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    jobs = [subprocess.Popen([*command, *args, f"hydra.run.dir={run}"], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for command, run in [([sys.executable], one), (accelerate, two)]]
    for job in jobs:
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-3000:]
    assert "data-parallel training on 2 processes (gloo)" in (two / "train.log").read_text()
    assert "data-parallel" not in (one / "train.log").read_text()
    want, got = (json.loads((run / "metrics.json").read_text()) for run in (one, two))
    assert got["history"] == want["history"]
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:  # float rounding only (~2e-7); a lost or doubled row moves weights by ~lr = 1e-3
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)


def test_slurm_config_asks_sbatch_for_requeue_and_a_signal_before_the_timeout(tmp_path, monkeypatch):
    submitit = require("submitit", CLUSTER)
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
        ray = compose("train", ["hydra/launcher=ray_cluster"], return_hydra_config=True).hydra.launcher
    assert ray._target_.endswith("RayLauncher") and ray.ray.init.address == "auto"
    assert "object_store_memory" in ray.ray.init and ray.ray.init.object_store_memory is None
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params.pop("_target_").endswith("SlurmLauncher")
    # Build the executor as hydra-submitit-launcher does; submitit wants an srun to exist.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=params.pop("submitit_folder"), cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    sbatch = executor._executor._make_submission_file_text("python -m nerkit.train", "uid").splitlines()
    for line in ["#SBATCH --requeue", "#SBATCH --signal=USR2@120", "#SBATCH --partition=gpu", "#SBATCH --time=240",
                 "#SBATCH --gpus-per-node=1"]:
        assert line in sbatch, (line, sbatch)
    assert executor._executor.max_num_timeout == 3
