"""The statistics of bench/heads.py on constructed inputs: the paired bootstrap over sentences,
the t-interval over seeds, the verdict, and the merge of row files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.heads import merge, micro_f1, paired_bootstrap, t_interval, table, verdict


def counts(pattern: list[tuple[int, int, int]], seeds: int = 1) -> np.ndarray:
    return np.array([pattern] * seeds)


def test_micro_f1_sums_the_counts_first():
    assert micro_f1(np.array([[1, 1, 2], [1, 3, 0]])) == pytest.approx(2 * 2 / (4 + 2))
    assert micro_f1(np.array([[0, 0, 0]])) == 0.0  # nothing predicted, nothing to find


def test_identical_systems_differ_by_exactly_zero():
    a = counts([(1, 2, 2), (0, 1, 1), (3, 3, 4)] * 20, seeds=3)
    assert paired_bootstrap(a, a.copy()) == [0.0, 0.0]


def test_a_system_better_on_every_sentence_has_an_interval_above_zero_and_the_swap_mirrors_it():
    better = counts([(2, 2, 2), (1, 1, 2)] * 30, seeds=2)
    worse = counts([(1, 2, 2), (0, 1, 2)] * 30, seeds=2)
    lo, hi = paired_bootstrap(better, worse, seed=3)
    assert 0 < lo <= hi
    assert lo <= float(micro_f1(better[0]) - micro_f1(worse[0])) <= hi
    assert paired_bootstrap(worse, better, seed=3) == pytest.approx([-hi, -lo])


def test_pairing_cancels_what_both_systems_share():
    """Sentence difficulty varies a lot, the gap between the systems is constant: the paired
    interval is far narrower than the spread of either system's own F1 under resampling."""
    rng = np.random.default_rng(0)
    gold = rng.integers(1, 10, size=200)
    found = (gold * rng.uniform(0.2, 1.0, size=200)).astype(int)
    a = np.stack([found + 1, found + 1, gold], axis=1).clip(max=gold[:, None])[None]
    a[0, :, 1] = gold
    b = a.copy()
    b[0, :, 0] = np.maximum(a[0, :, 0] - 1, 0)
    lo, hi = paired_bootstrap(a, b)
    own = np.quantile([micro_f1(a[0][rng.integers(0, 200, 200)]) for _ in range(300)], [0.025, 0.975])
    assert lo > 0
    assert hi - lo < (own[1] - own[0]) / 2


def test_shapes_must_pair():
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(np.zeros((2, 5, 3)), np.zeros((1, 5, 3)))


def test_t_interval_by_hand():
    lo, hi = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.3027
    assert (lo, hi) == pytest.approx((2 - 4.302653 / 3 ** 0.5, 2 + 4.302653 / 3 ** 0.5), abs=1e-5)
    assert t_interval([0.5]) is None  # one seed: no spread, no interval


@pytest.mark.parametrize("intervals, expected", [
    ([[0.1, 0.3], [0.05, 0.2]], "crf > softmax"),
    ([[-0.3, -0.1], [-0.2, -0.01]], "softmax > crf"),
    ([[0.1, 0.3], [-0.1, 0.2]], "no detectable difference"),
    ([[0.1, 0.3], None], "too few seeds to tell"),
])
def test_an_ordering_needs_every_interval_on_one_side_of_zero(intervals, expected):
    assert verdict("crf", "softmax", intervals) == expected


def row_file(directory, row, seed, f1_counts, key="k1"):
    path = directory / "resume_ner" / f"{row}_seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    f1 = float(micro_f1(np.array(f1_counts)))
    path.write_text(json.dumps({
        "data": "resume_ner", "row": row, "seed": seed, "split": "test", "documents": len(f1_counts),
        "documents_key": key, "scored_on": "dataset tokens", "overrides": [row], "limits": [], "f1": f1,
        "counts": f1_counts, "train_s": 1,
        "stamp": {"commit": "abc", "dirty": False, "torch_threads": 1}}))


def test_merge_pairs_rows_by_seed_and_reports_what_is_missing(tmp_path):
    good, bad = [[2, 2, 2], [1, 1, 1]] * 10, [[1, 2, 2], [1, 1, 1]] * 10
    for seed, (x, y) in {42: (good, bad), 43: (good, bad)}.items():
        row_file(tmp_path, "bilstm_crf", seed, x)
        row_file(tmp_path, "bilstm_softmax", seed, y)
    results = json.loads(json.dumps(merge(tmp_path, [42, 43, 44])))
    data = results["datasets"]["resume_ner"]
    pair = next(p for p in data["pairs"] if (p["a"], p["b"]) == ("bilstm_crf", "bilstm_softmax"))
    assert pair["seeds"] == [42, 43]
    assert pair["t_ci95"] == pytest.approx([pair["mean_difference"]] * 2)  # identical seeds: no spread
    assert pair["verdict"] == "bilstm_crf > bilstm_softmax"
    assert "bilstm_crf seed 44" in data["missing"] and "bilstm_global_pointer seed 42" in data["missing"]
    assert "conll2003" in results["not_run"]
    text = table(results)
    assert "| bilstm_crf - bilstm_softmax | 42,43 |" in text and "bilstm_crf > bilstm_softmax" in text


def test_rows_that_scored_other_sentences_are_not_paired(tmp_path):
    row_file(tmp_path, "bilstm_crf", 42, [[1, 1, 1]], key="k1")
    row_file(tmp_path, "bilstm_softmax", 42, [[1, 1, 1]], key="k2")
    with pytest.raises(ValueError, match="different sentences"):
        merge(tmp_path, [42])
