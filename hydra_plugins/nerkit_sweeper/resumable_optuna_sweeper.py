"""The resumable Optuna sweeper of conf/hparams_search/optuna.yaml (logic in nerkit/sweeper.py).

Hydra imports every module under hydra_plugins at each start, so this one imports neither Optuna
nor the Optuna plugin until a sweep actually uses it (as the plugin's own OptunaSweeper does).
"""
from __future__ import annotations

import logging
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# Hydra imports Optuna when it builds the sampler, before the sweeper; Optuna's database storage
# imports alembic, which logs a line per alembic plugin at INFO.
logging.getLogger("alembic").setLevel(logging.WARNING)


class ResumableOptunaSweeper(Sweeper):
    """Takes the options of hydra-optuna-sweeper's OptunaSweeper."""

    def __init__(self, **options: Any) -> None:
        from nerkit.sweeper import ResumableOptunaSweeperImpl

        self.sweeper = ResumableOptunaSweeperImpl(**options)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
