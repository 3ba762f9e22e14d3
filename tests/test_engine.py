"""The training engine, on both tasks: accumulation, precision, evaluation schedule, early
stopping, the run log (metrics.jsonl, TensorBoard, metrics.json) and clear failures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from safetensors.torch import load_file

from nerkit.data.batching import BATCH_ORDERS, random_batches
from nerkit.tasks.classify import ClassifyTask
from nerkit.tasks.ner import NerTask
from nerkit.train import train
from nerkit.validation import ConfigError
from tests.helpers import TOY_SENTENCES, make_cfg, write_conll


def ner_cfg(encoder: Path, data: Path, *overrides: str):
    lr = [] if any(o.startswith("trainer.lr=") for o in overrides) else ["trainer.lr=1e-3"]
    return make_cfg([f"encoder.pretrained={encoder}", f"data.train.path={data}", f"data.dev.path={data}",
                     "trainer.device=cpu", "head.dropout=0", *lr, *overrides])


def classify_cfg(encoder: Path, data: Path, *overrides: str):
    cfg = make_cfg(["task=classify", f"encoder.pretrained={encoder}", "max_length=16", "stride=4", "trainer.device=cpu",
                    "trainer.lr=1e-3", "task.dropout=0", *overrides])
    reader = {"_target_": "nerkit.data.readers.read_jsonl_labels", "path": str(data)}
    with open_dict(cfg):
        cfg.data = {"train": reader, "dev": reader, "test": None}
    return cfg


@pytest.fixture
def toy_jsonl(tmp_path) -> Path:
    """16 labelled documents of 1 to 4 windows at max_length=16."""
    rows = [{"text": ("good news " if i % 2 else "bad news ") * (2 + i), "label": "pos" if i % 2 else "neg"}
            for i in range(16)]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def toy_conll_16(tmp_path) -> Path:
    return write_conll(tmp_path / "toy16.conll", TOY_SENTENCES * 4)  # 16 windows


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ner", "classify"])
def test_accumulating_4_micro_batches_of_4_equals_one_batch_of_16(bert_without_dropout, toy_conll_16, toy_jsonl,
                                                                   tmp_path, task):
    build = (lambda *o: ner_cfg(bert_without_dropout, toy_conll_16, *o)) if task == "ner" else (
        lambda *o: classify_cfg(bert_without_dropout, toy_jsonl, *o))
    common = ["trainer.epochs=2", "trainer.warmup_ratio=0.5"]
    train(build("trainer.batch_size=16", *common), tmp_path / "whole")
    train(build("trainer.batch_size=4", "trainer.accumulate=4", *common), tmp_path / "accumulated")
    whole, accumulated = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("whole", "accumulated"))
    assert whole["steps"] == accumulated["steps"] == 2  # the schedule counts optimizer steps, not micro-batches
    lrs = [[r["lr"] for r in records(tmp_path / run) if r["type"] == "train"] for run in ("whole", "accumulated")]
    assert lrs[0] == lrs[1]
    final = "checkpoints/step-00000002"  # the last weights (the best may be from step 1)
    # The head in model.safetensors, the fine-tuned encoder as a transformers folder in encoder/.
    a, b = ({**load_file(tmp_path / run / final / "model.safetensors"),
             **load_file(tmp_path / run / final / "encoder" / "model.safetensors")} for run in ("whole", "accumulated"))
    before = load_file(bert_without_dropout / "model.safetensors")
    moved = max((a[k] - before[k]).abs().max().item() for k in a if k in before)
    assert moved > 1e-4  # training changed the encoder, so the comparison below means something
    assert a.keys() == b.keys() and len(a) > len(before) // 2
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=2e-6, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ner", "classify"])
def test_bf16_training_runs_under_autocast_on_cpu(tiny_bert_dir, toy_conll, toy_jsonl, tmp_path, monkeypatch, task):
    seen = []
    task_class = NerTask if task == "ner" else ClassifyTask
    real_loss = task_class.loss

    def spy(self, model, batch):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return real_loss(self, model, batch)

    monkeypatch.setattr(task_class, "loss", spy)
    cfg = (ner_cfg(tiny_bert_dir, toy_conll, "trainer.precision=bf16", "trainer.epochs=2", "trainer.batch_size=2")
           if task == "ner" else
           classify_cfg(tiny_bert_dir, toy_jsonl, "trainer.precision=bf16", "trainer.epochs=2", "trainer.batch_size=4"))
    best = train(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert seen and set(seen) == {torch.bfloat16}
    assert metrics["precision"] == "bf16" and metrics["finished"] and 0 <= best <= 1
    losses = [r["loss"] for r in records(tmp_path / "run") if r["type"] == "train"]
    assert losses and all(map(torch.isfinite, torch.tensor(losses)))
    weights = load_file(tmp_path / "run" / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}  # mixed precision: the weights stay fp32


def test_fp16_on_cpu_is_refused_before_anything_is_built(tiny_bert_dir, toy_conll, tmp_path):
    with pytest.raises(ValueError, match="precision=fp16 needs a GPU"):
        train(ner_cfg(tiny_bert_dir, toy_conll, "trainer.precision=fp16"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_patience_stops_when_the_dev_metric_stops_improving(tiny_bert_dir, toy_conll, tmp_path):
    # lr=1e-30 (0 is refused): updates below float32 precision leave the weights as they are, so the
    # dev F1 of the first evaluation is never beaten and 2 more evaluations end the run.
    cfg = ner_cfg(tiny_bert_dir, toy_conll, "trainer.lr=1e-30", "head.lr=1e-30", "trainer.epochs=10", "trainer.batch_size=2",
                  "trainer.patience=2", "trainer.eval_every=1")
    train(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [1, 2, 3]  # of 20 steps
    assert metrics["stopped_early"] and metrics["best_step"] == 1 and metrics["steps"] == 3
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_eval_every_n_steps_and_at_the_last_step(tiny_bert_dir, toy_conll, tmp_path):
    # 4 windows in batches of 1 for 2 epochs: 8 steps, evaluated at 3, 6 and the last one, 8.
    cfg = ner_cfg(tiny_bert_dir, toy_conll, "trainer.epochs=2", "trainer.batch_size=1", "trainer.eval_every=3",
                  "trainer.log_every=2")
    best = train(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [3, 6, 8]
    assert best == max(h["dev"]["f1"] for h in metrics["history"]) and not metrics["stopped_early"]
    assert "step-00000008" in {p.name for p in (tmp_path / "run" / "checkpoints").iterdir()}  # after each evaluation


def test_metrics_jsonl_and_tensorboard_record_steps_and_evaluations(tiny_bert_dir, toy_conll, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = ner_cfg(tiny_bert_dir, toy_conll, "head=crf", "head.lr=3e-3", "trainer.lr=5e-5", "trainer.epochs=2", "trainer.batch_size=1",
                  "trainer.log_every=2")
    train(cfg, tmp_path / "run")
    lines = records(tmp_path / "run")
    steps = [r for r in lines if r["type"] == "train"]
    evals = [r for r in lines if r["type"] == "eval"]
    assert [r["step"] for r in steps] == [2, 4, 6, 8] and [r["step"] for r in evals] == [4, 8]
    for r in steps:
        assert set(r["lr"]) == {"encoder", "encoder_no_decay", "head", "crf"}  # per parameter group
        assert r["lr"]["crf"] == pytest.approx(60 * r["lr"]["encoder"])  # the CRF keeps its own learning rate (3e-3 vs 5e-5)
        assert r["loss"] > 0 and r["tokens_per_s"] > 0
    assert [r["elapsed"] for r in lines] == sorted(r["elapsed"] for r in lines)
    assert {"f1", "precision", "recall"} <= set(evals[0]["dev"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["finished"] and [h["dev"] for h in metrics["history"]] == [r["dev"] for r in evals]

    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/tokens_per_s", "lr/crf", "dev/f1"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8]


def test_tensorboard_false_writes_no_events(tiny_bert_dir, toy_conll, tmp_path):
    train(ner_cfg(tiny_bert_dir, toy_conll, "trainer.epochs=1", "trainer.tensorboard=false"), tmp_path / "run")
    assert (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "run" / "tb").exists()


def test_a_non_finite_loss_stops_training_with_a_clear_error(tiny_bert_dir, toy_conll, tmp_path, monkeypatch):
    real_loss = NerTask.loss
    monkeypatch.setattr(NerTask, "loss", lambda self, model, batch: real_loss(self, model, batch) * float("nan"))
    with pytest.raises(FloatingPointError, match="loss became nan at step 0"):
        train(ner_cfg(tiny_bert_dir, toy_conll, "trainer.epochs=1"), tmp_path / "run")
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_task_is_named_by_its_config(tiny_bert_dir, toy_conll, tmp_path):
    cfg = ner_cfg(tiny_bert_dir, toy_conll)
    cfg.task._target_ = "nerkit.model.NerModel"
    with pytest.raises(ConfigError, match=r"task._target_='nerkit.model.NerModel': allowed here is a subclass of nerkit.tasks.base.Task"):
        train(cfg, tmp_path / "run")


@pytest.mark.parametrize("switch", [True, False])
def test_training_writes_the_dev_error_report_of_the_best_model(tiny_bert_dir, toy_conll, tmp_path, switch):
    run = tmp_path / "run"
    train(ner_cfg(tiny_bert_dir, toy_conll, "trainer.max_steps=2", f"report_errors={switch}"), run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert ((run / "errors.html").exists(), (run / "errors.json").exists()) == (switch, switch)
    assert ("error_report" in metrics) == switch
    if switch:
        report = json.loads((run / "errors.json").read_text())
        assert report["documents"] == len(TOY_SENTENCES)  # the dev split, every document
        gold = sum(len([t for _, t in sentence if t.startswith("B-")]) for sentence in TOY_SENTENCES)
        assert report["scores"]["overall"]["gold"] == gold == 9


def test_random_batch_order_covers_every_example_once_and_pads_more():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 60, (203,), generator=generator).tolist()
    batches = random_batches(lengths, 8, seed=5)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert [len(b) for b in batches[:-1]] == [8] * (len(batches) - 1) and len(batches[-1]) == 203 % 8
    assert batches == random_batches(lengths, 8, seed=5) and batches != random_batches(lengths, 8, seed=6)

    def padded(order):
        return sum(len(b) * max(lengths[i] for i in b) for b in order)
    assert padded(batches) > 1.5 * padded(BATCH_ORDERS["length"](lengths, 8, seed=5))


def test_the_engine_draws_batches_in_the_configured_order(tiny_bert_dir, toy_conll, tmp_path, monkeypatch):
    seen = []
    for name, order in list(BATCH_ORDERS.items()):
        monkeypatch.setitem(BATCH_ORDERS, name, lambda *a, name=name, order=order: seen.append(name) or order(*a))
    train(ner_cfg(tiny_bert_dir, toy_conll, "trainer.max_steps=1", "trainer.batch_order=length"), tmp_path / "length")
    train(ner_cfg(tiny_bert_dir, toy_conll, "trainer.max_steps=1"), tmp_path / "default")
    assert seen == ["length", "random"]  # random is the default
