"""Entity-level evaluation: seqeval in strict mode with an explicit scheme, plus exact span match.

Gold and predicted spans are compared on the same word units the model labels. seqeval's
strict mode needs the scheme named explicitly (without it, it silently scores leniently).
Exact span matching is reported beside it because it also scores nested entities, which a
tag sequence cannot hold.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from nerkit.data.batching import remove_overlaps
from nerkit.data.encoding import AlignmentStats, char_to_word_spans
from nerkit.data.readers import Document
from nerkit.data.schemes import get_scheme
from nerkit.predict import Predictor


def evaluate(predictor: Predictor, documents: Sequence[Document]) -> dict:
    encodings = predictor.text_encoder.encode([d.text for d in documents])
    predicted = predictor.predict_encoded(encodings)
    stats = AlignmentStats()
    scheme = get_scheme("BIOES")
    gold_tags, pred_tags = [], []
    counts = Counter()
    for doc, enc, pred in zip(documents, encodings, predicted):
        gold = set(char_to_word_spans(enc, doc.spans, stats))
        pred = {(s, e, label) for s, e, label, _ in pred}
        counts["tp"] += len(gold & pred)
        counts["gold"] += len(gold)
        counts["pred"] += len(pred)
        gold_tags.append(scheme.encode(remove_overlaps(gold)[0], enc.n_words))
        pred_tags.append(scheme.encode(remove_overlaps(pred)[0], enc.n_words))
    strict = {"mode": "strict", "scheme": scheme.seqeval_scheme, "zero_division": 0}
    report = classification_report(gold_tags, pred_tags, output_dict=True, **strict)
    span_p = counts["tp"] / counts["pred"] if counts["pred"] else 0.0
    span_r = counts["tp"] / counts["gold"] if counts["gold"] else 0.0
    return {
        "precision": float(precision_score(gold_tags, pred_tags, **strict)),
        "recall": float(recall_score(gold_tags, pred_tags, **strict)),
        "f1": float(f1_score(gold_tags, pred_tags, **strict)),
        "span_f1": 2 * span_p * span_r / (span_p + span_r) if span_p + span_r else 0.0,
        "per_type": {k: {m: float(v) for m, v in row.items()} for k, row in report.items() if not k.endswith(" avg")},
        "gold_entities": counts["gold"],
        "lost_gold_entities": stats.lost,
    }
