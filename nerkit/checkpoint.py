"""Crash-safe training checkpoints: atomic directories, rotation and exact resume, without pickle.

A checkpoint ``checkpoints/step-00000120/`` is a complete run directory of any task (written
and read back by the task: it loads like the run directory, with the same checks) plus ``trainer_state.json`` and
``trainer_state.safetensors``: optimizer, scheduler and (fp16) gradient-scaler state, the
torch / numpy / python RNG states and the position in training, with every tensor in the safetensors file and everything else in plain JSON. It is
written into a hidden temporary sibling, synced to disk, marked ``COMPLETE`` and renamed into
place, so a crash leaves either the finished checkpoint or a ``.tmp-*`` directory that nothing
ever loads. Rotation keeps the last ``keep`` checkpoints plus the one holding the best model.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nerkit.messages import shorten
from nerkit.model_card import MODEL_CARD
from nerkit.runs import CONFIG, ENCODER_DIR, LABELS, WEIGHTS, read_run
from nerkit.tasks.base import Task

log = logging.getLogger(__name__)

COMPLETE, STATE_JSON, STATE_TENSORS = "COMPLETE", "trainer_state.json", "trainer_state.safetensors"
_NAME = re.compile(r"step-(\d+)")


@dataclass
class TrainerState:
    """Where training stands: ``batch`` batches of epoch ``epoch`` are done, ``step`` in all."""

    epoch: int = 0
    batch: int = 0
    step: int = 0  # optimizer steps
    best_metric: float = -1.0  # the task's primary dev metric (higher is better) of the best model
    best_step: int | None = None  # the step whose checkpoint holds the best model
    bad_evaluations: int = 0  # evaluations since the best one (early stopping)
    elapsed: float = 0.0  # training seconds so far, over all resumed runs
    history: list[dict] = field(default_factory=list)


def _name(step: int) -> str:
    return f"step-{step:08d}"


def complete_checkpoints(root: Path) -> list[Path]:
    """Finished checkpoints under ``root``, oldest first; temporary and unmarked ones are ignored."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.fullmatch(p.name) and (p / COMPLETE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.fullmatch(p.name).group(1)))


def find_resume_checkpoint(resume: bool | str | None, own_checkpoints: Path) -> Path | None:
    """``resume=true``: the latest complete checkpoint of this run directory (None when there is
    none yet, so a restart loop may always pass it); ``resume=<path>``: that checkpoint, or the
    latest one of that run directory or checkpoints folder."""
    if resume in (None, False):
        return None
    if resume is True:
        return (complete_checkpoints(own_checkpoints) or [None])[-1]
    path = Path(str(resume))
    if _NAME.fullmatch(path.name) and path.is_dir():
        if not (path / COMPLETE).is_file():
            raise FileNotFoundError(f"{path} is an incomplete checkpoint (no {COMPLETE} marker): "
                                    "the run died writing it")
        return path
    for root in (path / "checkpoints", path):
        if latest := complete_checkpoints(root):
            return latest[-1]
    raise FileNotFoundError(f"resume={resume}: no complete checkpoint there (looked for step-*/{COMPLETE})")


class Checkpointer:
    """Saves and restores everything ``train`` needs to continue bit-for-bit."""

    def __init__(self, root: Path, task: Task, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, keep: int, scaler: torch.amp.GradScaler | None = None):
        self.root, self.task = root, task
        self.optimizer, self.scheduler, self.keep, self.scaler = optimizer, scheduler, keep, scaler

    def save(self, state: TrainerState) -> Path | None:
        if self.keep <= 0:
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / _name(state.step)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=self.root))
        try:
            # The model card gets the dev scores when this step was evaluated.
            evaluated = [h for h in state.history if h.get("step") == state.step]
            self.task.save(tmp, {**evaluated[-1]} if evaluated else None)
            tensors: dict[str, torch.Tensor] = {}
            everything = {"trainer": asdict(state), "optimizer": self.optimizer.state_dict(),
                          "scheduler": self.scheduler.state_dict(), "rng": _rng_states(),
                          "scaler": self.scaler.state_dict() if self.scaler else None}
            (tmp / STATE_JSON).write_text(json.dumps(_encode(everything, tensors, "")))
            save_file(tensors, str(tmp / STATE_TENSORS))
            (tmp / COMPLETE).write_text(f"step {state.step}\n")
            for path in tmp.rglob("*"):
                if path.is_file():
                    _fsync(path)
        except (OSError, SafetensorError) as err:  # a full disk: safetensors' own error names no file
            raise OSError(f"{final}: could not write this checkpoint into {self.root} ({err}); the previous "
                          "checkpoints are intact (the temporary folder is never loaded), resume=true continues "
                          "from the latest") from err
        if final.exists():  # the same step saved again (resumed from an older checkpoint)
            old = final.rename(self.root / f".tmp-old-{final.name}")
            shutil.rmtree(old)
        os.rename(tmp, final)
        _fsync(self.root)
        self._rotate(state.best_step)
        return final

    def _rotate(self, best_step: int | None) -> None:
        done = complete_checkpoints(self.root)
        best = _name(best_step) if best_step is not None else None
        keep = set(done[-self.keep :]) | {p for p in done if p.name == best}
        for path in done:
            if path not in keep:
                shutil.rmtree(path)
        for path in self.root.glob(".tmp-*"):  # left by a crashed writer; only one writer per run
            shutil.rmtree(path, ignore_errors=True)

    def restore(self, path: Path, output_dir: Path | None) -> TrainerState:
        """Load weights, optimizer, scheduler and RNG states from ``path``; put the best model so
        far into ``output_dir`` (None: leave that to another process). Call it last before the
        loop: it sets the global RNG states."""
        # The checkpoint is read as any run directory is (complete, safe, labels matching the weights);
        # its encoder is the run's own, trusted exactly as far as this training config trusts it.
        [(key, labels)] = self.task.label_map.items()
        saved_cfg, saved_labels = read_run(path, key, self.task.cfg.encoder.get("trust_remote_code", False))
        if saved_labels != labels:
            raise ValueError(f"{path / LABELS}: the checkpoint was trained on {key.replace('_', ' ')} "
                             f"{shorten(saved_labels)}, the data now gives {shorten(labels)}; cannot resume")
        changed = _changed_keys(saved_cfg, self.task.cfg)
        if changed:
            log.warning("resuming with a config that differs from the checkpoint's in %s: the run will not "
                        "match an uninterrupted one", shorten(changed))
        self.task.load_weights(path)
        everything = _decode(json.loads((path / STATE_JSON).read_text()), load_file(str(path / STATE_TENSORS)))
        self.optimizer.load_state_dict(everything["optimizer"])
        self.scheduler.load_state_dict(everything["scheduler"])
        if (self.scaler is None) != (everything.get("scaler") is None):
            raise ValueError(f"{path}: the checkpoint was trained with{'out' if self.scaler else ''} fp16 gradient "
                             "scaling; resume it with the same trainer.precision")
        if self.scaler:
            self.scaler.load_state_dict(everything["scaler"])
        state = TrainerState(**everything["trainer"])
        best = path.parent / _name(state.best_step) if state.best_step is not None else None
        if best is not None and output_dir is not None:
            if (best / COMPLETE).is_file():
                _export_model(best, output_dir)
            else:
                log.warning("%s is gone: the run directory gets a model only when the dev metric beats %.4f again",
                            best, state.best_metric)
        _set_rng_states(everything["rng"])
        return state


def _export_model(checkpoint: Path, output_dir: Path) -> None:
    """Copy a checkpoint's model files into the run directory (the run's best model)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS, CONFIG, LABELS, MODEL_CARD):
        tmp = output_dir / f".{name}.tmp"
        shutil.copyfile(checkpoint / name, tmp)
        os.replace(tmp, output_dir / name)
    shutil.copytree(checkpoint / ENCODER_DIR, output_dir / ENCODER_DIR, dirs_exist_ok=True)


def _changed_keys(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (``resume`` itself aside)."""
    if isinstance(saved, DictConfig):
        saved, current = OmegaConf.to_container(saved), OmegaConf.to_container(current, resolve=True)
    if not (isinstance(saved, dict) and isinstance(current, dict)):
        return [prefix.rstrip(".")] if saved != current else []
    keys = sorted((set(saved) | set(current)) - {"resume"})
    return [k for key in keys for k in _changed_keys(saved.get(key), current.get(key), f"{prefix}{key}.")]


def _rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(legacy=False), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# JSON cannot hold tensors, arrays, tuples or dicts with int keys (optimizer state is keyed by
# parameter index); these tagged forms keep them exactly, with tensors in the safetensors file.
def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _encode(v, tensors, f"{path}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {path or '/'} without pickle")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.array(obj["__ndarray__"], dtype=obj["dtype"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    return {k: _decode(v, tensors) for k, v in obj["__dict__"]}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
