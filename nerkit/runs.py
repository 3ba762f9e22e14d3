"""The run directory: a trained model on disk, written and read as data.

A run directory holds ``encoder/`` (tokenizer and encoder; a transformer encoder is a
HuggingFace model folder with its fine-tuned weights, so ``AutoModel.from_pretrained(RUN/encoder)``
loads it), ``model.safetensors`` (every other weight: the head, and a BiLSTM encoder's; the label
map in its metadata), ``config.yaml`` (the resolved config), ``labels.json`` (the label map) and
``README.md`` (a model card). It loads without pickle, and reading it never runs code
it names: every ``_target_`` in its config must be one of nerkit's own classes in its own
place (the encoder, the head, the task, the data readers), the config holds plain values only (no
interpolations, no other Hydra keys), and Python files in ``encoder/`` may run only when the
caller passes ``trust_remote_code=True``; the file's own setting never decides. All of this
is checked before anything is built.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file
from torch import nn

from nerkit.model_card import write_model_card

WEIGHTS, CONFIG, LABELS, ENCODER_DIR = "model.safetensors", "config.yaml", "labels.json", "encoder"

# What a config may name, by place: a class of nerkit's own package for that place, derived
# from its base class (so a new head, encoder or task needs no entry here), or a reader function
# of nerkit.data. Nothing outside these packages is ever imported to check a target.
PLACES = {"encoder": ("nerkit.encoders.", "nerkit.encoders.base.Encoder"),
          "head": ("nerkit.heads.", "nerkit.heads.base.Head"),
          "task": ("nerkit.tasks.", "nerkit.tasks.base.Task")}
READER_PACKAGE, READER_PREFIXES = "nerkit.data.", ("read_", "split_")
# Hydra's other instantiate keys change what gets called and how (positional args, partials).
_HYDRA_KEYS = frozenset({"_args_", "_partial_", "_recursive_", "_convert_"})
# Files in encoder/ whose `auto_map` makes transformers import Python from that folder.
_CODE_MAPS = ("config.json", "tokenizer_config.json")


class UnsafeRunError(ValueError):
    """A run directory (or a config) names code that nerkit will not run on its own."""


def _resolve(target: str) -> Any:
    """The object a dotted name inside nerkit names, or None."""
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def target_problem(place: str, target: Any) -> str | None:
    """Why ``target`` may not be named at ``place`` (``encoder``, ``head``, ``task``, ``data.*``), or None."""
    if place in PLACES:
        package, base = PLACES[place]
        kind = f"a subclass of {base} in {package}*"
        if isinstance(target, str) and target.startswith(package):
            found = _resolve(target)
            if isinstance(found, type) and base in {f"{c.__module__}.{c.__qualname__}" for c in found.__mro__}:
                return None
    elif place.startswith("data."):
        kind = f"a reader function {READER_PACKAGE}*.{{{','.join(p + '*' for p in READER_PREFIXES)}}}"
        if isinstance(target, str) and target.startswith(READER_PACKAGE):
            name = target.rpartition(".")[2]
            if name.startswith(READER_PREFIXES) and callable(_resolve(target)):
                return None
    else:
        kind = "nothing (only encoder, head, task and data.* may name one)"
    return f"{place}._target_={target!r}: allowed here is {kind}"


def target_problems(cfg: DictConfig) -> list[str]:
    """Every ``_target_`` of ``cfg`` that is not allowed in its place, and every Hydra key."""
    problems: list[str] = []

    def walk(node: Any, key: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{key}[{i}]")
            return
        if not isinstance(node, dict):
            return
        if "_target_" in node and (problem := target_problem(key, node["_target_"])):
            problems.append(problem)
        for name in sorted(_HYDRA_KEYS & node.keys()):
            problems.append(f"{key}.{name}: Hydra instantiate keys other than _target_ are not allowed")
        for name, value in node.items():
            walk(value, f"{key}.{name}" if key else str(name))

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return problems


def _run_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights model.safetensors holds: all but those the encoder saves in encoder/."""
    own = model.encoder.saves_weights
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if not (own and k.startswith("encoder."))}


def save_run(directory: str | Path, model: nn.Module, cfg: DictConfig, key: str, labels: Sequence[str],
             metrics: dict | None = None) -> None:
    """Write a run directory: weights, resolved config, label map (under ``key``), encoder files
    and a model card (with ``metrics``, the dev scores, when given)."""
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
    OmegaConf.save(cfg, directory / CONFIG, resolve=True)
    (directory / LABELS).write_text(json.dumps({key: list(labels)}, ensure_ascii=False, indent=1), encoding="utf-8")
    write_model_card(directory, cfg, list(labels), metrics)


def load_weights(model: nn.Module, directory: Path) -> None:
    """Load a run directory's weights into ``model`` (built for it): model.safetensors, and the
    encoder's own files when it saves its weights there. Raises RuntimeError on any mismatch."""
    missing, unexpected = load_model(model, str(directory / WEIGHTS), strict=False)
    expected_missing = set(model.state_dict()) - set(_run_weights(model))
    if unexpected or set(missing) != expected_missing:
        raise RuntimeError(f"unexpected weights {sorted(unexpected)[:5]}, missing weights "
                           f"{sorted(set(missing) ^ expected_missing)[:5]}")
    if model.encoder.saves_weights:
        model.encoder.load_saved_weights(directory / ENCODER_DIR)


def read_run(directory: str | Path, key: str, trust_remote_code: bool = False) -> tuple[DictConfig, list[str]]:
    """Check a run directory is complete, safe to build and consistent; return its config and labels.

    ``trust_remote_code=True`` lets the encoder run Python files from ``encoder/``: pass it only
    for a directory you trust. The returned config's ``encoder.trust_remote_code`` is that argument.
    """
    directory = Path(directory)
    for name in (WEIGHTS, CONFIG, LABELS, ENCODER_DIR):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory} is not a complete nerkit run directory: {name} is missing")
    cfg = _read_config(directory / CONFIG)
    _check_remote_code(directory, cfg, trust_remote_code)
    try:
        labels = json.loads((directory / LABELS).read_text(encoding="utf-8"))[key]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{directory / LABELS}: not a nerkit label map ({err})") from None
    try:
        with safe_open(directory / WEIGHTS, "pt") as weights:
            trained = (weights.metadata() or {}).get(key)
    except SafetensorError as err:
        raise ValueError(f"{directory / WEIGHTS}: not a readable safetensors file, truncated or corrupt ({err})") from None
    if trained is not None and json.loads(trained) != labels:
        raise ValueError(f"{directory / LABELS} lists {key.replace('_', ' ')} {labels}, but {directory / WEIGHTS} "
                         f"was trained with {json.loads(trained)}; restore the original labels.json")
    return cfg, labels


def _read_config(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, ValueError) as err:  # yaml's errors are ValueErrors too
        raise ValueError(f"{path}: not a readable config ({err})") from None
    if not isinstance(cfg, DictConfig) or not isinstance(cfg.get("encoder"), DictConfig):
        raise ValueError(f"{path}: not a nerkit run config (no encoder section)")
    problems = target_problems(cfg)
    # Saved resolved, a run's config has no interpolations; one would read environment
    # variables or call resolvers when the config is used.
    container = OmegaConf.to_container(cfg, resolve=False)
    problems += [f"{key}={value!r}: interpolations are not allowed in a saved run"
                 for key, value in _leaves(container, "") if isinstance(value, str) and "${" in value]
    if problems:
        raise UnsafeRunError(f"{path} names code or values nerkit will not load; nothing was built:\n  "
                             + "\n  ".join(problems))
    return cfg


def _leaves(node: Any, key: str):
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _leaves(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{key}[{i}]")
    else:
        yield key, node


def _check_remote_code(directory: Path, cfg: DictConfig, trust_remote_code: bool) -> None:
    """Refuse a run whose encoder would run Python from encoder/ unless the caller trusts it."""
    if not trust_remote_code:
        hint = (f"loading it would run Python files from {directory / ENCODER_DIR}; if you trust this directory, "
                "pass trust_remote_code=True (command line: trust_remote_code=true)")
        if cfg.encoder.get("trust_remote_code"):
            raise UnsafeRunError(f"{directory / CONFIG} sets encoder.trust_remote_code=true: {hint}")
        for name in _CODE_MAPS:
            path = directory / ENCODER_DIR / name
            try:
                mapping = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            except ValueError as err:
                raise ValueError(f"{path}: invalid JSON ({err})") from None
            if isinstance(mapping, dict) and mapping.get("auto_map"):
                raise UnsafeRunError(f"{path} maps classes to custom code (auto_map): {hint}")
    if "trust_remote_code" in cfg.encoder:
        cfg.encoder.trust_remote_code = trust_remote_code


def write_text_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
