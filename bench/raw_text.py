"""Raw text predicted as well as the model was evaluated (issue 21, item 3).

Each tokenized test set is detokenized into natural text (no space before closing punctuation,
quotes and brackets attached to what they enclose, Chinese without spaces), with a map from
every token to its characters, so the gold entities' character spans are exact. That text goes
through ``Predictor.predict`` as raw text, and its predicted character spans are scored against
the gold ones (exact match, micro F1), beside the dataset-token F1 of the same model
(``nerkit.evaluation``). Raw text is cut into words by the run's ``words`` splitter
(``nerkit.data.words``), and, for comparison, by the tokenizer's pre-tokenizer (``words=pretokenizer``).

    python -m bench.raw_text train conll   # train the runs (bench/runs/raw_text/), one at a time
    python -m bench.raw_text train resume
    python -m bench.raw_text score         # bench/results/raw_text.{json,md}

The stress set (data/stress/social_media.jsonl: handles, hashtags, URLs, emoticons, words glued
to punctuation) is hand-written tokens with the spacing of natural text and gold entities; it is
predicted by the CoNLL model.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import regex
import torch

from bench.common import CONLL, RESULTS, RESUME, RUNS, ROOT, compose_cfg, markdown_table, write_subset
from bench.stamp import stamp
from nerkit.data.readers import Document, read_conll
from nerkit.data.schemes import Span
from nerkit.data.encoding import TextEncoder
from nerkit.data.words import WORD_SPLITTERS, words_of
from nerkit.evaluation import evaluate
from nerkit.model import NerModel
from nerkit.predict import Predictor

log = logging.getLogger("bench.raw_text")

OUT = RUNS / "raw_text"
CONLL_TRAIN_SENTENCES = 3000
CONLL_DEV_SENTENCES = 1000
TRAININGS = {
    # CoNLL-2003 on a train subset (CPU time), the whole test set.
    "conll": ["encoder=bert", "data=conll2003", "head=crf", "trainer.epochs=1", "trainer.lr=5e-5",
              f"data.root={OUT / 'conll_data'}", f"data.test.path={CONLL / 'test.txt'}"],
    # Resume NER (Chinese), BiLSTM with a character vocabulary from train.
    "resume": ["encoder=bilstm", "data=resume_ner", f"data.root={RESUME}", "head=crf", "trainer.epochs=5",
               "trainer.lr=2e-3"],
}
COMMON = ["seed=42", "trainer.device=cpu", "trainer.keep_checkpoints=0", "report_errors=false"]


def train_run(name: str) -> Path:
    from nerkit.train import train

    if name == "conll":
        write_subset(CONLL / "train.txt", OUT / "conll_data" / "train.txt", CONLL_TRAIN_SENTENCES)
        write_subset(CONLL / "valid.txt", OUT / "conll_data" / "valid.txt", CONLL_DEV_SENTENCES)
    run_dir = OUT / name
    overrides = [*TRAININGS[name], *COMMON]
    (OUT / f"{name}.stamp.json").write_text(json.dumps({"stamp": stamp(), "overrides": overrides}, indent=1))
    started = time.perf_counter()
    train(compose_cfg(overrides), run_dir)
    log.info("%s trained in %.0f s", name, time.perf_counter() - started)
    return run_dir


# Natural spacing of English tokens: these attach to the token before them, those to the one after.
_CLOSING = regex.compile(r"[,.;:!?)\]}%]+|(?i:'s|n't|'m|'re|'ve|'ll|'d)")
_OPENING = regex.compile(r"[(\[{$]|\p{Lu}{1,3}\$")


def natural_spacing(tokens: Sequence[str]) -> list[bool]:
    """Whether a space follows each token in natural text: none before closing punctuation and
    clitics, none after opening brackets and currency signs, double quotes attached to what they
    enclose (alternately opening and closing)."""
    space_after = [True] * len(tokens)
    quote_open = False
    for i, tok in enumerate(tokens):
        closes = _CLOSING.fullmatch(tok) or (tok == '"' and quote_open)
        if i and closes:
            space_after[i - 1] = False
        if tok == '"':
            quote_open = not quote_open
            if quote_open:
                space_after[i] = False
        elif _OPENING.fullmatch(tok):
            space_after[i] = False
    if tokens:
        space_after[-1] = False
    return space_after


def detokenize(doc_id: str, tokens: Sequence[str], space_after: Sequence[bool], entities: Sequence[Span]) -> Document:
    """Tokens with their spacing -> a Document of the natural text, the tokens' exact character
    spans in it and the gold entities ``(first_token, end_token, label)`` as character spans."""
    text, spans = "", []
    for tok, space in zip(tokens, space_after):
        spans.append((len(text), len(text) + len(tok)))
        text += tok + (" " if space else "")
    gold = [Span(spans[s][0], spans[e - 1][1], label) for s, e, label in entities]
    return Document(doc_id, text, gold, tokens=spans)


def from_tokenized(docs: Sequence[Document], language: str) -> list[Document]:
    """A tokenized dataset (space- or ""-joined tokens) -> natural text (Chinese: no spaces)."""
    out = []
    for doc in docs:
        tokens = [doc.text[s:e] for s, e in doc.tokens]
        starts = {s: i for i, (s, _) in enumerate(doc.tokens)}
        ends = {e: i + 1 for i, (_, e) in enumerate(doc.tokens)}
        entities = [Span(starts[s], ends[e], label) for s, e, label in doc.spans]
        space_after = natural_spacing(tokens) if language == "en" else [False] * len(tokens)
        out.append(detokenize(doc.id, tokens, space_after, entities))
    return out


def read_stress(path: Path) -> list[Document]:
    docs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(line)
        entities = [Span(e["start"], e["end"], e["label"]) for e in row["entities"]]
        docs.append(detokenize(f"{path.name}:{n}", row["tokens"], row["space_after"], entities))
    return docs


def span_f1(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[tuple[int, int, str]]]) -> dict:
    """Exact (start, end, label) match of character spans, micro over all texts."""
    tp = sum(len(set(g) & set(p)) for g, p in zip(gold, predicted))
    n_gold, n_pred = sum(len(set(g)) for g in gold), sum(len(set(p)) for p in predicted)
    precision, recall = tp / n_pred if n_pred else 0.0, tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "gold": n_gold, "predicted": n_pred}


def reproduction(docs: Sequence[Document], encoder: TextEncoder) -> dict:
    """How often raw text is cut into exactly the dataset's tokens, and how many gold entities
    start and end on word boundaries (the others cannot be predicted exactly)."""
    encodings = encoder.encode([doc.text for doc in docs])
    same, on_words = 0, 0
    for doc, enc in zip(docs, encodings):
        words = list(zip(enc.word_char_starts, enc.word_char_ends))
        same += words == list(doc.tokens)
        starts, ends = set(enc.word_char_starts), set(enc.word_char_ends)
        on_words += sum(s in starts and e in ends for s, e, _ in doc.spans)
    return {"texts_cut_as_dataset": same / len(docs), "entities_on_word_boundaries": on_words / sum(len(d.spans) for d in docs)}


def score_dataset(name: str, run_dir: Path, docs: list[Document], scheme: str, variants: Sequence[str]) -> dict:
    model, cfg = NerModel.load(run_dir, "cpu")
    recorded = words_of(cfg, str(run_dir / "config.yaml"))
    started = time.perf_counter()
    predictor = Predictor(model, cfg.max_length, cfg.stride, 64, "cpu", precision="fp32", words=recorded)
    tokens = evaluate(predictor, docs, scheme=scheme)
    result = {"dataset": name, "run": str(run_dir.relative_to(ROOT)), "texts": len(docs),
              "entities": sum(len(d.spans) for d in docs), "recorded_words": recorded,
              "dataset_token": {k: tokens[k] for k in ("precision", "recall", "f1")}, "raw_text": {}}
    for words in variants:
        predictor = Predictor(model, cfg.max_length, cfg.stride, 64, "cpu", precision="fp32", words=words)
        t0 = time.perf_counter()
        entities = predictor.predict([d.text for d in docs])
        seconds = time.perf_counter() - t0  # on a shared machine: a rough cost of the splitter, not a benchmark
        raw = span_f1([d.spans for d in docs], [[(e.start, e.end, e.label) for e in ents] for ents in entities])
        result["raw_text"][words] = {**raw, "gap": raw["f1"] - tokens["f1"], **reproduction(docs, predictor.text_encoder),
                                     "predict_seconds": seconds}
        log.info("%s words=%s: raw-text F1 %.4f, dataset-token F1 %.4f", name, words, raw["f1"], tokens["f1"])
    result["seconds"] = time.perf_counter() - started
    return result


def table(results: dict) -> str:
    rows = []
    for r in results["datasets"]:
        for words, raw in r["raw_text"].items():
            rows.append([r["dataset"], words + (" (chosen)" if words == r["chosen_words"] else ""),
                         f"{100 * r['dataset_token']['f1']:.2f}", f"{100 * raw['f1']:.2f}", f"{100 * raw['gap']:+.2f}",
                         f"{100 * raw['texts_cut_as_dataset']:.1f}", f"{100 * raw['entities_on_word_boundaries']:.1f}",
                         "met" if raw["gap"] >= -0.003 else "NOT met"])
    header = ["test set", "raw-text words", "dataset-token F1", "raw-text F1", "gap", "texts cut as the data %",
              "gold entities on word boundaries %", "gap >= -0.3 (the target for CoNLL and Resume)"]
    s = results["stamp"]
    lines = [
        "# Raw text predicted as well as the model was evaluated",
        "",
        f"commit {s['commit']}{' (dirty)' if s['dirty'] else ''}, {s['started']}, load average {s['load_average'][0]:.1f}; "
        "written by `python -m bench.raw_text score`.",
        "",
        "Each test set is detokenized into natural text (no space before closing punctuation and clitics, quotes and "
        "brackets attached, Chinese without spaces; every token's characters mapped, so gold entity character spans are "
        "exact). **dataset-token F1**: `nerkit.evaluation` on the dataset's tokens (seqeval strict). **raw-text F1**: the "
        "natural text through `Predictor.predict`, predicted character spans against gold character spans (exact match, "
        "micro). `raw-text words` is the config key `data.words` (nerkit/data/words.py): `pretokenizer` is the "
        "tokenizer's own words (nerkit before this key), `conll` CoNLL/PTB tokens, `chars` one character per word. "
        "`chosen` is the value conf/data names for that data (conll2003: conll, resume_ner: chars); a run records it "
        "in config.yaml and `Predictor.from_run` uses it. The two runs here were trained before the key existed "
        "(their config.yaml lacks it, so from_run gives them the default, conll), so every row sets it explicitly "
        "on the same model. "
        "`texts cut as the data`: texts whose raw-text words are exactly the dataset's tokens.",
        "",
        markdown_table(header, rows),
        "",
        "The mechanism is the recorded word splitter (option a): it makes raw text take the tokenized-data path, so "
        "where the splitter reproduces the dataset's tokens the encoding, and so the prediction, is identical to the "
        "evaluation's. Training with every sub-token labelled (option b, HF label_all_tokens) was not measured: it "
        "needs a second training per dataset, and the splitter already closes the gap. The stress set's remaining gap "
        "comes from the few texts the splitter cuts differently from its hand-written tokens (e.g. `Spotify/YouTube` "
        "stays one word, as `1996/97` does in CoNLL).",
        "",
    ]
    for r in results["datasets"]:
        lines.append(f"- {r['dataset']}: {r['texts']} texts, {r['entities']} entities; run {r['run']} "
                     f"({r['training']})")
    return "\n".join(lines) + "\n"


def score(args: argparse.Namespace) -> None:
    results = {"stamp": stamp(), "datasets": []}
    conll = from_tokenized(read_conll(CONLL / "test.txt"), "en")
    resume = from_tokenized(read_conll(RESUME / "test.char.bmes", scheme="BMES", token_separator=""), "zh")
    stress = read_stress(ROOT / "data" / "stress" / "social_media.jsonl")
    trainings = {"conll": "MiniLM + CRF, first 3000 CoNLL-2003 train sentences, 1 epoch, dev: first 1000 valid sentences",
                 "resume": "BiLSTM (character vocabulary from train) + CRF, full Resume NER train, 5 epochs"}
    plan = [("CoNLL-2003 test", "conll", conll, "BIO", ["pretokenizer", "conll"], "conll"),
            ("social-media stress set (CoNLL model)", "conll", stress, "BIO", ["pretokenizer", "conll"], "conll"),
            ("Resume NER test (Chinese)", "resume", resume, "BMES", list(WORD_SPLITTERS), "chars")]
    for name, run, docs, scheme, variants, chosen in plan:
        result = score_dataset(name, OUT / run, docs, scheme, variants)
        result.update(training=trainings[run], chosen_words=chosen,
                      training_overrides=json.loads((OUT / f"{run}.stamp.json").read_text()))
        results["datasets"].append(result)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "raw_text.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        (RESULTS / "raw_text.md").write_text(table(results))
    print(table(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train").add_argument("name", choices=sorted(TRAININGS))
    sub.add_parser("score")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    if args.command == "train":
        train_run(args.name)
    else:
        score(args)


if __name__ == "__main__":
    main()
