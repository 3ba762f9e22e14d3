"""Reports. A sweep comparison: ``python -m nerkit.report <multirun dir> [--out DIR]``; an error
analysis of one trained model: ``python -m nerkit.report errors run_dir=RUN data=NAME [split=dev]``.

Every job directory (one with ``.hydra/overrides.yaml``) becomes a row: encoder, head, learning
rates, the other swept overrides, and from its ``metrics.json`` the dev precision / recall / F1
of its best epoch (overall and per entity type), test F1 when there is a test split, epochs,
training time and parameter count. A job without ``metrics.json``, or with a ``FAILED`` marker,
is reported as failed. Writes ``report.md`` and ``report.png`` (F1 by encoder x head, F1 vs head
learning rate).

``errors`` writes ``errors.json`` and ``errors.html`` into the run directory (see
nerkit/error_report.py). The documents: a data config of conf/data (``data=conll2003
split=dev``) or a file (``data.path=FILE``: character-span JSON if it ends in .json/.jsonl,
else CoNLL, with ``data.scheme=BIO data.documents=false``). ``limit=N`` keeps the first N
documents, ``margin=3`` is the distance in tokens that counts as near a window edge; also
``device=cpu|cuda batch_size=64``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from matplotlib.figure import Figure
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nerkit.config import register_resolvers
from nerkit.data.readers import Document, read_conll, read_json_spans
from nerkit.runs import read_yaml

FAILED_MARKER = "FAILED"
# Shown in their own columns; any other override that differs between jobs gets a column too.
KNOWN_KEYS = ("encoder", "head", "trainer.lr", "head.lr")


@dataclass
class Job:
    directory: Path
    number: int
    encoder: str
    head: str
    lr: float | None
    head_lr: float | None  # effective: the head's own learning rate, else the encoder's
    overrides: dict[str, str]
    dev: dict | None = None  # dev metrics of the best epoch
    test_f1: float | None = None  # of the best model, when the data has a test split
    epochs: int | None = None  # evaluated epochs
    train_seconds: float | None = None
    parameters: int | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def _setting(cfg: DictConfig, key: str):
    try:
        return OmegaConf.select(cfg, key)
    except OmegaConfBaseException:  # e.g. ${hydra:...}, which resolves only inside the job
        return None


def _overrides(path: Path) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in read_yaml(path))
    return {key.lstrip("+~"): value for key, value in pairs}


def _failure(directory: Path) -> str | None:
    marker = directory / FAILED_MARKER
    if marker.exists():
        # A traceback's message is what follows its last (indented) frame line.
        lines = marker.read_text(errors="replace").splitlines()
        frames = [i for i, line in enumerate(lines) if line.startswith(" ")]
        message = " ".join(line.strip() for line in lines[frames[-1] + 1 if frames else 0:] if line.strip())
        return message[:200] or "failed"
    if not (directory / "metrics.json").exists():
        return "no metrics.json"
    if json.loads((directory / "metrics.json").read_text()).get("finished") is False:
        return "did not finish (killed or still running): metrics.json says finished: false"
    return None


def read_job(directory: Path) -> Job:
    """One job directory of a multirun -> ``Job``."""
    hydra_dir = directory / ".hydra"
    runtime = read_yaml(hydra_dir / "hydra.yaml").hydra
    choices = runtime.runtime.choices
    # config.yaml beside the weights is resolved (saved by the job); .hydra/config.yaml is not.
    saved = directory / "config.yaml"
    cfg = read_yaml(saved if saved.exists() else hydra_dir / "config.yaml")
    lr, head_lr = _setting(cfg, "trainer.lr"), _setting(cfg, "head.lr")
    job = Job(directory, int(runtime.job.get("num", 0) or 0), choices.get("encoder", "?"), choices.get("head", "?"),
              lr, head_lr if head_lr is not None else lr, _overrides(hydra_dir / "overrides.yaml"),
              error=_failure(directory))
    if job.failed:
        return job
    metrics = json.loads((directory / "metrics.json").read_text())
    scored = [h for h in metrics.get("history", []) if not math.isnan(h["dev"].get("f1", math.nan))]
    if scored:
        job.dev = max(scored, key=lambda h: h["dev"]["f1"])["dev"]
    job.test_f1 = metrics.get("test", {}).get("f1")
    job.epochs = len(metrics.get("history", []))
    job.train_seconds = metrics.get("train_seconds")
    job.parameters = metrics.get("parameters")
    return job


def collect(root: Path) -> list[Job]:
    directories = sorted({p.parent.parent for p in root.rglob("overrides.yaml") if p.parent.name == ".hydra"})
    if not directories:
        raise FileNotFoundError(f"{root}: no Hydra job directories (with .hydra/overrides.yaml) found")
    return sorted((read_job(d) for d in directories), key=lambda j: (str(j.directory.parent), j.number))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _num(value) -> str:
    return "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _override(value: str | None) -> str:
    """An override's value as the table shows it: floats from a search shortened to 4 digits."""
    try:
        return _num(float(value)) if value and any(c in value for c in ".eE") else value or ""
    except ValueError:
        return value


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def varying_overrides(jobs: list[Job]) -> list[str]:
    keys = sorted({k for job in jobs for k in job.overrides} - set(KNOWN_KEYS))
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def markdown(jobs: list[Job], root: Path, plot: str | None) -> str:
    failed = [job for job in jobs if job.failed]
    others = varying_overrides(jobs)
    summary = (f"{len(jobs)} jobs, {len(jobs) - len(failed)} completed, {len(failed)} failed. Dev precision / "
               "recall / F1 (%, strict entity level) of each job's best epoch; train time includes the per-epoch "
               "dev evaluation.")
    lines = [f"# Comparison: `{root}`", "", summary, ""]
    tested = any(job.test_f1 is not None for job in jobs)
    rows = []
    for job in jobs:
        dev = job.dev or {}
        rows.append([str(job.number), job.encoder, job.head, _num(job.lr), _num(job.head_lr),
                     *(_override(job.overrides.get(k)) for k in others),
                     _pct(dev.get("precision")), _pct(dev.get("recall")), f"**{_pct(dev.get('f1'))}**",
                     *([_pct(job.test_f1)] if tested else []),
                     _num(job.epochs), "–" if job.train_seconds is None else f"{job.train_seconds:.0f}",
                     "–" if job.parameters is None else f"{job.parameters / 1e6:.2f}M",
                     f"failed: {job.error}" if job.failed else "ok"])
    header = ["job", "encoder", "head", "lr", "head lr", *others, "P", "R", "F1", *(["test F1"] if tested else []),
              "epochs", "train s", "params", "status"]
    lines += _table(header, rows)
    types = sorted({t for job in jobs for t in (job.dev or {}).get("per_type", {})})
    if types:
        lines += ["", "Per entity type, P / R / F1 (%):", ""]
        rows = []
        for job in jobs:
            per_type = (job.dev or {}).get("per_type", {})
            cells = [" / ".join(_pct(per_type[t].get(m)) for m in ("precision", "recall", "f1-score"))
                     if t in per_type else "–" for t in types]
            rows.append([str(job.number), job.encoder, job.head, _num(job.head_lr), *cells])
        lines += _table(["job", "encoder", "head", "head lr", *types], rows)
    optuna = root / "optimization_results.yaml"
    if optuna.exists():
        best = read_yaml(optuna)
        if "best_value" in best:
            params = ", ".join(f"{k}={v}" for k, v in best.best_params.items())
            lines += ["", f"Optuna best dev F1 {_pct(best.best_value)} with {params}."]
    if plot:
        lines += ["", f"![dev F1 by encoder x head and by head learning rate]({plot})"]
    return "\n".join(lines) + "\n"


def plot(jobs: list[Job], path: Path) -> bool:
    """F1 by encoder x head (best over the other settings) and F1 vs head learning rate; False
    when no job completed."""
    done = [job for job in jobs if job.dev]
    if not done:
        return False
    encoders = list(dict.fromkeys(job.encoder for job in jobs))
    heads = list(dict.fromkeys(job.head for job in jobs))
    best: dict[tuple[str, str], float] = {}
    by_lr: dict[tuple[str, str], dict[float, float]] = {}
    for job in done:
        f1 = 100 * job.dev["f1"]
        best[job.encoder, job.head] = max(best.get((job.encoder, job.head), f1), f1)
        if isinstance(job.head_lr, (int, float)):
            points = by_lr.setdefault((job.encoder, job.head), {})
            points[job.head_lr] = max(points.get(job.head_lr, f1), f1)
    curves = {key: points for key, points in by_lr.items() if len(points) > 1}

    fig = Figure(figsize=(11 if curves else 6, 4.2), layout="constrained")
    axes = fig.subplots(1, 2 if curves else 1, squeeze=False)[0]
    width = 0.8 / len(encoders)
    for i, encoder in enumerate(encoders):
        xs = [h + (i - (len(encoders) - 1) / 2) * width for h in range(len(heads))]
        values = [best.get((encoder, head), 0.0) for head in heads]
        bars = axes[0].bar(xs, values, width, label=encoder)
        axes[0].bar_label(bars, labels=[f"{v:.1f}" if (encoder, h) in best else "failed"
                                        for v, h in zip(values, heads)], fontsize=8)
    axes[0].set_xticks(range(len(heads)), heads)
    axes[0].set_ylabel("dev F1 (%)")
    axes[0].set_title("Dev F1 by encoder x head (best over other settings)", fontsize=10)
    axes[0].set_ylim(0, 1.3 * max(best.values()) + 1)  # room for the legend above the bars
    axes[0].legend(title="encoder", loc="upper center", ncols=len(encoders))
    if curves:
        styles = ["-", "--", ":", "-."]  # one per encoder; the colour is the head's
        for (encoder, head), points in sorted(curves.items()):
            lrs = sorted(points)
            axes[1].plot(lrs, [points[lr] for lr in lrs], marker="o", label=f"{encoder} + {head}",
                         color=f"C{heads.index(head)}", linestyle=styles[encoders.index(encoder) % len(styles)],
                         linewidth=2.5 if head == "crf" else 1.2)
        axes[1].set_xscale("log")
        axes[1].set_xlabel("head learning rate")
        axes[1].set_ylabel("dev F1 (%)")
        axes[1].set_title("Dev F1 vs head learning rate (CRF thick)", fontsize=10)
        axes[1].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return True


def build_report(root: str | Path, out: str | Path | None = None) -> tuple[Path, list[Job]]:
    """Write ``report.md`` and ``report.png`` for the multirun in ``root``; returns the Markdown path."""
    root = Path(root)
    out = Path(out) if out else root
    out.mkdir(parents=True, exist_ok=True)
    jobs = collect(root)
    has_plot = plot(jobs, out / "report.png")
    path = out / "report.md"
    path.write_text(markdown(jobs, root, "report.png" if has_plot else None))
    return path, jobs


@dataclass
class FileData:
    path: str = ""
    scheme: str = "BIO"
    documents: bool = False


@dataclass
class ErrorsConfig:
    run_dir: str = MISSING
    data: Optional[str] = None  # a conf/data config name; or data.path=FILE
    file: FileData = field(default_factory=FileData)
    split: str = "dev"
    limit: Optional[int] = None
    margin: int = 3
    device: Optional[str] = None
    batch_size: int = 64


def load_split(cfg: ErrorsConfig) -> tuple[list[Document], str]:
    """The documents ``cfg`` names, and a name for them."""
    if cfg.file.path:
        path = Path(cfg.file.path)
        if path.suffix in (".json", ".jsonl"):
            return read_json_spans(path), path.name
        return read_conll(path, scheme=cfg.file.scheme, documents=cfg.file.documents), path.name
    register_resolvers()
    conf_dir = Path(__file__).resolve().parents[1] / "conf"
    if not (conf_dir / "data" / f"{cfg.data}.yaml").is_file():
        names = sorted(p.stem for p in (conf_dir / "data").glob("*.yaml"))
        raise SystemExit(f"no data config {cfg.data!r} in {conf_dir / 'data'} (there are: {', '.join(names)})")
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        data = compose(config_name="train", overrides=[f"data={cfg.data}"]).data
    if not data.get(cfg.split):
        splits = [k for k in ("train", "dev", "test") if data.get(k)]
        raise SystemExit(f"data config {cfg.data!r} has no split {cfg.split!r} (it has: {', '.join(splits)})")
    return instantiate(data[cfg.split]), f"{cfg.data} {cfg.split}"


def errors_main(argv: list[str]) -> int:
    # Imported here: they load torch, which the sweep report does not need.
    from nerkit.error_report import write_error_report
    from nerkit.predict_cli import load_predictor, parse_args, setup_logging

    usage = __doc__.split("\n\n", 1)[1]
    # data=NAME and data.path=FILE share the key `data`: move the file's keys to `file`.
    argv = [f"file.{a[len('data.'):]}" if a.startswith("data.") else a for a in argv]
    cfg = parse_args(ErrorsConfig, argv, usage)
    if bool(cfg.data) == bool(cfg.file.path):
        raise SystemExit(f"give the documents as exactly one of data=NAME or data.path=FILE\n\n{usage}")
    setup_logging()
    documents, name = load_split(cfg)
    if cfg.limit is not None:
        print(f"keeping the first {min(cfg.limit, len(documents))} of {len(documents)} documents (limit={cfg.limit})",
              file=sys.stderr)
        documents, name = documents[: cfg.limit], f"{name} (first {cfg.limit})"
    predictor = load_predictor(cfg.run_dir, device=cfg.device, batch_size=cfg.batch_size)
    path = write_error_report(predictor, documents, cfg.run_dir, name, cfg.margin)
    report = json.loads((path.parent / "errors.json").read_text(encoding="utf-8"))
    overall = report["scores"]["overall"]
    counts = ", ".join(f"{kind} {e['count']}" for kind, e in report["errors"].items())
    print(f"{len(documents)} documents, exact-span F1 {100 * overall['f1']:.1f}; errors: {counts}")
    print(f"wrote {path} and {path.parent / 'errors.json'}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["errors"]:
        return errors_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m nerkit.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("multirun_dir", type=Path, help="a Hydra multirun (sweep) directory")
    parser.add_argument("--out", type=Path, help="where to write report.md and report.png (default: multirun_dir)")
    args = parser.parse_args(argv)
    try:
        path, jobs = build_report(args.multirun_dir, args.out)
    except FileNotFoundError as err:
        parser.error(str(err))
    print(path.read_text())
    failed = sum(job.failed for job in jobs)
    print(f"wrote {path} ({len(jobs)} jobs, {failed} failed)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
