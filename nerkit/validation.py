"""Checks on a training config and its data, before any data is read or any model is built.

``validate_config`` checks the whole config at once and raises one ``ConfigError`` listing
every problem, each naming its key and the allowed values; ``validate_splits`` checks the
documents read, before a model is built for them. A value that would be ignored or would
crash only after training (``max_steps=0``, an empty dev set) is an error up front.
"""
from __future__ import annotations

import difflib
import logging
import math
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from hydra.utils import get_class

from nerkit.data.batching import BATCH_ORDERS
from nerkit.data.readers import Document
from nerkit.data.words import WORD_SPLITTERS
from nerkit.encoders.bert import locate_pretrained, position_limit
from nerkit.runs import target_problem, target_problems

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
# The config files: the keys they set are the keys a training config may have.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
BERT = "nerkit.encoders.bert.BertEncoder"
GIB = 2**30


_ABSENT = object()


class ConfigError(ValueError):
    """A config value outside its allowed range; the message lists every such key."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _keys(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf under ``node``."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _keys(value, f"{prefix}.{name}")
    else:
        yield prefix, node


def validate_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` naming every key of ``cfg`` outside its allowed range."""
    problems: list[str] = []

    def check(key: str, ok, allowed: str, optional: bool = False, required: bool = True) -> None:
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            if required:
                problems.append(f"{key} is missing: it must be {allowed}")
            return
        value = OmegaConf.select(cfg, key)
        if (value is None and optional) or (value is not None and ok(value)):
            return
        problems.append(f"{key}={value!r}: must be {allowed}{' or null' if optional else ''}")

    positive_int = (lambda v: _is_int(v) and v >= 1, "an integer >= 1")

    # Every learning rate (`lr`, `*_lr`) of trainer and head (a head's null lr means the encoder's),
    # every dropout.
    for section in ("trainer", "head", "encoder", "task"):
        tree = OmegaConf.to_container(cfg[section], resolve=True) if cfg.get(section) is not None else {}
        for key, _ in _keys(tree, section):
            leaf = key.rsplit(".", 1)[-1]
            if section in ("trainer", "head") and (leaf == "lr" or leaf.endswith("_lr")):
                check(key, lambda v: _is_number(v) and v > 0, "a number > 0", optional=section == "head")
            elif leaf == "dropout":
                check(key, lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
    check("trainer.epochs", *positive_int)
    check("trainer.max_steps", *positive_int, optional=True)
    check("trainer.batch_size", *positive_int)
    check("trainer.eval_batch_size", *positive_int)
    check("trainer.warmup_ratio", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]")
    check("trainer.weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0")
    check("trainer.max_grad_norm", lambda v: _is_number(v) and v > 0, "a number > 0")
    check("trainer.checkpoint_every", *positive_int, optional=True, required=False)
    check("trainer.keep_checkpoints", lambda v: _is_int(v) and v >= 0, "an integer >= 0", required=False)
    # Keys of the training engine, checked when present.
    check("trainer.accumulate", *positive_int, required=False)
    check("trainer.patience", *positive_int, optional=True, required=False)
    check("trainer.eval_every", *positive_int, optional=True, required=False)
    check("trainer.log_every", *positive_int, required=False)
    check("trainer.fused_optimizer", lambda v: isinstance(v, bool), "true or false", required=False)
    check("trainer.precision", lambda v: v in PRECISIONS, f"one of {'|'.join(PRECISIONS)}", required=False)
    check("trainer.batch_order", lambda v: v in BATCH_ORDERS, f"one of {'|'.join(BATCH_ORDERS)}", required=False)
    check("seed", _is_int, "an integer")
    check("limits.max_entity_types", *positive_int)
    check("limits.head_memory_gb", lambda v: _is_number(v) and v > 0, "a number > 0 (GiB)")
    check("data.words", lambda v: v in WORD_SPLITTERS, f"one of {'|'.join(WORD_SPLITTERS)}", required=False)

    check("max_length", lambda v: _is_int(v) and v >= 3, "an integer >= 3 (special tokens + at least one token)")
    max_length = cfg.get("max_length")
    if _is_int(max_length):
        check("stride", lambda v: _is_int(v) and 0 <= v < max_length,
              f"an integer in [0, max_length={max_length}) (the overlap of consecutive windows, in tokens)")

    problems += [f"{problem} (a run directory naming it would not load)" for problem in target_problems(cfg)]
    if not target_problem("encoder", cfg.encoder.get("_target_")) and _is_int(max_length):
        problems += _encoder_problems(cfg)
    problems += unknown_keys(cfg)
    if cfg.get("data") is None or cfg.data.get("train") is None:
        problems.append("data.train is missing: training needs a train split")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def unknown_keys(cfg: DictConfig) -> list[str]:
    """Top-level, ``trainer.*`` and ``task.*`` keys that no file of conf/ sets: a key added with
    ``+`` (``+trainer.epoch=2``, a typo of epochs) would be read by nothing and saved as if it counted."""
    train_yaml = CONF_DIR / "train.yaml"
    if not train_yaml.is_file():
        log.info("%s not found: unknown config keys are not checked", train_yaml)
        return []
    # train.yaml and the groups that write at the top level (experiment=..., hparams_search=...).
    global_files = [train_yaml] + [f for f in sorted(CONF_DIR.glob("*/*.yaml"))
                                   if "# @package _global_" in f.read_text(encoding="utf-8").splitlines()]
    known: dict[str, set[str]] = {"": {p.name for p in CONF_DIR.iterdir() if p.is_dir()}, "trainer": set()}
    for path in global_files:
        node = OmegaConf.load(path)
        known[""] |= set(node) - {"defaults"}
        known["trainer"] |= set(node.get("trainer") or {})
    task_files = [OmegaConf.load(f) for f in sorted(CONF_DIR.glob("task/*.yaml"))]
    same_task = [set(node) for node in task_files if cfg.get("task") and node.get("_target_") == cfg.task.get("_target_")]
    if same_task:  # a task class without a conf/task file has no list of keys to check against
        known["task"] = set().union(*same_task)

    problems = []
    for section, keys in known.items():
        node = cfg if not section else cfg.get(section)
        if not isinstance(node, DictConfig):
            continue
        for key in sorted(set(node) - keys):
            name = f"{section}.{key}" if section else key
            close = difflib.get_close_matches(key, sorted(keys), n=1)
            hint = f" (did you mean {section + '.' if section else ''}{close[0]}?)" if close else ""
            problems.append(f"{name}: unknown key{hint}: no file of conf/ sets it, so nothing would read it")
    return problems


def _encoder_problems(cfg: DictConfig) -> list[str]:
    """encoder.pretrained (or a borrowed BiLSTM vocabulary) exists; max_length fits its positions."""
    encoder = cfg.encoder
    try:
        if encoder._target_ != BERT:
            if encoder.get("vocab", "data") != "data":
                locate_pretrained(encoder.vocab, "encoder.vocab")
            return []
        limit = position_limit(encoder.pretrained)
    except ValueError as err:
        return [str(err)]
    if limit is None:
        log.info("encoder.pretrained=%s is a hub model not in the local cache (offline): max_length is not "
                 "checked against its position limit", encoder.pretrained)
    elif cfg.max_length > limit:
        return [f"max_length={cfg.max_length}: must be <= {limit}, the most tokens {encoder.pretrained} "
                "takes (max_position_embeddings); longer texts are windowed anyway"]
    return []


def validate_splits(splits: dict[str, list[Document]], data: DictConfig | None = None) -> None:
    """Every configured split read at least one document (an empty dev set crashes only after
    training); ``data`` (the config's ``data``) names each split's files in the error."""
    problems = []
    for name, docs in splits.items():
        if docs:
            continue
        node = data.get(name) if data is not None else None
        tree = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else {}
        files = [str(value) for key, value in _keys(tree, "") if key.rsplit(".", 1)[-1] in _SOURCE_KEYS]
        source = f" ({', '.join(files)})" if files else ""
        # Training needs documents; only dev and test may be left out.
        fix = "check its file" if name == "train" else f"check its file, or set data.{name}=null"
        problems.append(f"data.{name}{source} gave no documents: {fix}")
    if problems:
        raise ConfigError("; ".join(problems))


# The keys of a reader's config that say where its documents come from.
_SOURCE_KEYS = ("path", "articles", "split")


def head_memory(head: DictConfig, n_types: int, rows: int, words: int) -> tuple[int, str]:
    """The head's own estimate of its score memory for one batch (``Head.score_memory``)."""
    return get_class(head._target_).score_memory(head, n_types, rows, words)


def check_entity_types(cfg: DictConfig, entity_types: list[str]) -> None:
    """Refuse, before the model is built, a number of entity types above ``limits.max_entity_types``
    or a head whose scores for one training batch would need more than ``limits.head_memory_gb``:
    a file with 10,000 types took minutes to build a CRF and then asked for 12.8 GB at step one."""
    n, limits = len(entity_types), cfg.limits
    shown = ", ".join(entity_types[:10]) + (f", ... ({n - 10} more)" if n > 10 else "")
    problems = []
    if n > limits.max_entity_types:
        problems.append(f"the training data has {n} entity types ({shown}), more than limits.max_entity_types="
                        f"{limits.max_entity_types}; check the label column, or raise the limit "
                        f"(limits.max_entity_types={n})")
    needed, what = head_memory(cfg.head, n, cfg.trainer.batch_size, cfg.max_length)
    if needed > limits.head_memory_gb * GIB:
        problems.append(f"head {cfg.head._target_.rsplit('.', 1)[-1]} would need about {needed / GIB:.1f} GiB for the "
                        f"scores of one training batch ({what}), more than limits.head_memory_gb="
                        f"{limits.head_memory_gb}; use fewer entity types, a smaller trainer.batch_size or max_length, "
                        f"another head, or raise the limit (limits.head_memory_gb={math.ceil(needed / GIB)})")
    if problems:
        raise ConfigError("; ".join(problems))


def eval_batch_tokens(cfg: DictConfig, n_types: int) -> int:
    """The most padded tokens an evaluation batch may hold so that the head's scores stay within
    ``limits.head_memory_gb`` (GlobalPointer's grow with types x words^2: 10,000 types ran out of
    memory in the first dev evaluation)."""
    per_window, _ = head_memory(cfg.head, n_types, 1, cfg.max_length)
    return max(1, int(cfg.limits.head_memory_gb * GIB * cfg.max_length // per_window))
