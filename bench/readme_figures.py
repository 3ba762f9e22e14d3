"""Regenerate the READMEs' figure blocks from the benchmark results files.

    python -m bench.readme_figures          # rewrite the blocks in README.md, bench/README.md, docs/*.md
    python -m bench.readme_figures --check  # exit 1 (and show the difference) if one is stale

A block is ``<!-- figures:NAME -->`` ... ``<!-- /figures -->``; its body is rebuilt from
bench/results/NAME.json by the table function of the benchmark that wrote it, or, for a
benchmark without one, is bench/results/NAME.md (the table that benchmark wrote with its json).
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import json
import re
import sys
from pathlib import Path
from typing import Callable

from bench.common import RESULTS, ROOT

BLOCK = re.compile(r"(<!-- figures:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /figures -->)", re.DOTALL)


def _conll2003_full(results: dict, results_dir: Path) -> str:
    from bench.conll2003_full import table

    return table(results)


def _longtext(results: dict, results_dir: Path) -> str:
    """Whole CoNLL-2003 test documents, one set of trained weights read every way (bench/longtext.py)."""
    from bench.longtext import documents_table

    return documents_table(results)


def _quality(results: dict, results_dir: Path) -> str:
    """bench/quality.py's table under its run's stamp."""
    m = results["machine"]
    return (f"Measured {m['date']}, commit {m['commit']}{' (dirty)' if m.get('dirty') else ''}.\n\n"
            + (results_dir / "quality.md").read_text(encoding="utf-8").strip())


# (results, results_dir) -> block body
TABLES: dict[str, Callable[[dict, Path], str]] = {"conll2003_full": _conll2003_full, "longtext": _longtext, "quality": _quality}


# results name -> the bench module that writes it, where the names differ
WRITERS = {"quality_1000": "quality", "conll2003_seeds": "seeds", "speed_cuda": "speed", "serve_cuda": "serve",
           "int8_avx512": "int8", "int8_avx512_target099": "int8"}


def results_table(name: str, results: dict | list) -> str:
    """bench/results/<name>.md as the benchmark that wrote <name>.json builds it (its ``table``)."""
    return importlib.import_module(f"bench.{WRITERS.get(name, name)}").table(results)


def stale_tables(results_dir: Path) -> dict[str, str]:
    """name -> a diff, for every <name>.md that its <name>.json does not reproduce."""
    stale = {}
    for md in sorted(results_dir.glob("*.md")):
        source = md.with_suffix(".json")
        if not source.exists():
            stale[md.stem] = f"{md} has no {source.name}: a table must come from a results file"
            continue
        fresh = results_table(md.stem, json.loads(source.read_text(encoding="utf-8"))) + "\n"
        current = md.read_text(encoding="utf-8")
        if fresh != current:
            stale[md.stem] = "".join(difflib.unified_diff(current.splitlines(True), fresh.splitlines(True), str(md),
                                                          f"table({source.name})"))
    return stale


def figure(name: str, results_dir: Path) -> str:
    """The body of block ``name``, from the results files."""
    if name in TABLES and (results_dir / f"{name}.json").exists():
        return TABLES[name](json.loads((results_dir / f"{name}.json").read_text(encoding="utf-8")), results_dir)
    table = results_dir / f"{name}.md"
    if not table.exists():
        raise FileNotFoundError(f"README block 'figures:{name}' has no results file {results_dir / name}.json or .md")
    return table.read_text(encoding="utf-8").strip()


def regenerate(readme: str, results_dir: Path) -> str:
    return BLOCK.sub(lambda m: f"{m.group(1)}{figure(m.group('name'), results_dir)}\n{m.group(4)}", readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if a README differs")
    parser.add_argument("--readme", type=Path, action="append",
                        help="a file to regenerate (repeatable; default: README.md, bench/README.md, docs/*.md)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--tables", action="store_true",
                        help="rewrite every results <name>.md from its <name>.json (its benchmark's table) first")
    args = parser.parse_args(argv)
    if args.tables:
        for name in stale_tables(args.results):
            if (args.results / f"{name}.json").exists():
                text = results_table(name, json.loads((args.results / f"{name}.json").read_text(encoding="utf-8")))
                (args.results / f"{name}.md").write_text(text + "\n", encoding="utf-8")
                print(f"rewrote {args.results / name}.md from its json")
    stale = False
    for readme in args.readme or [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        current = readme.read_text(encoding="utf-8")
        fresh = regenerate(current, args.results)
        if fresh == current:
            continue
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), fresh.splitlines(True),
                                                       str(readme), "regenerated"))
            print(f"\n{readme}: figure blocks are stale; run python -m bench.readme_figures", file=sys.stderr)
            stale = True
            continue
        readme.write_text(fresh, encoding="utf-8")
        print(f"updated {readme}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
