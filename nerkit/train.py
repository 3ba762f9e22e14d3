"""Training entry point: ``python -m nerkit.train [hydra overrides]``.

Reads the data named by ``data/``, builds encoder + head from ``encoder/`` and ``head/``,
trains with AdamW (the head in its own learning-rate group), evaluates on dev after every
epoch, keeps the best model in the run directory and returns the best dev F1 (so that Hydra
sweepers can optimise it). Checkpoints go to ``<run>/checkpoints`` every ``trainer.checkpoint_every``
steps and at every epoch end; ``resume=true`` (or a path) continues exactly where one left off.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from nerkit.checkpoint import Checkpointer, TrainerState, find_resume_checkpoint
from nerkit.config import register_resolvers
from nerkit.data.batching import collate, length_grouped_batches, window_dataset
from nerkit.data.readers import Document
from nerkit.distributed import Processes
from nerkit.evaluation import evaluate
from nerkit.model import NerModel
from nerkit.predict import Predictor

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def entity_types_of(train: list[Document], others: dict[str, list[Document]]) -> list[str]:
    types = sorted({span.label for doc in train for span in doc.spans})
    if not types:
        raise ValueError("the training data has no entities: nothing to learn")
    for split, docs in others.items():
        unseen = {span.label for doc in docs for span in doc.spans} - set(types)
        if unseen:
            log.warning("%s has entity types never seen in train (they count as missed): %s", split, sorted(unseen))
    return types


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def optimizer_step(loss: torch.Tensor, reported_loss: torch.Tensor, step: int, model: torch.nn.Module,
                   optimizer: torch.optim.Optimizer, scheduler, max_grad_norm: float) -> None:
    """One clipped AdamW + schedule step; a non-finite loss stops training with a clear error."""
    if not torch.isfinite(reported_loss):
        raise FloatingPointError(f"loss became {reported_loss.item()} at step {step}; lower the learning rate")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()


def train(cfg: DictConfig, output_dir: str | Path | None = None) -> float:
    """Train, evaluate and save a model as ``cfg`` says; returns the best dev F1."""
    output_dir = Path(output_dir or HydraConfig.get().runtime.output_dir)
    if cfg.task.name == "classify":
        from nerkit.classification import train_classifier  # lazy: it imports helpers from here

        return train_classifier(cfg, output_dir)
    seed_everything(cfg.seed)
    device = pick_device(cfg.trainer.device)
    processes, device = Processes.start(device)  # one of several under torchrun / accelerate launch

    splits = {name: instantiate(cfg.data[name]) for name in ("train", "dev", "test") if cfg.data.get(name)}
    train_docs = splits.pop("train")
    entity_types = entity_types_of(train_docs, splits)
    model = NerModel.from_config(cfg, entity_types, train_texts=[d.text for d in train_docs]).to(device)
    predictor = Predictor(model, cfg.max_length, cfg.stride, cfg.trainer.eval_batch_size, device, cfg.get("truncate", False))
    windows = window_dataset(train_docs, predictor.text_encoder, entity_types, model.head.supports_nested).to_list()
    lengths = [len(w["input_ids"]) for w in windows]
    log.info("%d training documents -> %d windows; entity types: %s", len(train_docs), len(windows), entity_types)

    steps_per_epoch = math.ceil(len(windows) / cfg.trainer.batch_size)
    total_steps = cfg.trainer.max_steps or steps_per_epoch * cfg.trainer.epochs
    optimizer = torch.optim.AdamW(model.param_groups(cfg.trainer.lr, cfg.trainer.weight_decay))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.trainer.warmup_ratio * total_steps), total_steps)
    pad_id = model.encoder.tokenizer.pad_token_id

    keep = cfg.trainer.keep_checkpoints
    checkpoints = Checkpointer(output_dir / "checkpoints", model, cfg, optimizer, scheduler, keep)
    state = TrainerState()
    if resume_from := find_resume_checkpoint(cfg.get("resume"), checkpoints.root):
        # Last: it also restores the RNG states. Every process loads it; only rank 0 writes files.
        state = checkpoints.restore(resume_from, output_dir if processes.is_main else None)
        log.info("resumed from %s: epoch %d, batch %d, step %d", resume_from, state.epoch, state.batch, state.step)

    started = time.perf_counter()
    net = processes.wrap(model, device)
    progress = tqdm(total=total_steps, initial=state.step, desc="train", unit="step", dynamic_ncols=True,
                    disable=not processes.is_main)
    for epoch in range(state.epoch, math.ceil(total_steps / steps_per_epoch)):
        model.train()
        # The order depends only on (seed, epoch), so a resumed epoch skips exactly the batches done.
        batches = length_grouped_batches(lengths, cfg.trainer.batch_size, cfg.seed + epoch)
        batches = batches[: total_steps - epoch * steps_per_epoch]
        for i in range(state.batch, len(batches)):
            rows, counts = processes.share(batches[i])  # all rows of the global batch in one process
            batch = collate([windows[j] for j in rows], pad_id)
            tensors = [batch[k].to(device) for k in ("input_ids", "attention_mask", "word_index", "word_mask")]
            scores = net(*tensors)
            loss = model.head.loss(scores, tensors[3], batch["spans"])
            loss, global_loss = processes.global_loss(loss, model.head.loss_size(tensors[3]) if counts else 0)
            optimizer_step(loss, global_loss, state.step, model, optimizer, scheduler, cfg.trainer.max_grad_norm)
            state.step, state.epoch, state.batch = state.step + 1, epoch, i + 1
            progress.update()
            progress.set_postfix(epoch=epoch, loss=f"{global_loss.item():.4f}")
            if (cfg.trainer.checkpoint_every and state.step % cfg.trainer.checkpoint_every == 0 and i + 1 < len(batches)
                    and processes.is_main):
                checkpoints.save(state)
        state.epoch, state.batch = epoch + 1, 0
        if not processes.is_main:
            continue
        metrics = evaluate(predictor, splits["dev"]) if "dev" in splits else {"f1": float("nan")}
        state.history.append({"epoch": epoch, "step": state.step, "dev": metrics})
        log.info("epoch %d: dev P %.4f R %.4f F1 %.4f", epoch, metrics.get("precision", 0), metrics.get("recall", 0), metrics["f1"])
        if "dev" not in splits or metrics["f1"] > state.best_f1:
            state.best_f1, state.best_step = metrics["f1"], state.step
            model.save(output_dir, cfg, {"epoch": epoch, "step": state.step, "dev": metrics} if "dev" in splits else None)
        checkpoints.save(state)
    progress.close()
    processes.close()
    if not processes.is_main:
        return float("nan")  # rank 0 evaluated: it has the dev F1 and writes the results

    results = {"best_dev_f1": state.best_f1, "history": state.history, "train_seconds": time.perf_counter() - started,
               "parameters": sum(p.numel() for p in model.parameters()), "train_windows": len(windows),
               "resumed_from": str(resume_from) if resume_from else None}
    if "test" in splits:
        best = Predictor.from_run(output_dir, str(device), cfg.trainer.eval_batch_size)
        results["test"] = evaluate(best, splits["test"])
        log.info("test F1 %.4f", results["test"]["f1"])
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=1))
    return state.best_f1


register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    return train(cfg)


if __name__ == "__main__":
    main()
