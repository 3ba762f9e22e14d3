"""What int8 quantization (``nerkit.quantize`` for ONNX, ``nerkit.quantize_torch`` for PyTorch)
calibrates on and how it chooses: a run's own text, cut into windows as prediction cuts them,
held-out text to check the entities on, and the bisection that picks how many layers go int8."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from nerkit.data import readers
from nerkit.data.encoding import TextEncoder
from nerkit.data.windowing import WindowTable, budget_batches
from nerkit.inference import Inference
from nerkit.model import NerModel, torch_scores

log = logging.getLogger(__name__)

Batch = tuple[np.ndarray, ...]
# NER readers a run's training data may be read with, by name: a run directory never names code to run.
CALIBRATION_READERS = {"nerkit.data.readers.read_conll": readers.read_conll,
                       "nerkit.data.readers.read_json_spans": readers.read_json_spans,
                       "nerkit.data.readers.read_doccano": readers.read_doccano}


def run_texts(cfg: DictConfig, split: str, path: str | Path | None = None) -> list[str]:
    """The texts of ``path`` (default: the run's ``split`` data, "train" or "dev"), read as the run
    read that split; [] when the run has no such split and no path is given."""
    spec = cfg.data.get(split)
    if spec is None:
        if path is None:
            return []
        spec = cfg.data.train
    reader = CALIBRATION_READERS.get(spec.get("_target_"))
    if reader is None:
        raise ValueError(f"int8 calibration reads the run's {split} data format; {spec.get('_target_')!r} "
                         f"is not one of {sorted(CALIBRATION_READERS)}")
    kwargs = {k: v for k, v in spec.items() if k not in ("_target_", "path", "limit")}
    return [doc.text for doc in reader(path or spec.path, **kwargs)]


def fp32_inference(model: NerModel, max_length: int, stride: int, words: str, truncate: bool = False,
                   batch_size: int = 64) -> Inference:
    """``model`` predicting in fp32 on CPU, its texts cut into windows as the run cuts them."""
    return Inference(TextEncoder(model.encoder.tokenizer, max_length, stride, truncate, words),
                     torch_scores(model, torch.device("cpu"), "fp32"), model.head.decoder, batch_size)


def calibration_batches(model: NerModel, texts: Sequence[str], max_windows: int, max_length: int, stride: int,
                        words: str, batch_size: int = 32) -> list[Batch]:
    """Padded graph inputs for the first ``max_windows`` windows of ``texts``, cut and batched
    as prediction cuts and batches them."""
    predictor = fp32_inference(model, max_length, stride, words, batch_size=batch_size)
    encodings = predictor.text_encoder.encode(list(texts))
    table = WindowTable.of([enc.windows for enc in encodings])
    n = min(max_windows, len(table.doc))
    if n == 0:
        raise ValueError("the calibration data holds no text to quantize with")
    specials = len(predictor.text_encoder.prefix_ids) + len(predictor.text_encoder.suffix_ids)
    lengths = (table.token_end - table.token_start + specials)[:n].tolist()
    return [predictor.window_batch(encodings, table, rows)
            for rows in budget_batches(lengths, batch_size, predictor.max_batch_tokens, predictor.batch_cost_tokens)]


def most_quantized(count: int, agrees: Callable[[int], bool]) -> int:
    """The largest ``n`` <= ``count`` with ``agrees(n)`` (the ``n`` least sensitive layers int8 keep
    the entities), by bisection: agreement falls, near enough, as layers are added in the
    sensitivity order; ``agrees(0)`` (nothing int8) holds by definition."""
    if agrees(count):
        return count
    lo, hi = 0, count
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if agrees(mid) else (lo, mid)
    return lo


def int8_layer_count(run_dir: Path, layers: Sequence[str], agreement_of: Callable[[int], float], target: float,
                     held_out: str, otherwise: str) -> tuple[int, dict[int, float]]:
    """How many of ``layers`` (least sensitive first) can be int8 and keep ``target`` of the fp32
    entities, ``agreement_of(n)`` measuring it on ``held_out`` (e.g. "1000 dev texts"), and the
    agreement of every count tried. A ValueError when not even one layer can, advising ``otherwise``."""
    agreement: dict[int, float] = {0: 1.0}

    def agrees(n: int) -> bool:
        agreement[n] = agreement_of(n)
        log.info("int8 with the %d least sensitive of %d layers: entity agreement with fp32 %.4f on %s",
                 n, len(layers), agreement[n], held_out)
        return agreement[n] >= target

    n = most_quantized(len(layers), agrees)
    if n == 0:
        raise ValueError(f"{run_dir}: no encoder layer can be int8 and keep {target} of the fp32 entities on "
                         f"{held_out} (one layer alone: {agreement[1]:.4f}); {otherwise}")
    return n, agreement


def held_out_texts(cfg: DictConfig, run_dir: Path, training_texts: Sequence[str], held_out: str | Path | None,
                   count: int) -> tuple[list[str], str]:
    """The first ``count`` texts the entity agreement is checked on, and where they come from:
    ``held_out``, else the run's dev data, else (with a warning) its training text."""
    texts = run_texts(cfg, "dev", held_out)[:count]
    if texts:
        return texts, str(held_out) if held_out else "dev"
    log.warning("int8: %s has no dev data and no held_out= was given: the entity agreement is checked on training "
                "text, which the model fits; expect less agreement on new text", run_dir)
    return list(training_texts[:count]), "train"
