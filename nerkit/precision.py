"""Numeric precision for training and prediction: ``fp32 | bf16 | fp16``, and for prediction on
CPU ``int8`` (a run's calibrated int8 encoder, ``nerkit.quantize_torch``).

Mixed precision runs the model under ``torch.autocast`` (matmuls in the low-precision type,
reductions and the loss in fp32); weights stay fp32. fp16 needs a gradient scaler in training
(the engine adds one) and a GPU; bf16 runs on GPUs with bf16 units and on CPUs with AVX-512
BF16 or AMX, where oneDNN uses them.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from typing import Literal

import torch

log = logging.getLogger(__name__)
Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
PREDICT_PRECISIONS: tuple[str, ...] = (*PRECISIONS, "int8")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device | str, allowed: tuple[str, ...] = PRECISIONS) -> str:
    """``precision`` if it is ``allowed`` and the device can run it; otherwise a ValueError naming what is possible."""
    device = torch.device(device)
    if precision == "auto":
        return default_precision(device)
    if precision not in allowed:
        raise ValueError(f"precision must be one of {allowed} or 'auto', got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise ValueError("precision=int8 runs on CPU (oneDNN's int8 kernels); on a GPU use bf16 or fp16")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision=fp16 needs a GPU (CPU autocast has no fp16 matmul kernels); use bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision=bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use fp16")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        warn_emulated_bf16()
    return precision


@functools.lru_cache(maxsize=None)
def warn_emulated_bf16() -> None:
    """Once per process: bf16 still works on such a CPU, but every matmul converts in software
    (a MiniLM training step measured 13x slower than fp32 on an AVX2-only EPYC)."""
    log.warning("precision=bf16 on a CPU without AVX-512 BF16 or AMX: oneDNN emulates it, many times slower "
                "than fp32; use precision=auto (bf16 only where the hardware has it) or fp32")


@functools.lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 matmul units (AVX-512 BF16 or AMX) that oneDNN uses."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False  # not Linux: no cheap way to ask; fp32 is the safe default
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_precision(device: torch.device | str) -> str:
    """The fastest precision that keeps predictions: bf16 where the hardware has bf16 units, else fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def int8_companion() -> str:
    """The precision of what runs beside int8 products: bf16 where the CPU has bf16 units, else fp32."""
    return "bf16" if cpu_has_bf16() else "fp32"


def dtype_of(precision: str) -> torch.dtype:
    """The torch dtype of a checked precision."""
    return _DTYPES.get(precision, torch.float32)


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "int8":
        precision = int8_companion()
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[precision])
