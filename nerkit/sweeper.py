"""Hydra's Optuna sweeper, made resumable: rerunning an interrupted search continues it.

hydra-optuna-sweeper already loads an existing study (``load_if_exists``), but a rerun would run
``n_trials`` more trials, number its jobs from 0 again (writing over the first run's job
directories) and restart the sampler's random stream (so its first trials repeat the first run's
parameters). Here ``n_trials`` is the number of finished trials a sweep directory should hold: a
rerun with the same ``hydra.sweep.dir`` and storage runs only the missing ones, numbers its jobs
after the existing ones, and re-runs (with the same parameters) the trials that an interrupted run
left unfinished. Every trial records its sweep directory and job number as user attributes, so
several sweeps (say one per machine, each with its own sweep directory) can share one study.
"""
from __future__ import annotations

import logging
from importlib.metadata import version
from pathlib import Path
from typing import Any

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from optuna.trial import TrialState

log = logging.getLogger(__name__)

SWEEP_DIR, JOB = "hydra_sweep_dir", "hydra_job_num"


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    """hydra_plugins/nerkit_sweeper/resumable_optuna_sweeper.py hands a sweep to this."""

    def sweep(self, arguments: list[str]) -> None:
        sweep_dir = str(Path(str(self.config.hydra.sweep.dir)).absolute())
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)  # a sqlite storage may live in it
        if self.storage and int(optuna.__version__.split(".")[0]) < 3 and int(version("sqlalchemy").split(".")[0]) >= 2:
            # Otherwise a bare AssertionError from deep inside Optuna's schema check.
            raise RuntimeError(f"Optuna {optuna.__version__} (hydra-optuna-sweeper needs Optuna 2) cannot use a "
                               f"database storage with SQLAlchemy {version('sqlalchemy')}: "
                               "pip install 'sqlalchemy>=1.4,<2' (the sweeps extra pins it)")
        try:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        except KeyError:  # no such study yet (or in-memory storage): a fresh search
            return super().sweep(arguments)
        ours = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(SWEEP_DIR) == sweep_dir]
        # One sweep process per sweep directory, so its trials still RUNNING died with an earlier run.
        for trial in ours:
            if trial.state == TrialState.RUNNING:
                log.warning("trial %d (job %s) was interrupted: failing it and queueing its parameters again",
                            trial.number, trial.user_attrs.get(JOB))
                optuna.trial.Trial(study, trial._trial_id).set_user_attr("interrupted", True)
                study.tell(trial.number, state=TrialState.FAIL)
                study.enqueue_trial(trial.params)
        done = sum(1 for t in ours if t.state != TrialState.RUNNING and not t.user_attrs.get("interrupted"))
        log.info("resuming study %r: %d trials in all, %d finished in this sweep directory, %d wanted",
                 study.study_name, len(study.trials), done, self.n_trials)
        self.n_trials = max(0, self.n_trials - done)
        self.job_idx = len(ours)  # job directories after the existing ones, never over them
        if isinstance(self.sampler, optuna.samplers.BaseSampler):
            self.sampler.reseed_rng()  # a seeded sampler would otherwise repeat the first run's draws
        if self.n_trials == 0:
            log.info("nothing left to run")
        return super().sweep(arguments)

    def _configure_trials(self, trials: list[Any], search_space_distributions: dict[str, Any],
                          fixed_params: dict[str, Any]) -> Any:
        overrides = super()._configure_trials(trials, search_space_distributions, fixed_params)
        sweep_dir = str(Path(str(self.config.hydra.sweep.dir)).absolute())
        for number, trial in enumerate(trials, start=self.job_idx):
            trial.set_user_attr(SWEEP_DIR, sweep_dir)
            trial.set_user_attr(JOB, number)
        return overrides

