"""The training loop, the same for every task (``nerkit.tasks``): it knows batches, losses and
one primary dev metric, never what they mean.

Per optimizer step: ``trainer.batch_size * trainer.accumulate`` examples, cut into
``accumulate`` micro-batches whose losses are weighted by their share of the step's loss terms
(and over data-parallel processes the same way), each run under the precision's autocast; then
clip, step (through a GradScaler for fp16), schedule (linear warm-up and decay, counted in
optimizer steps). The dev set is scored every ``eval_every`` steps (null: at every epoch end)
and at the last step; the best model goes to the run directory; ``patience`` evaluations
without improvement stop training. Checkpoints (``nerkit.checkpoint``) follow every evaluation
and every ``checkpoint_every`` steps, and resume exactly. The run directory gets
``metrics.jsonl`` (a line per ``log_every`` steps and per evaluation), ``tb/`` (TensorBoard) and
``metrics.json`` (rewritten after every evaluation; ``finished`` says whether the run ended).
One training at a time holds the run directory (``nerkit.run_lock``). SIGTERM or SIGINT (and a
cluster's preemption signal, such as submitit's SIGUSR2) stop training after the current step
with a checkpoint, and raise ``TrainingStopped`` saying how to resume.
"""
from __future__ import annotations

import json
import logging
import math
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from nerkit.checkpoint import Checkpointer, TrainerState, find_resume_checkpoint
from nerkit.data.batching import BATCH_ORDERS
from nerkit.distributed import Processes
from nerkit.optim import adamw
from nerkit.precision import autocast, check_precision
from nerkit.run_lock import claim_run_directory
from nerkit.runs import write_text_atomically
from nerkit.tasks.base import Task

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TrainingStopped(RuntimeError):
    """Training stopped on a signal after a step, with a checkpoint to resume from."""


class StopRequests:
    """While training, SIGTERM and SIGINT (and the preemption signal of a cluster launcher that
    handles one, e.g. submitit's SIGUSR2) ask it to stop after the current step, so that a
    checkpoint holds all the work done: a SLURM preemption sends SIGTERM before it kills."""

    def __init__(self):
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may handle signals
        # A preemption signal only when a launcher handles it (submitit requeues the job there).
        preemption = [sig for sig in (signal.SIGUSR1, signal.SIGUSR2) if callable(signal.getsignal(sig))]
        for sig in (signal.SIGTERM, signal.SIGINT, *preemption):
            self.previous[sig] = signal.signal(sig, self._record)
        return self

    def _record(self, signum: int, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once, without a checkpoint
        self.received = signum
        log.warning("%s received: stopping after the current step, with a checkpoint", signal.Signals(signum).name)

    def pass_on(self) -> None:
        """Hand a preemption signal, once the checkpoint is written, to the launcher's own handler
        (submitit's resubmits the job and exits)."""
        handler = self.previous.get(self.received)
        if self.received not in (signal.SIGTERM, signal.SIGINT) and callable(handler):
            handler(self.received, None)

    def restore(self) -> None:
        """Give the signals back to their previous handlers (after the last step: the final test
        evaluation stops at a signal as any program does)."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def __exit__(self, *exc) -> None:
        self.restore()


class Engine:
    def __init__(self, trainer: DictConfig, seed: int, output_dir: Path):
        """Seed, pick the device and join the data-parallel processes, before the task builds its model."""
        self.trainer, self.seed, self.output_dir = trainer, seed, Path(output_dir)
        if trainer.accumulate < 1:
            raise ValueError(f"trainer.accumulate={trainer.accumulate}: need at least 1 micro-batch per step")
        seed_everything(seed)
        device = pick_device(trainer.device)
        self.precision = check_precision(trainer.precision, device)
        self.processes, self.device = Processes.start(device)

    def fit(self, task: Task, cfg: DictConfig) -> float:
        """Train ``task.model``; returns the best dev value of ``task.metric`` (NaN on ranks other than 0)."""
        # Before the first step: a directory that cannot be written or that another training holds.
        lock = claim_run_directory(self.output_dir) if self.processes.is_main else None
        try:
            with StopRequests() as stop_requests:
                return self._fit(task, cfg, stop_requests)
        finally:
            if lock:
                lock.release()

    def _fit(self, task: Task, cfg: DictConfig, stop_requests: StopRequests) -> float:
        t, processes, model = self.trainer, self.processes, task.model
        lengths = task.lengths()
        steps_per_epoch = math.ceil(len(lengths) / (t.batch_size * t.accumulate))
        total_steps = t.max_steps or steps_per_epoch * t.epochs
        # Fused: torch's default CPU AdamW updates one tensor at a time, half of a bf16 step (nerkit.optim).
        optimizer = adamw(task.param_groups(t.lr, t.weight_decay), lr=t.lr, fused=t.get("fused_optimizer", True))
        scheduler = get_linear_schedule_with_warmup(optimizer, int(t.warmup_ratio * total_steps), total_steps)
        scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        checkpoints = Checkpointer(self.output_dir / "checkpoints", task, optimizer, scheduler, t.keep_checkpoints, scaler)
        state = TrainerState()
        if resume_from := find_resume_checkpoint(cfg.get("resume"), checkpoints.root):
            # Last: it also restores the RNG states. Every process loads it; only rank 0 writes files.
            state = checkpoints.restore(resume_from, self.output_dir if processes.is_main else None)
            log.info("resumed from %s: epoch %d, batch %d, step %d", resume_from, state.epoch, state.batch, state.step)
        runlog = RunLog(self.output_dir, t, resumed_at=state.step if resume_from else None) if processes.is_main else None
        results = {"metric": task.metric, "precision": self.precision, "resumed_from": str(resume_from) if resume_from else None,
                   **task.summary()}

        net = processes.wrap(model, self.device)
        progress = tqdm(total=total_steps, initial=state.step, desc="train", unit="step", dynamic_ncols=True,
                        disable=not processes.is_main)
        started, elapsed_before = time.perf_counter(), state.elapsed
        stop = False
        saved: tuple[int, Path | None] = (-1, None)  # the step of the latest checkpoint written, and its path
        for epoch in range(state.epoch, math.ceil(total_steps / steps_per_epoch)):
            model.train()
            # The order depends only on (seed, epoch), so a resumed epoch skips exactly the batches done.
            # A config from before batch_order (a run being resumed) was trained length-grouped.
            batches = BATCH_ORDERS[t.get("batch_order", "length")](lengths, t.batch_size * t.accumulate, self.seed + epoch)
            batches = batches[: total_steps - epoch * steps_per_epoch]
            for i in range(state.batch, len(batches)):
                step_started = time.perf_counter()
                loss, tokens = self.step(task, net, batches[i], optimizer, scheduler, scaler, state.step)
                epoch_done = i + 1 == len(batches)
                state.step += 1
                state.epoch, state.batch = (epoch + 1, 0) if epoch_done else (epoch, i + 1)
                state.elapsed = elapsed_before + time.perf_counter() - started
                progress.update()
                progress.set_postfix(epoch=epoch, loss=f"{loss:.4f}")
                if runlog:
                    runlog.train_step(state, epoch, loss, tokens, time.perf_counter() - step_started, optimizer)

                last = state.step == total_steps
                if last and runlog:
                    runlog.flush()
                if last or (t.eval_every and state.step % t.eval_every == 0) or (not t.eval_every and epoch_done):
                    if processes.is_main:
                        self.evaluate(task, state, epoch, runlog, results)
                    if t.patience is not None:
                        stop = processes.rank_0_says(state.bad_evaluations >= t.patience, self.device)
                    if processes.is_main:
                        saved = (state.step, checkpoints.save(state))
                elif t.checkpoint_every and state.step % t.checkpoint_every == 0 and processes.is_main:
                    saved = (state.step, checkpoints.save(state))
                if processes.rank_0_says(stop_requests.received is not None, self.device):
                    checkpoint = saved[1] if saved[0] == state.step else None
                    self.stop_on_signal(stop_requests, checkpoints, checkpoint, state, runlog, results, progress)
                if stop:
                    if runlog:
                        runlog.flush()
                    log.info("no dev %s improvement in %d evaluations: stopping at step %d", task.metric, t.patience,
                             state.step)
                    break
            if stop:
                break
        stop_requests.restore()
        progress.close()
        processes.close()
        if not processes.is_main:
            return float("nan")  # rank 0 evaluated: it has the dev metric and writes the results

        results["stopped_early"] = stop
        best = task.load(self.output_dir)
        with autocast(self.device, self.precision):
            if task.has_split("test"):
                results["test"] = task.evaluate(best, "test")
                log.info("test %s %.4f", task.metric, results["test"][task.metric])
            results.update(task.report(best, self.output_dir))
        runlog.finish(state, results, finished=True)
        return state.best_metric

    def stop_on_signal(self, stop_requests: StopRequests, checkpoints: Checkpointer, saved: Path | None,
                       state: TrainerState, runlog: "RunLog | None", results: dict, progress) -> None:
        """Checkpoint the steps done (rank 0; ``saved``: already written at this step), record them
        as unfinished, and stop with how to resume."""
        if self.processes.is_main:
            saved = saved or checkpoints.save(state)
            runlog.flush()
            runlog.finish(state, results, finished=False)
        progress.close()
        self.processes.close()
        name = signal.Signals(stop_requests.received).name if stop_requests.received else "a signal on rank 0"
        if not self.processes.is_main:
            resume = "rank 0 wrote the checkpoint"
        elif saved:
            resume = f"checkpoint {saved}; resume with the same command plus resume=true (hydra.run.dir={self.output_dir})"
        else:
            resume = "no checkpoint (trainer.keep_checkpoints=0): the run cannot be resumed"
        message = f"training stopped by {name} after step {state.step}: {resume}"
        log.error(message)
        stop_requests.pass_on()
        raise TrainingStopped(message)

    def step(self, task: Task, net: torch.nn.Module, step_rows: list[int], optimizer: torch.optim.Optimizer,
             scheduler, scaler: torch.amp.GradScaler | None, step: int) -> tuple[float, float]:
        """One optimizer step over a global batch; returns its mean loss and real tokens (all processes)."""
        processes, model = self.processes, task.model
        rows, counts = processes.share(step_rows)  # this process's rows of the global batch
        size = math.ceil(len(rows) / self.trainer.accumulate)
        micro = [task.batch(rows[k : k + size]) for k in range(0, len(rows), size)]
        units = [float(b.units) if counts else 0.0 for b in micro]
        all_units = processes.total(torch.tensor([sum(units)], dtype=torch.float64, device=self.device)).item()
        optimizer.zero_grad(set_to_none=True)
        loss_sum, tokens = 0.0, 0
        for k, batch in enumerate(micro):
            with processes.no_sync(net, sync=k == len(micro) - 1):
                with autocast(self.device, self.precision):
                    loss = task.loss(net, batch)
                # Weighted by its share of the step's loss terms; DDP divides the summed gradients by world_size.
                scaled = loss * (units[k] * processes.world_size / all_units)
                (scaler.scale(scaled) if scaler else scaled).backward()
            loss_sum += loss.item() * units[k]
            tokens += batch.tokens if counts else 0
        loss_sum, tokens = processes.total(torch.tensor([loss_sum, tokens], dtype=torch.float64, device=self.device)).tolist()
        mean_loss = loss_sum / all_units
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"loss became {mean_loss} at step {step}; lower the learning rate "
                                     f"(trainer.lr) or use trainer.precision=fp32")
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.trainer.max_grad_norm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        return mean_loss, tokens

    def evaluate(self, task: Task, state: TrainerState, epoch: int, runlog: "RunLog", results: dict) -> None:
        """Score dev, keep the model if it is the best so far, record the result (rank 0 only)."""
        model = task.model
        if task.has_split("dev"):
            with autocast(self.device, self.precision):
                metrics = task.evaluate(model, "dev")
        else:
            metrics = {task.metric: float("nan")}
        model.train()
        value = metrics[task.metric]
        state.history.append({"epoch": epoch, "step": state.step, "dev": metrics})
        log.info("step %d (epoch %d): dev %s %.4f", state.step, epoch, task.metric, value)
        if not task.has_split("dev") or value > state.best_metric:
            state.best_metric, state.best_step, state.bad_evaluations = value, state.step, 0
            task.save(self.output_dir, {"epoch": epoch, "step": state.step, "dev": metrics} if task.has_split("dev") else None)
        else:
            state.bad_evaluations += 1
        runlog.evaluation(state, epoch, metrics)
        runlog.finish(state, results, finished=False)


class RunLog:
    """``metrics.jsonl`` (train and eval records), TensorBoard events and ``metrics.json``."""

    def __init__(self, output_dir: Path, trainer: DictConfig, resumed_at: int | None):
        self.output_dir, self.log_every = output_dir, trainer.log_every
        output_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = output_dir / "metrics.jsonl"
        if resumed_at is not None and self.jsonl.exists():
            # Records past the checkpoint belong to the crashed attempt; the resumed run writes them again.
            kept = [line for line in self.jsonl.read_text().splitlines(keepends=True)
                    if json.loads(line)["step"] <= resumed_at]
            write_text_atomically(self.jsonl, "".join(kept))
        elif resumed_at is None:
            self.jsonl.unlink(missing_ok=True)
        self.tensorboard = _summary_writer(output_dir / "tb", trainer.tensorboard, resumed_at)
        self.loss_sum = self.tokens = self.seconds = 0.0
        self.steps = 0

    def write(self, record: dict[str, Any]) -> None:
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def train_step(self, state: TrainerState, epoch: int, loss: float, tokens: float, seconds: float,
                   optimizer: torch.optim.Optimizer) -> None:
        """Count one step; every ``log_every`` steps, record their mean loss and throughput."""
        self.loss_sum, self.tokens, self.seconds, self.steps = (self.loss_sum + loss, self.tokens + tokens,
                                                                self.seconds + seconds, self.steps + 1)
        self.last = (state.step, epoch, state.elapsed, optimizer)
        if state.step % self.log_every == 0:
            self.flush()

    def flush(self) -> None:
        """Record the steps counted since the last record (at the end: a partial ``log_every``)."""
        if not self.steps:
            return
        step, epoch, elapsed, optimizer = self.last
        lrs = {group.get("name", str(i)): group["lr"] for i, group in enumerate(optimizer.param_groups)}
        record = {"type": "train", "step": step, "epoch": epoch, "loss": self.loss_sum / self.steps, "lr": lrs,
                  "tokens": int(self.tokens), "tokens_per_s": self.tokens / self.seconds, "elapsed": elapsed}
        self.write(record)
        if self.tensorboard:
            self.tensorboard.add_scalar("train/loss", record["loss"], step)
            self.tensorboard.add_scalar("train/tokens_per_s", record["tokens_per_s"], step)
            for name, lr in lrs.items():
                self.tensorboard.add_scalar(f"lr/{name}", lr, step)
        self.loss_sum = self.tokens = self.seconds = 0.0
        self.steps = 0

    def evaluation(self, state: TrainerState, epoch: int, metrics: dict) -> None:
        self.write({"type": "eval", "step": state.step, "epoch": epoch, "elapsed": state.elapsed, "dev": metrics})
        if self.tensorboard:
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(f"dev/{name}", value, state.step)
            self.tensorboard.flush()

    def finish(self, state: TrainerState, results: dict, finished: bool) -> None:
        """Rewrite metrics.json: how far the run got, and whether it finished."""
        summary = {f"best_dev_{results['metric']}": state.best_metric, "best_step": state.best_step,
                   "steps": state.step, "train_seconds": state.elapsed, "history": state.history, **results,
                   "finished": finished}
        write_text_atomically(self.output_dir / "metrics.json", json.dumps(summary, indent=1))
        if finished and self.tensorboard:
            self.tensorboard.close()


def _summary_writer(directory: Path, setting: str | bool, resumed_at: int | None):
    """A TensorBoard writer if ``trainer.tensorboard`` (auto | true | false) asks for one."""
    if setting is False or setting == "false":
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if setting == "auto":
            return None
        raise ImportError("trainer.tensorboard=true needs the tensorboard package: pip install 'nerkit[tensorboard]'") from None
    if setting not in (True, "true", "auto"):
        raise ValueError(f"trainer.tensorboard must be auto, true or false, got {setting!r}")
    return SummaryWriter(str(directory), purge_step=resumed_at + 1 if resumed_at is not None else None)
