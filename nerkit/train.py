"""Training entry point: ``python -m nerkit.train [hydra overrides]``.

The task (``conf/task/*.yaml``: its ``_target_`` names the class in ``nerkit.tasks``) reads the
data named by ``data/`` and builds its model; the engine (``nerkit.engine``, ``trainer.*``)
trains it, keeps the best model in the run directory and returns the best dev value of the
task's primary metric (F1 for NER, accuracy for classification), which Hydra sweepers optimise.
``resume=true`` (or a path) continues exactly from the last checkpoint in ``<run>/checkpoints``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from nerkit.config import register_resolvers
from nerkit.engine import Engine
from nerkit.tasks.base import Task
from nerkit.validation import validate_config

log = logging.getLogger(__name__)


def train(cfg: DictConfig, output_dir: str | Path | None = None) -> float:
    """Train, evaluate and save a model as ``cfg`` says; returns the best dev value of the task's metric."""
    validate_config(cfg)  # every key checked before any data is read or model built
    output_dir = Path(output_dir or HydraConfig.get().runtime.output_dir)
    engine = Engine(cfg.trainer, cfg.seed, output_dir)  # seeds and picks the device before the model exists
    task_class = get_class(cfg.task._target_)
    if not issubclass(task_class, Task):
        raise TypeError(f"task._target_={cfg.task._target_} is not a nerkit.tasks.base.Task")
    task = task_class(cfg, engine.device)
    return engine.fit(task, cfg)


register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    return train(cfg)


if __name__ == "__main__":
    main()
