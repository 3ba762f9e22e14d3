"""Helpers the tests import (``from tests.helpers import ...``); fixtures live in conftest.py."""
from __future__ import annotations

import contextlib
import importlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from nerkit.model import NerModel

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")
SHARED_DATA = ROOT.parent / "shared" / "data"
# Every head config: a new conf/head/*.yaml is tested without editing the tests.
HEAD_NAMES = sorted(p.stem for p in (ROOT / "conf" / "head").glob("*.yaml"))


def make_cfg(overrides: list[str] | None = None) -> DictConfig:
    """Compose conf/train.yaml with overrides, as `python -m nerkit.train` would."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides or [])


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in sentences) + "\n")
    return path


TOY_SENTENCES = [
    [("John", "B-PER"), ("Smith", "I-PER"), ("lives", "O"), ("in", "O"), ("Berlin", "B-LOC"), (".", "O")],
    [("Maria", "B-PER"), ("works", "O"), ("for", "O"), ("Siemens", "B-ORG"), ("in", "O"), ("Paris", "B-LOC")],
    [("Siemens", "B-ORG"), ("hired", "O"), ("John", "B-PER"), ("Smith", "I-PER"), ("yesterday", "O")],
    [("Paris", "B-LOC"), ("and", "O"), ("Berlin", "B-LOC"), ("are", "O"), ("cities", "O")],
]


def change_weights(run_dir: Path) -> None:
    """Nudge one weight of a run directory's model.safetensors, keeping its metadata (the label map):
    what an artifact made from the old weights must notice."""
    weights = run_dir / "model.safetensors"
    with safe_open(weights, "numpy") as f:
        metadata = f.metadata()
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + tensors[name].dtype.type(1e-3)
    save_file(tensors, weights, metadata=metadata)


def save_tiny_run(tiny_bert_dir: Path, directory: Path, head: str = "softmax", overrides: list[str] | None = None,
                  entity_types: tuple[str, ...] = ("LOC", "ORG", "PER")) -> Path:
    """A run directory holding an untrained tiny-BERT model (short windows, so long texts span several)."""
    cfg = make_cfg([f"head={head}", f"encoder.pretrained={tiny_bert_dir}", "max_length=16", "stride=4", *(overrides or [])])
    torch.manual_seed(0)
    NerModel.from_config(cfg, list(entity_types)).save(directory, cfg)
    return directory


def tiny_ner_task(tiny_bert_dir: Path, directory: Path, overrides: list[str] | None = None):
    """A NerTask over TOY_SENTENCES (entity types LOC, ORG, PER) with the tiny BERT, on CPU."""
    from nerkit.tasks.ner import NerTask

    directory.mkdir(parents=True, exist_ok=True)
    data = write_conll(directory / "toy.conll", TOY_SENTENCES)
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}", f"data.train.path={data}", f"data.dev.path={data}",
                    *(overrides or [])])
    return NerTask(cfg, torch.device("cpu"))


def shared_data(relative: str) -> Path:
    """A path under ../shared/data (the real datasets, which CI has); fails naming it when missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.fail(f"{path} is missing: this test needs the shared datasets (see ../shared/data/README.md)")
    return path


@contextlib.contextmanager
def serving(app, **options):
    """Serve ``app`` on a free port of 127.0.0.1 in a background thread (``options``: uvicorn.Config's); yield its URL."""
    import uvicorn  # the serve extra

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def multirun(tmp: Path, *overrides: str, timeout: int = 400) -> tuple[subprocess.CompletedProcess, Path]:
    """``python -m nerkit.train -m`` on the toy data for 2 steps, its sweep directory under ``tmp``."""
    data = write_conll(tmp / "toy.conll", TOY_SENTENCES)
    sweep_dir = tmp / "multirun"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "nerkit.train", "-m", f"data.train.path={data}", f"data.dev.path={data}",
               "trainer.max_steps=2", f"hydra.sweep.dir={sweep_dir}", *overrides]
    done = subprocess.run(command, check=False, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
    return done, sweep_dir


def require(module: str, install: str):
    """Import a module a test needs. Its absence fails the test with how to install it: a skipped
    test would look green while testing nothing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"{module} is not installed: {install}")


# Runs `python -m nerkit.train`, sending itself the signal named by $STEP_SIGNAL (SIGKILL: a hard
# crash; SIGTERM: a graceful stop) when the engine starts its $SIGNAL_AT_STEP-th optimizer step: a
# signal in the middle of an epoch, at a chosen point, without racing a timer.
SIGNAL_AT_STEP = """
import os, runpy, signal
from nerkit.engine import Engine
calls, real_step = 0, Engine.step
def step(*args, **kwargs):
    global calls
    calls += 1
    if calls == int(os.environ["SIGNAL_AT_STEP"]):
        os.kill(os.getpid(), getattr(signal, os.environ["STEP_SIGNAL"]))
    return real_step(*args, **kwargs)
Engine.step = step
runpy.run_module("nerkit.train", run_name="__main__", alter_sys=True)
"""
