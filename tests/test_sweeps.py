"""Sweeps end to end: Hydra multiruns through ``python -m nerkit.train -m``, the Optuna sweeper,
and ``nerkit.report`` built from what the jobs left in their run directories."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nerkit.data.readers import read_conll
from nerkit.predict import Predictor
from nerkit.report import build_report, collect
from tests.helpers import CONF_DIR, multirun

REPO = Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def six_combinations(tmp_path_factory) -> Path:
    """The documented command, every encoder x head: the embedded MiniLM and a BiLSTM."""
    done, sweep_dir = multirun(tmp_path_factory.mktemp("six"), "encoder=bert,bilstm", "head=softmax,crf,global_pointer")
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep_dir


def test_every_encoder_and_head_trains_saves_reloads_and_predicts(six_combinations):
    jobs = collect(six_combinations)
    assert {(j.encoder, j.head) for j in jobs} == {(e, h) for e in ("bert", "bilstm")
                                                   for h in ("softmax", "crf", "global_pointer")}
    for job in jobs:
        metrics = json.loads((job.directory / "metrics.json").read_text())
        assert 0.0 <= metrics["best_dev_f1"] <= 1.0 and metrics["parameters"] > 0
        predictor = Predictor.from_run(job.directory)
        assert OmegaConf.load(job.directory / "config.yaml").head._target_.endswith(type(predictor.model.head).__name__)
        text = "John Smith lives in Berlin ."
        entities = predictor.predict([text])[0]
        assert all(text[e.start:e.end] == e.text and e.label in ("LOC", "ORG", "PER") for e in entities)


def test_report_tables_every_job_with_per_type_metrics_and_a_plot(six_combinations, tmp_path):
    path, jobs = build_report(six_combinations, tmp_path)
    text = path.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert len(rows) == 12  # the overall table and the per-type table
    assert "6 jobs, 6 completed, 0 failed" in text
    for job in jobs:
        f1 = f"**{100 * job.dev['f1']:.1f}**"
        assert any(row.startswith(f"| {job.number} | {job.encoder} | {job.head} |") and f1 in row for row in rows)
    assert "| LOC | ORG | PER |" in text
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_shows_jobs_without_metrics_or_with_a_failed_marker_as_failed(six_combinations, tmp_path):
    sweep = shutil.copytree(six_combinations, tmp_path / "sweep")
    (sweep / "0" / "metrics.json").unlink()
    (sweep / "1" / "FAILED").write_text('Traceback (most recent call last):\n  File "train.py", line 9, in train\n'
                                        '    raise FloatingPointError(message)\n'
                                        'FloatingPointError: loss became nan at step 3\n')
    path, jobs = build_report(sweep)
    assert [j.number for j in jobs if j.failed] == [0, 1]
    text = path.read_text()
    assert "6 jobs, 4 completed, 2 failed" in text
    assert "failed: no metrics.json" in text
    assert "failed: FloatingPointError: loss became nan at step 3" in text


def test_optuna_search_records_failed_trials_and_finishes(tmp_path, tiny_bert_dir):
    # Half the choices make the head raise inside train(); the study must go on and pick a good one.
    done, sweep_dir = multirun(tmp_path, "hparams_search=optuna", "hydra.sweeper.params=null",
                               "head.scheme=choice(BIO,NOPE)", "hydra.sweeper.n_trials=4",
                               f"encoder.pretrained={tiny_bert_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = collect(sweep_dir)
    assert len(jobs) == 4
    assert {j.overrides["head.scheme"] for j in jobs} == {"BIO", "NOPE"}
    assert all(j.failed == (j.overrides["head.scheme"] == "NOPE") for j in jobs)
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_params["head.scheme"] == "BIO"
    assert best.best_value == max(j.dev["f1"] for j in jobs if not j.failed)
    assert "Optuna best dev F1" in build_report(sweep_dir)[0].read_text()


def test_experiment_search_and_launcher_configs_compose_with_the_plugins():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        experiment = compose("train", ["experiment=seed_comparison"], return_hydra_config=True)
        search = compose("train", ["hparams_search=optuna"], return_hydra_config=True).hydra
        parallel = compose("train", ["hydra/launcher=local_parallel"], return_hydra_config=True).hydra
    assert experiment.data.train._target_ == "nerkit.data.readers.read_conll" and experiment.data.train.limit == 2000
    assert set(experiment.hydra.sweeper.params) == {"encoder", "head", "head.lr"}
    assert search.sweeper._target_.endswith("OptunaSweeper") and search.sweeper.sampler._target_.endswith("TPESampler")
    assert parallel.launcher._target_.endswith("JoblibLauncher")


def test_reader_limit_keeps_the_first_documents_and_says_so(toy_conll, caplog):
    with caplog.at_level(logging.INFO, logger="nerkit.data.readers"):
        docs = read_conll(toy_conll, limit=3)
    assert [d.text for d in docs] == [d.text for d in read_conll(toy_conll)[:3]]
    assert "keeping the first 3 of 4 documents" in caplog.text
    assert len(read_conll(toy_conll, limit=10)) == 4
    with pytest.raises(ValueError, match="limit must be a positive"):
        read_conll(toy_conll, limit=0)
