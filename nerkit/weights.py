"""A model's weights in a run directory (``nerkit.runs`` is the layout and its checks, without
torch): writing a run, loading its weights into a model built for it, and stamping a label map
into weights saved without one."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, load_model, save_file
from torch import nn

from nerkit.messages import shorten
from nerkit.runs import CONFIG, ENCODER_DIR, LABELS, WEIGHTS, write_run_files


def _run_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights model.safetensors holds: all but those the encoder saves in encoder/."""
    own = model.encoder.saves_weights
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if not (own and k.startswith("encoder."))}


def save_run(directory: str | Path, model: nn.Module, cfg: DictConfig, key: str, labels: Sequence[str]) -> None:
    """Write a run directory: weights, resolved config, label map (under ``key``) and encoder files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Both written aside and renamed, so a crash mid-write keeps the previous model.
    encoder_tmp, old = directory / f".{ENCODER_DIR}.tmp", directory / f".{ENCODER_DIR}.old"
    for leftover in (encoder_tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    model.encoder.save_files(encoder_tmp)
    tmp = directory / f".{WEIGHTS}.tmp"
    # The label map also goes into the weights file: a labels.json edited or swapped later is caught.
    save_file(_run_weights(model), str(tmp), metadata={key: json.dumps(list(labels))})
    if (directory / ENCODER_DIR).exists():
        os.replace(directory / ENCODER_DIR, old)
    os.replace(encoder_tmp, directory / ENCODER_DIR)
    os.replace(tmp, directory / WEIGHTS)
    shutil.rmtree(old, ignore_errors=True)
    write_run_files(directory, cfg, key, list(labels))


def load_weights(model: nn.Module, directory: Path) -> None:
    """Load a run directory's weights into ``model`` (built for it by ``runs.read_run``'s config and
    labels): model.safetensors, and the encoder's own files when it saves its weights there."""
    try:
        missing, unexpected = load_model(model, str(directory / WEIGHTS), strict=False)
    except RuntimeError as err:  # a tensor of another shape
        raise ValueError(f"{directory / WEIGHTS} does not match {LABELS} and {CONFIG} of {directory}: {err}") from None
    missing = set(missing) ^ (set(model.state_dict()) - set(_run_weights(model)))
    if unexpected or missing:
        raise ValueError(f"{directory / WEIGHTS} does not match {LABELS} and {CONFIG} of {directory}: unexpected "
                         f"weights {shorten(sorted(unexpected))}, missing weights {shorten(sorted(missing))}")
    if model.encoder.saves_weights:
        model.encoder.load_saved_weights(directory / ENCODER_DIR)


def stamp_labels(directory: str | Path) -> None:
    """Write labels.json's label map into the metadata of model.safetensors, for weights saved
    without one (``runs.read_run`` refuses those). Only for a labels.json known to be the original:
    from then on it is what the weights are checked against."""
    directory = Path(directory)
    [(key, labels)] = json.loads((directory / LABELS).read_text(encoding="utf-8")).items()
    tmp = directory / f".{WEIGHTS}.tmp"
    save_file(load_file(str(directory / WEIGHTS)), str(tmp), metadata={key: json.dumps(labels)})
    os.replace(tmp, directory / WEIGHTS)
