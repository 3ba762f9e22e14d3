"""Every results table (bench/results/<name>.md) is what its benchmark's ``table`` builds from
<name>.json: no figure in a table that its results file does not hold, and no hand edits."""
from __future__ import annotations

import json
import shutil

from bench.common import RESULTS
from bench.readme_figures import main, stale_tables


def test_every_results_table_is_rebuilt_from_its_json():
    stale = stale_tables(RESULTS)
    assert stale == {}, "results tables that their json does not reproduce (python -m bench.readme_figures --tables):\n" + \
        "\n".join(stale.values())


def test_a_hand_edited_table_and_a_table_without_json_are_caught(tmp_path):
    shutil.copy(RESULTS / "train_step.json", tmp_path)
    shutil.copy(RESULTS / "train_step.md", tmp_path)
    assert stale_tables(tmp_path) == {}
    md = tmp_path / "train_step.md"
    md.write_text(md.read_text().replace("| fp32 |", "| fp32 (edited) |", 1))
    (tmp_path / "orphan.md").write_text("| a |\n|---|\n| 1 |\n")
    stale = stale_tables(tmp_path)
    assert set(stale) == {"train_step", "orphan"}
    assert "-| fp32 (edited) |" in stale["train_step"]
    assert "no orphan.json" in stale["orphan"]


def test_tables_option_rewrites_a_stale_table_from_its_json(tmp_path):
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    shutil.copy(RESULTS / "train_step.json", results_dir)
    (results_dir / "train_step.md").write_text("hand-written\n")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- figures:train_step -->\n<!-- /figures -->\n")
    assert main(["--tables", "--readme", str(readme), "--results", str(results_dir)]) == 0
    assert stale_tables(results_dir) == {}
    results = json.loads((results_dir / "train_step.json").read_text())
    assert f"| {next(iter(results['variants']))} |" in readme.read_text()
