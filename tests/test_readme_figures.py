"""README figure blocks are regenerated from the results files, and --check catches stale ones."""
from __future__ import annotations

import json

import pytest

from bench.common import RESULTS
from bench.readme_figures import main

README = "# Title\n\nintro\n\n<!-- figures:speed -->\nold table\n<!-- /figures -->\n\ntext after\n"


def test_check_fails_on_a_stale_block_and_passes_after_regenerating(tmp_path, capsys):
    (tmp_path / "speed.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    readme = tmp_path / "README.md"
    readme.write_text(README)
    args = ["--readme", str(readme), "--results", str(tmp_path)]
    assert main([*args, "--check"]) == 1
    assert "+| 1 | 2 |" in capsys.readouterr().out
    assert readme.read_text() == README  # --check never writes
    assert main(args) == 0
    assert readme.read_text() == README.replace("old table", "| a | b |\n|---|---|\n| 1 | 2 |")
    assert main([*args, "--check"]) == 0


def test_every_readme_given_is_checked_and_regenerated(tmp_path):
    (tmp_path / "speed.md").write_text("fresh table\n")
    fresh, stale = tmp_path / "README.md", tmp_path / "bench_README.md"
    fresh.write_text(README.replace("old table", "fresh table"))
    stale.write_text(README)
    args = ["--readme", str(fresh), "--readme", str(stale), "--results", str(tmp_path)]
    assert main([*args, "--check"]) == 1  # the second one is stale
    assert main(args) == 0
    assert stale.read_text() == fresh.read_text()
    assert main([*args, "--check"]) == 0


def test_conll2003_full_block_is_built_from_its_json(tmp_path):
    results = {"commit": "abc1234", "dirty": False, "started": "2026-11-26 19:00:00 UTC", "train_sentences": 14041,
               "scored_on": "CoNLL dataset tokens", "recipe": {"epochs": 3, "encoder_lr": 5e-5, "batch_size": 16,
               "warmup_ratio": 0.1, "max_length": 128, "precision": "fp32", "seed": 42, "model_selection": "best dev",
               "head_lr": "conf", "bilstm": "BiLSTM"},
               "rows": [{"key": "baseline", "system": "HF", "head": "softmax", "dev_f1": 0.9, "test_f1": 0.85,
                         "test_ci95": [0.84, 0.86], "train_s": 10},
                        {"key": "softmax", "system": "nerkit", "head": "softmax", "dev_f1": 0.9, "test_f1": 0.849,
                         "test_ci95": [0.84, 0.86], "train_s": 10}]}
    (tmp_path / "conll2003_full.json").write_text(json.dumps(results))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- figures:conll2003_full -->\n<!-- /figures -->\n")
    assert main(["--readme", str(readme), "--results", str(tmp_path)]) == 0
    text = readme.read_text()
    assert "| nerkit | softmax | 90.00 | 84.90 | 84.00-86.00 | 10 | abc1234 2026-11-26 19:00 |" in text
    # One seed orders nothing: the difference is reported, no goal is declared met.
    assert ("softmax within 0.3 F1 of the HF baseline: -0.10 test F1 points on one seed (goal margin -0.3); "
            "no ordering is claimed from one seed") in text
    assert " met" not in text


def test_missing_results_file_is_named(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- figures:nothing_here -->\n<!-- /figures -->\n")
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        main(["--readme", str(readme), "--results", str(tmp_path)])


def test_the_real_readme_figures_are_up_to_date():
    assert main(["--results", str(RESULTS), "--check"]) == 0  # README.md, bench/README.md, docs/*.md
