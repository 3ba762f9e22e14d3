"""bench/speed.py's predict comparison is fair by construction: every system is credited with the
same text tokens, the pipeline runs at the attention kernel and batch size its timings favour, on sorted texts whose
entities come back in the caller's order, and bf16 is timed only where the hardware has it."""
from __future__ import annotations

import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

from bench.common import text_tokens, window_lengths
from bench.speed import (PIPELINE_ATTENTION, PIPELINE_BATCH_SIZES, PipelineSystem, fastest_setting, sweep_settings,
                         timed_precisions)
from nerkit.precision import cpu_has_bf16
from nerkit.predict import Predictor
from tests.helpers import save_tiny_run

SHORT = "John Smith lives in Berlin ."
LONG = " ".join(["Maria works for Siemens in Paris and visits Berlin every summer ."] * 4)


def test_text_tokens_count_each_text_once_without_special_tokens_padding_or_window_overlap(tiny_bert_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    counts = text_tokens(tokenizer, [SHORT, LONG])
    assert counts == [len(tokenizer.tokenize(SHORT)), len(tokenizer.tokenize(LONG))]
    assert counts[0] == len(tokenizer(SHORT)["input_ids"]) - 2  # [CLS] and [SEP] not counted
    assert counts == text_tokens(tokenizer, [SHORT]) + text_tokens(tokenizer, [LONG])  # a batch pads nothing in
    # The tiny run cuts the long text into overlapping 16-token windows: the model sees more
    # tokens than the text has, but every text token is in some window.
    predictor = Predictor.from_run(save_tiny_run(tiny_bert_dir, tmp_path / "run"), "cpu")
    encoding = predictor.text_encoder.encode([LONG])[0]
    assert len(encoding.windows) > 2
    covered = set().union(*(range(w.token_start, w.token_end) for w in encoding.windows))
    assert covered == set(range(counts[1]))
    assert sum(w.token_end - w.token_start for w in encoding.windows) > counts[1]  # overlap
    # bench/'s older unit, window tokens with [CLS]/[SEP]: overlap and special tokens counted too
    assert sum(window_lengths(predictor.text_encoder, [LONG])) > counts[1] + 2 * len(encoding.windows)


def test_the_fastest_setting_has_the_lowest_median_not_the_luckiest_timing():
    seconds = {"sdpa 1": [3.0, 3.1, 2.9], "sdpa 8": [1.0, 1.05, 10.0], "sdpa 16": [1.1, 1.2, 1.1],
               "eager 32": [0.5, 9.0, 9.0]}
    assert fastest_setting(seconds) == "sdpa 8"  # min would pick eager 32, the mean sdpa 16
    assert fastest_setting({"sdpa 8": [1.0, 2.0, 3.0], "eager 8": [2.0, 2.0, 0.1]}) == "sdpa 8"  # a tie: the earlier timed


class CountingSystem:
    """Stands in for a pipeline: records the attention kernel and batch size of every call."""

    def __init__(self):
        self.attention, self.batch_size, self.calls = "sdpa", 1, []

    def __call__(self, texts):
        self.calls.append(f"{self.attention} {self.batch_size}")
        return [set() for _ in texts]


def test_every_kernel_and_batch_size_is_warmed_then_timed_repeatedly_and_the_fastest_kept():
    system = CountingSystem()
    seconds = sweep_settings(system, ["a text"], repeats=3)
    settings = [f"{a} {b}" for a in PIPELINE_ATTENTION for b in PIPELINE_BATCH_SIZES]
    assert list(seconds) == settings
    assert all(len(times) == 3 for times in seconds.values())
    assert system.calls == [setting for setting in settings for _ in range(4)]  # one untimed pass + 3 timed
    assert f"{system.attention} {system.batch_size}" == fastest_setting(seconds)


def test_the_sorted_pipeline_returns_each_texts_entities_in_the_callers_order(tiny_bert_dir):
    torch.manual_seed(0)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    twin = AutoModelForTokenClassification.from_pretrained(
        tiny_bert_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = [LONG, SHORT, "Paris .", LONG[:40], SHORT + " " + SHORT]
    system = PipelineSystem(twin, tokenizer, "cpu", batch_size=4)
    one_by_one = [{(e["start"], e["end"], e["entity_group"]) for e in system.pipe(text)} for text in texts]
    assert sum(map(len, one_by_one)) > 0  # random weights still tag something
    assert system(texts) == one_by_one
    # the plain attention kernel: the model's own switch, the same entities
    assert system.attention == "sdpa"
    system.attention = "eager"
    assert system.pipe.model.config._attn_implementation == "eager"
    assert system(texts) == one_by_one


def test_bf16_is_timed_only_where_the_cpu_has_bf16_units():
    run, skipped = timed_precisions("cpu")
    if cpu_has_bf16():
        assert (run, skipped) == (["fp32", "bf16"], {})
    else:
        assert run == ["fp32"]
        assert "emulate" in skipped["bf16"]
