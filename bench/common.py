"""Shared pieces of the benchmarks: data subsets, the HF baseline model, CoNLL-token scoring, output.

Every benchmark compares nerkit with a HuggingFace baseline built from the *same* encoder
weights on the *same* texts, measured in the same process, so that ratios stay meaningful on
a busy machine even where absolute numbers do not.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Sequence

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.scheme import IOB2
from transformers import AutoConfig, AutoModelForTokenClassification

from nerkit.config import embedded_model_path, register_resolvers
from nerkit.data.batching import BATCH_ORDERS
from nerkit.data.readers import Document
from nerkit.model import NerModel
from nerkit.tasks.ner import NerTask

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RUNS = ROOT / "bench" / "runs"  # trained run directories (git-ignored)
CONLL = ROOT.parent / "shared" / "data" / "ner" / "conll2003"
RESUME = ROOT.parent / "shared" / "data" / "ner" / "resume_ner"
CONLL_TYPES = ["LOC", "MISC", "ORG", "PER"]

register_resolvers()
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would drown the tables in the logs
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def compose_cfg(overrides: Sequence[str]) -> DictConfig:
    """conf/train.yaml with overrides, exactly as ``python -m nerkit.train`` composes it."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def write_subset(source: Path, target: Path, max_sentences: int | None) -> Path:
    """Copy the first ``max_sentences`` sentences of a CoNLL file (document markers kept)."""
    out, sentences, in_sentence = [], 0, False
    for line in source.read_text(encoding="utf-8").splitlines():
        blank = not line.strip()
        if not blank and not line.startswith("-DOCSTART-") and not in_sentence:
            if max_sentences is not None and sentences == max_sentences:
                break
            sentences += 1
        in_sentence = not blank and not line.startswith("-DOCSTART-")
        out.append(line)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(out) + "\n", encoding="utf-8")
    return target


def conll_tokens(doc: Document) -> list[tuple[int, int]]:
    """Character spans of the original CoNLL tokens (they never contain whitespace)."""
    return [m.span() for m in re.finditer(r"\S+", doc.text)]


def spans_to_iob2(tokens: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int, str]]) -> list[str]:
    """Character spans -> one IOB2 tag per CoNLL token (a span covers every token it overlaps;
    a span that would overwrite an earlier one is skipped, so the tags stay well formed)."""
    tags = ["O"] * len(tokens)
    ends = [e for _, e in tokens]
    starts = [s for s, _ in tokens]
    for start, end, label in sorted(spans):
        covered = range(bisect_right(ends, start), bisect_left(starts, end))
        if not covered or any(tags[i] != "O" for i in covered):
            continue
        tags[covered[0]] = f"B-{label}"
        for i in covered[1:]:
            tags[i] = f"I-{label}"
    return tags


def seqeval_strict(gold: list[list[str]], pred: list[list[str]]) -> dict:
    kw = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    return {
        "precision": float(precision_score(gold, pred, **kw)),
        "recall": float(recall_score(gold, pred, **kw)),
        "f1": float(f1_score(gold, pred, **kw)),
    }


def hf_twin(model: NerModel) -> torch.nn.Module:
    """An AutoModelForTokenClassification holding exactly the weights of a nerkit BERT + token head."""
    head = model.head
    config = AutoConfig.from_pretrained(embedded_model_path(), num_labels=len(head.tags),
                                        id2label=dict(enumerate(head.tags)), label2id=head.tag_ids)
    twin = AutoModelForTokenClassification.from_config(config)
    twin.bert.load_state_dict(model.encoder.model.state_dict(), strict=True)
    twin.classifier.load_state_dict(head.classifier.state_dict(), strict=True)
    return twin.eval()


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.machine())
    except OSError:
        return platform.processor() or platform.machine()


def machine_info() -> dict:
    """The run's stamp: call it once when a run STARTS and keep it with everything the run
    writes (never re-stamp at save time: the code may have changed while it ran). ``dirty``:
    uncommitted changes outside bench/results/ (results files are outputs, not code)."""
    changed = [line for line in _git("status", "--porcelain").splitlines() if "bench/results/" not in line]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(changed),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,  # the card a GPU run's figures came from
    }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def save_results(name: str, results: dict, table: str, directory: Path = RESULTS) -> Path:
    """Write <directory>/<name>.json and <name>.md (the table; bench/results/ unless a smoke run
    writes elsewhere), and print the table."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    (directory / f"{name}.md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {path}")
    return path


def window_lengths(text_encoder, texts: Sequence[str]) -> list[int]:
    """Real (non-padding) model input tokens of every window the texts are cut into, special
    tokens included: the unit of every tokens/s figure in bench/."""
    specials = len(text_encoder.prefix_ids) + len(text_encoder.suffix_ids)
    return [w.token_end - w.token_start + specials for enc in text_encoder.encode(texts) for w in enc.windows]


def text_tokens(tokenizer, texts: Sequence[str]) -> list[int]:
    """Sub-word tokens of each text's own characters, counted once: no special tokens, no padding,
    and no token twice where windows overlap. Every system predicting the same texts is credited
    with the same work, however it cuts or pads them."""
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def batch_tokens(cfg: DictConfig) -> list[tuple[int, int]]:
    """Per epoch, the real and the padded tokens of the batches the engine builds for ``cfg``'s
    training data: its batch order's plan over the task's window lengths (each batch padded to its
    longest window), computed without training."""
    t = cfg.trainer
    lengths = NerTask(cfg, torch.device("cpu")).lengths()
    out = []
    for epoch in range(t.epochs):
        batches = BATCH_ORDERS[t.batch_order](lengths, t.batch_size * t.accumulate, cfg.seed + epoch)
        out.append((sum(lengths[i] for b in batches for i in b), sum(len(b) * max(lengths[i] for i in b) for b in batches)))
    return out
