"""Data-parallel training: 2 CPU processes (torchrun, gloo) train the same model as one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import get_linear_schedule_with_warmup

from nerkit.checkpoint import Checkpointer, TrainerState
from tests.helpers import TOY_SENTENCES, tiny_ner_task, write_conll

ROOT = Path(__file__).resolve().parents[1]

# Runs `python -m nerkit.train`, recording which training rows each process collates, so that
# the test sees that the processes split every global batch instead of each taking all of it.
RECORD_ROWS = """
import json, os, runpy
import nerkit.data.batching as batching
real_collate = batching.collate
def collate(rows, pad_id):
    with open(os.path.join(os.environ["ROWS_DIR"], "rank" + os.environ.get("RANK", "0")), "a") as f:
        f.write(json.dumps([r["input_ids"] for r in rows]) + "\\n")
    return real_collate(rows, pad_id)
batching.collate = collate
runpy.run_module("nerkit.train", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("head", ["softmax", "global_pointer"])  # losses averaged over words / over rows
def test_two_processes_train_the_same_model_as_one_on_the_same_global_batch(bert_without_dropout, tmp_path, head):
    # 13 windows in global batches of 3: 2 rows go to rank 0 and 1 to rank 1 (so the losses must be
    # weighted), and the last batch of each epoch has 1 row, leaving rank 1 without any.
    data = write_conll(tmp_path / "toy.conll", TOY_SENTENCES * 3 + TOY_SENTENCES[:1])
    one, two = tmp_path / "one", tmp_path / "two"
    args = [f"encoder.pretrained={bert_without_dropout}", f"head={head}", "head.dropout=0", f"data.train.path={data}",
            f"data.dev.path={data}", "trainer.epochs=2", "trainer.batch_size=3", "trainer.lr=1e-3",
            "trainer.checkpoint_every=3", "trainer.device=cpu"]
    script = tmp_path / "record_rows.py"
    script.write_text(RECORD_ROWS)
    for run in (one, two):
        (run / "rows").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    jobs = [subprocess.Popen(command + args + [f"hydra.run.dir={run}"], env={**env, "ROWS_DIR": str(run / "rows")},
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for command, run in [([sys.executable, str(script)], one), (torchrun + [str(script)], two)]]
    for job in jobs:
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, err

    # Each global batch was split between the processes: rank 0 took rows 0 and 2, rank 1 row 1;
    # for the 1-row batches rank 1 ran rank 0's row with zero weight.
    batches = [json.loads(line) for line in (one / "rows" / "rank0").read_text().splitlines()]
    rank0, rank1 = ([json.loads(line) for line in (two / "rows" / f"rank{r}").read_text().splitlines()] for r in (0, 1))
    assert sorted(len(b) for b in batches) == [1, 1] + [3] * 8  # 2 epochs of 5 batches
    assert rank0 == [b[0::2] for b in batches]
    assert rank1 == [b[1::2] or b[:1] for b in batches]

    want, got = (json.loads((run / "metrics.json").read_text()) for run in (one, two))
    assert got["history"] == want["history"] and got["best_dev_f1"] == want["best_dev_f1"]
    # Only float rounding differs (per-process padding, the order of the gradient sums): ~2e-7 after
    # 10 AdamW steps. A wrongly weighted or lost row moves weights by about the learning rate, 1e-3.
    for name in ("model.safetensors", "checkpoints/step-00000009/model.safetensors"):
        a, b = load_file(one / name), load_file(two / name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=f"{name}: {key}")
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == sorted(p.name for p in (one / "checkpoints").iterdir())


@pytest.mark.slow
def test_classification_trains_the_same_model_on_two_processes_as_on_one(bert_without_dropout, tmp_path):
    rows = [{"text": ("good news " if i % 2 else "bad news ") * (2 + i), "label": "pos" if i % 2 else "neg"}
            for i in range(7)]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["-m", "nerkit.train", "task=classify", "data=classify_jsonl", f"data.root={tmp_path}", "task.dropout=0",
            f"encoder.pretrained={bert_without_dropout}", "max_length=16", "stride=4", "trainer.epochs=2",
            "trainer.batch_size=3", "trainer.lr=1e-3", "trainer.device=cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    jobs = [subprocess.Popen(command + args + [f"hydra.run.dir={run}"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
            for command, run in [([sys.executable], one), (torchrun, two)]]
    for job in jobs:
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, err
    want, got = (json.loads((run / "metrics.json").read_text()) for run in (one, two))
    assert got["history"] == want["history"] and got["steps"] == want["steps"] == 6
    final = "checkpoints/step-00000006/model.safetensors"
    a, b = load_file(one / final), load_file(two / final)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)


def test_on_resume_the_other_processes_load_the_checkpoint_without_writing_the_run_directory(tiny_bert_dir, tmp_path):
    def checkpointer(seed: int) -> Checkpointer:
        torch.manual_seed(seed)
        task = tiny_ner_task(tiny_bert_dir, tmp_path / "data")
        optimizer = torch.optim.AdamW(task.param_groups(1e-3, 0.01))
        scheduler = get_linear_schedule_with_warmup(optimizer, 1, 10)
        return Checkpointer(run / "checkpoints", task, optimizer, scheduler, keep=2)

    run = tmp_path / "run"
    saved = checkpointer(0).save(TrainerState(epoch=1, step=4, best_metric=0.5, best_step=4))
    rank1 = checkpointer(1)  # other head weights than rank 0's
    assert rank1.restore(saved, None) == TrainerState(epoch=1, step=4, best_metric=0.5, best_step=4)
    assert not (run / "model.safetensors").exists()  # rank 0 exports the best model, nobody else
    # The head's weights are in model.safetensors, the encoder's in encoder/ (transformers' names).
    weights = {**load_file(saved / "model.safetensors"),
               **{f"encoder.model.{k}": v for k, v in load_file(saved / "encoder" / "model.safetensors").items()}}
    assert weights.keys() == rank1.task.model.state_dict().keys()
    for key, value in weights.items():
        assert torch.equal(rank1.task.model.state_dict()[key], value), key
