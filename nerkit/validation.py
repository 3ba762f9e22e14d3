"""Checks on a training config and its data, before any data is read or any model is built.

``validate_config`` checks the whole config at once and raises one ``ConfigError`` listing
every problem, each naming its key and the allowed values; ``validate_splits`` checks the
documents read, before a model is built for them. A value that would be ignored or would
crash only after training (``max_steps=0``, an empty dev set) is an error up front.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from nerkit.data.batching import BATCH_ORDERS
from nerkit.data.readers import Document
from nerkit.encoders.bert import locate_pretrained, position_limit
from nerkit.runs import target_problem, target_problems

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
BERT = "nerkit.encoders.bert.BertEncoder"


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

    check("max_length", lambda v: _is_int(v) and v >= 3, "an integer >= 3 (special tokens + at least one token)")
    max_length = cfg.get("max_length")
    if _is_int(max_length):
        check("stride", lambda v: _is_int(v) and 0 <= v < max_length,
              f"an integer in [0, max_length={max_length}) (the overlap of consecutive windows, in tokens)")

    problems += [f"{problem} (a run directory naming it would not load)" for problem in target_problems(cfg)]
    if not target_problem("encoder", cfg.encoder.get("_target_")) and _is_int(max_length):
        problems += _encoder_problems(cfg)
    if cfg.get("data") is None or cfg.data.get("train") is None:
        problems.append("data.train is missing: training needs a train split")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


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


def validate_splits(splits: dict[str, list[Document]]) -> None:
    """Every configured split read at least one document (an empty dev set crashes only after training)."""
    empty = [name for name, docs in splits.items() if not docs]
    if empty:
        raise ConfigError("; ".join(f"data.{name} gave no documents: check its file, or set data.{name}=null"
                                    + (" (train cannot be null)" if name == "train" else "") for name in empty))
