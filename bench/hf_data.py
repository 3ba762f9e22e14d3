"""Peak memory and time of reading CoNLL-2003 train through data=hf vs read_conll.

The train file becomes a DatasetDict with ClassLabel tags (as the hub's conll2003 has it), saved
with save_to_disk; each reader then runs in a fresh process that reports its peak RSS and time.
data=hf is measured cold (the conversion map runs and writes its cache) and warm (cache hit);
peak RSS is the process's VmHWM (num_proc workers are forked and counted apart, not here).

``python -m bench.hf_data`` -> bench/results/hf_data.json and .md
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.stamp import ROOT, stamp

CONLL = ROOT.parent / "shared" / "data" / "ner" / "conll2003"
MEASURE = """
import json, sys, time
started = time.perf_counter()
{imports}
imported = time.perf_counter()
docs = {call}
done = time.perf_counter()
print(json.dumps({{"documents": len(docs), "entities": sum(len(d.spans) for d in docs),
                  "import_seconds": imported - started, "read_seconds": done - imported,
                  # VmHWM, not ru_maxrss: Linux carries the forking parent's peak into ru_maxrss across exec.
                  "peak_rss_mib": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024,
}}))
"""


def measure(imports: str, call: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    out = subprocess.run([sys.executable, "-c", MEASURE.format(imports=imports, call=call)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    results = {"stamp": stamp()}
    from tests.test_hf import NAMES, as_classlabel_split

    work = Path(tempfile.mkdtemp(prefix="hf_data_"))
    try:
        from datasets import DatasetDict

        train = as_classlabel_split(CONLL / "train.txt", NAMES)
        for name in ("one", "two"):  # two copies: each has its own conversion cache
            DatasetDict({"train": train}).save_to_disk(str(work / name))
        hf = "from nerkit.data.hf import read_hf"
        rows = {
            "import nerkit.data.hf only (datasets, pyarrow)": measure(hf, "[]"),
            "read_conll": measure("from nerkit.data.readers import read_conll", f"read_conll({str(CONLL / 'train.txt')!r})"),
            "data=hf (cold: map + cache write)": measure(hf, f"read_hf({str(work / 'one')!r}, 'train')"),
            "data=hf (warm: cached map)": measure(hf, f"read_hf({str(work / 'one')!r}, 'train')"),
            "data=hf, num_proc=2 (cold)": measure(hf, f"read_hf({str(work / 'two')!r}, 'train', num_proc=2)"),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["readers"] = rows
    counts = {(r["documents"], r["entities"]) for r in rows.values() if r["documents"]}
    assert len(counts) == 1, f"the readers disagree: {rows}"
    text = table(results)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "hf_data.json").write_text(json.dumps(results, indent=1))
    (ROOT / "bench" / "results" / "hf_data.md").write_text(text + "\n")
    print(text)


def table(results: dict) -> str:
    """The Markdown of bench/results/hf_data.json."""
    lines = ["| reader | documents | entities | peak RSS MiB | import s | read s |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['documents']} | {r['entities']} | {r['peak_rss_mib']:.0f} | {r['import_seconds']:.2f} | "
              f"{r['read_seconds']:.2f} |" for name, r in results["readers"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
