"""bench/sentence_vector.py's merge on constructed row files: vectors paired by seed and article,
the verdict, the default the result supports, and rows that cannot be paired refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.heads import micro_f1
from bench.sentence_vector import merge, outcome_counts, table

RECIPE = ["task=classify", "data=hyperpartisan", "trainer.precision=fp32"]
STAMP = {"commit": "abc1234", "dirty": False, "torch_threads": 1}


def write_row(directory, vector: str, seed: int, correct: list[int], overrides=RECIPE, key="k1") -> None:
    row = {"vector": vector, "seed": seed, "stamp": STAMP, "overrides": overrides, "documents": len(correct),
           "documents_key": key, "dev_accuracy": 0.5, "test_accuracy": sum(correct) / len(correct),
           "test_ci95": [0, 1], "wall_s": 1, "correct": correct}
    (directory / f"{vector}_seed{seed}.json").write_text(json.dumps(row))


def outcomes(rng: np.random.Generator, accuracy: float, n: int = 400) -> list[int]:
    return [int(x) for x in rng.random(n) < accuracy]


def test_an_article_outcome_as_counts_gives_accuracy_as_micro_f1():
    correct = [1, 0, 1, 1]
    assert micro_f1(np.array(outcome_counts(correct))) == pytest.approx(0.75)


def test_a_vector_right_wherever_the_others_are_and_more_is_ordered_first_and_becomes_the_supported_default(tmp_path):
    rng = np.random.default_rng(0)
    for seed in (42, 43, 44):
        base = outcomes(rng, 0.7)
        write_row(tmp_path, "cls", seed, base)
        write_row(tmp_path, "first_token", seed, [c if i % 7 else 1 - c for i, c in enumerate(base)])
        write_row(tmp_path, "mean", seed, [1 if i % 3 == 0 else c for i, c in enumerate(base)])  # fixes a third of them
    results = json.loads(json.dumps(merge(tmp_path, [42, 43, 44], "cls")))
    verdicts = {(p["a"], p["b"]): p["verdict"] for p in results["pairs"]}
    assert verdicts[("mean", "cls")] == "mean > cls"
    assert verdicts[("mean", "first_token")] == "mean > first_token"
    assert results["missing"] == []
    assert results["supported_default"] == "mean"
    pair = next(p for p in results["pairs"] if (p["a"], p["b"]) == ("mean", "cls"))
    assert pair["seeds"] == [42, 43, 44]
    assert pair["bootstrap_ci95"][0] <= pair["mean_difference"] <= pair["bootstrap_ci95"][1]
    text = table(results)
    assert "| mean - cls | 42,43,44 |" in text and "the result supports `mean`." in text


def test_too_few_seeds_or_a_tie_keep_the_configured_default(tmp_path):
    rng = np.random.default_rng(1)
    base = outcomes(rng, 0.7)
    for vector in ("cls", "first_token", "mean"):
        write_row(tmp_path, vector, 42, base)
    one_seed = merge(tmp_path, [42], "cls")
    assert {p["verdict"] for p in one_seed["pairs"]} == {"too few seeds to tell"}
    assert one_seed["supported_default"] == "cls"
    for vector in ("cls", "first_token", "mean"):
        write_row(tmp_path, vector, 43, base)
    tie = merge(tmp_path, [42, 43], "first_token")
    assert {p["verdict"] for p in tie["pairs"]} == {"no detectable difference"}
    assert tie["supported_default"] == "first_token"


def test_a_missing_row_is_named_and_no_default_is_claimed_before_every_row_ran(tmp_path):
    rng = np.random.default_rng(2)
    for seed in (42, 43, 44):
        base = outcomes(rng, 0.6)
        write_row(tmp_path, "cls", seed, base)
        write_row(tmp_path, "mean", seed, [1] * len(base))
    results = merge(tmp_path, [42, 43, 44], "cls")
    assert results["missing"] == ["first_token seed 42", "first_token seed 43", "first_token seed 44"]
    assert results["supported_default"] == "cls"
    assert "(until every vector x seed has run)" in table(json.loads(json.dumps(results)))


@pytest.mark.parametrize("change", [{"overrides": [*RECIPE, "trainer.epochs=3"]}, {"key": "k2"}])
def test_rows_with_another_budget_or_other_test_articles_are_not_paired(tmp_path, change):
    write_row(tmp_path, "cls", 42, [1, 0, 1])
    write_row(tmp_path, "mean", 42, [1, 1, 1], **change)
    with pytest.raises(ValueError, match="cannot be paired"):
        merge(tmp_path, [42], "cls")
