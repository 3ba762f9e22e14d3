"""The error-analysis report of a trained model on labelled documents: ``errors.json`` + ``errors.html``.

``write_error_report(inference, documents, run_dir, split_name)`` predicts the documents, sorts
every wrong or missing span into the classes of ``nerkit.error_analysis`` and writes, into the
run directory: per-type precision / recall / F1 (exact character spans), the gold x predicted
type confusion matrix, each error class with its count and examples, the documents with the
most errors (gold and predicted entities side by side, highlighted as on the demo page), and,
for documents cut into several windows, the errors within ``margin`` sub-word tokens of a
window edge, and, where entities nest, the missed inner entities and the spurious inner
predictions. The command line is ``python -m nerkit.report errors`` (see nerkit/report.py).
"""
from __future__ import annotations

import html
import json
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Sequence

from nerkit.data.readers import Document
from nerkit.data.schemes import Span
from nerkit.error_analysis import (
    ERROR_CLASSES,
    NONE,
    SpanError,
    classify_errors,
    confusion,
    edge_distance,
    enclosing,
    nested_errors,
    type_scores,
    window_edges,
)
from nerkit.inference import Inference
from nerkit.runs import write_text_atomically

CLASS_TITLES = {
    "missed": "Missed entirely (no prediction overlaps the gold span)",
    "spurious": "Spurious (the prediction overlaps no unfound gold span)",
    "boundary": "Wrong boundary (overlapping, same type)",
    "type": "Wrong type (same boundaries)",
    "type_and_boundary": "Wrong type and boundary (overlapping, other type)",
}
PALETTE_SIZE = 10  # colour classes c0..c9 of nerkit/static/highlight.css
HTML_EXAMPLES = 25  # per error class; errors.json holds all of them
CONTEXT_CHARS = 60


def _span_json(text: str, span: Span | None, score: float | None = None) -> dict | None:
    if span is None:
        return None
    out = {"start": span.start, "end": span.end, "label": span.label, "text": text[span.start:span.end]}
    return out if score is None else {**out, "score": round(score, 4)}


def _context(text: str, spans: Sequence[Span]) -> dict:
    start, end = min(s.start for s in spans), max(s.end for s in spans)
    left, right = max(0, start - CONTEXT_CHARS), min(len(text), end + CONTEXT_CHARS)
    return {"text": text[left:right], "offset": left, "start": start - left, "end": end - left}


def analyze(inference: Inference, documents: Sequence[Document], margin: int = 3, top_documents: int = 10) -> dict:
    """Predict ``documents`` (as evaluation does) and analyse the errors; the content of ``errors.json``."""
    encodings, entities = inference.predict_documents(documents)
    gold_all, predicted_all, errors_by_doc = [], [], []
    classes: dict[str, list[dict]] = {kind: [] for kind in ERROR_CLASSES}
    pairs: Counter = Counter()
    edges_summary = {"margin_tokens": margin, "long_documents": 0, "errors_in_long_documents": 0,
                     "errors_near_edges": 0, "near_edges_by_class": dict.fromkeys(ERROR_CLASSES, 0),
                     "gold_in_long_documents": 0, "gold_near_edges": 0, "examples": []}
    nesting = {"gold_inner": 0, "found_inner": 0, "predicted_inner": 0, "missed_inner": [], "spurious_inner": []}
    for i, (doc, enc, found) in enumerate(zip(documents, encodings, entities)):
        scores = {Span(e.start, e.end, e.label): e.score for e in found}
        predicted = list(scores)
        correct, errors = classify_errors(doc.spans, predicted)
        gold_all.append(doc.spans)
        predicted_all.append(predicted)
        pairs += confusion(correct, errors)
        errors_by_doc.append(errors)
        nested = nested_errors(doc.spans, predicted)
        nesting["gold_inner"] += len(nested["found_inner"]) + len(nested["missed_inner"])
        nesting["found_inner"] += len(nested["found_inner"])
        nesting["predicted_inner"] += sum(enclosing(p, predicted) is not None for p in predicted)
        for kind, side, spans in (("missed_inner", "gold", doc.spans), ("spurious_inner", "predicted", predicted)):
            for span in nested[kind]:
                outer = enclosing(span, spans)
                nesting[kind].append({"document": doc.id, "index": i, "gold": None, "predicted": None,
                                      side: _span_json(doc.text, span, scores.get(span) if side == "predicted" else None),
                                      "outer": _span_json(doc.text, outer), "context": _context(doc.text, [span, outer])})
        edges = window_edges(enc)
        if edges:
            edges_summary["long_documents"] += 1
            edges_summary["errors_in_long_documents"] += len(errors)
            edges_summary["gold_in_long_documents"] += len(doc.spans)
            edges_summary["gold_near_edges"] += sum(
                d is not None and d < margin for d in (edge_distance(enc, s, edges) for s in doc.spans))
        for error in errors:
            item = {"document": doc.id, "index": i, "gold": _span_json(doc.text, error.gold),
                    "predicted": _span_json(doc.text, error.predicted, scores.get(error.predicted)),
                    "context": _context(doc.text, error.spans)}
            if edges:
                distances = [d for d in (edge_distance(enc, s, edges) for s in error.spans) if d is not None]
                item["edge_distance"] = min(distances, default=None)
                if item["edge_distance"] is not None and item["edge_distance"] < margin:
                    edges_summary["errors_near_edges"] += 1
                    edges_summary["near_edges_by_class"][error.kind] += 1
                    edges_summary["examples"].append({"class": error.kind, **item})
            classes[error.kind].append(item)

    types = list(inference.entity_types)
    types += sorted({s.label for spans in gold_all for s in spans} - set(types))
    labels = [*types, NONE]
    worst = sorted((i for i, errors in enumerate(errors_by_doc) if errors), key=lambda i: -len(errors_by_doc[i]))
    return {
        "documents": len(documents),
        "scoring": "exact character spans (seqeval's word-level scores in metrics.json can differ slightly where "
                   "gold and model word boundaries differ)",
        "entity_types": types,
        "scores": type_scores(gold_all, predicted_all),
        "confusion": {"labels": labels, "rows": "gold", "columns": "predicted",
                      "matrix": [[pairs[g, p] for p in labels] for g in labels]},
        "errors": {kind: {"count": len(items), "examples": items} for kind, items in classes.items()},
        "window_edges": edges_summary,
        "nesting": {"gold_inner": nesting["gold_inner"], "found_inner": nesting["found_inner"],
                    "inner_recall": nesting["found_inner"] / nesting["gold_inner"] if nesting["gold_inner"] else None,
                    "predicted_inner": nesting["predicted_inner"],
                    **{kind: {"count": len(nesting[kind]), "examples": nesting[kind]}
                       for kind in ("missed_inner", "spurious_inner")}},
        "worst_documents": [_document_json(documents[i], gold_all[i], predicted_all[i], errors_by_doc[i])
                            for i in worst[:top_documents]],
    }


def _document_json(doc: Document, gold: Sequence[Span], predicted: Sequence[Span],
                   errors: Sequence[SpanError]) -> dict:
    wrong_gold = {e.gold for e in errors if e.gold is not None}
    wrong_predicted = {e.predicted for e in errors if e.predicted is not None}
    return {
        "document": doc.id, "errors": len(errors), "by_class": dict(Counter(e.kind for e in errors)), "text": doc.text,
        "gold": [{**_span_json(doc.text, s), "wrong": s in wrong_gold} for s in sorted(gold)],
        "predicted": [{**_span_json(doc.text, s), "wrong": s in wrong_predicted} for s in sorted(predicted)],
    }


# --- HTML -----------------------------------------------------------------------------------------

def highlight(text: str, spans: Sequence[dict], types: Sequence[str]) -> str:
    """``text`` as escaped HTML with ``spans`` ({start, end, label, [wrong]}) as nested marks, drawn
    as the demo page draws them; a span crossing another's end is listed after the text."""
    ordered = sorted(spans, key=lambda s: (s["start"], -s["end"]))
    roots: list = []
    crossing, stack = [], []
    for span in ordered:
        while stack and stack[-1][0]["end"] <= span["start"]:
            stack.pop()
        if stack and span["end"] > stack[-1][0]["end"]:
            crossing.append(span)
            continue
        node = (span, [])
        (stack[-1][1] if stack else roots).append(node)
        stack.append(node)

    def render(nodes, start: int, end: int) -> str:
        out, pos = [], start
        for span, children in nodes:
            out.append(html.escape(text[pos:span["start"]]))
            colour = types.index(span["label"]) % PALETTE_SIZE if span["label"] in types else PALETTE_SIZE - 1
            tip = html.escape(f'{span["label"]} · characters {span["start"]}–{span["end"]}'
                              + (" · error" if span.get("wrong") else ""), quote=True)
            wrong = " wrong" if span.get("wrong") else ""
            out.append(f'<mark class="ent c{colour}{wrong}" data-label="{html.escape(span["label"], quote=True)}" '
                       f'data-tip="{tip}" title="{tip}">{render(children, span["start"], span["end"])}'
                       f'<span class="tag">{html.escape(span["label"])}</span></mark>')
            pos = span["end"]
        out.append(html.escape(text[pos:end]))
        return "".join(out)

    body = f'<div class="doc">{render(roots, 0, len(text))}</div>'
    if crossing:
        listed = "; ".join(f'{s["label"]} “{s["text"]}” ({s["start"]}–{s["end"]})' for s in crossing)
        body += f'<p class="hint">Overlapping spans not drawn inline: {html.escape(listed)}</p>'
    return body


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _chip(span: dict | None, types: Sequence[str]) -> str:
    if span is None:
        return '<span class="none">—</span>'
    colour = types.index(span["label"]) % PALETTE_SIZE if span["label"] in types else PALETTE_SIZE - 1
    return (f'<mark class="ent c{colour}">{html.escape(span["text"])}<span class="tag">'
            f'{html.escape(span["label"])}</span></mark>')


def _context_html(context: dict) -> str:
    text, start, end = context["text"], context["start"], context["end"]
    return (f'{html.escape(text[:start])}<b>{html.escape(text[start:end])}</b>{html.escape(text[end:])}'
            .replace("\n", " ⏎ "))


def _examples_table(items: Sequence[dict], types: Sequence[str], with_class: bool = False) -> str:
    rows = []
    for item in items:
        cls = f'<td>{html.escape(item["class"])}</td>' if with_class else ""
        edge = f'<td>{item["edge_distance"]}</td>' if with_class else ""
        rows.append(f'<tr>{cls}<td>{html.escape(str(item["document"]))}</td><td>{_chip(item["gold"], types)}</td>'
                    f'<td>{_chip(item["predicted"], types)}</td>{edge}'
                    f'<td class="context">{_context_html(item["context"])}</td></tr>')
    head = ("<th>class</th>" if with_class else "") + "<th>document</th><th>gold</th><th>predicted</th>" + \
        ("<th>tokens to edge</th>" if with_class else "") + "<th>context</th>"
    return f'<table class="examples"><tr>{head}</tr>{"".join(rows)}</table>'


REPORT_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans CJK SC", sans-serif;
       color: #222; background: #f6f7f9; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 26px 0 8px; } h3 { font-size: 15px; }
section { background: #fff; border: 1px solid #e1e4e8; border-radius: 8px; padding: 4px 16px 14px; margin-top: 14px; }
table { border-collapse: collapse; } td, th { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f3f4f6; } td:first-child, th:first-child { text-align: left; }
table.examples td, table.examples th { text-align: left; vertical-align: top; }
.context { color: #555; font-size: 13px; } .context b { color: #111; background: #fff3bf; }
.hint, .sub { color: #666; font-size: 13px; } .none { color: #aaa; }
.confusion td.off { background: #fde8e8; font-weight: 600; } .confusion td.diag { background: #e8f5e9; }
.confusion td.zero { color: #bbb; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
.pair > div { border: 1px solid #eee; border-radius: 6px; padding: 6px 10px; max-height: 420px; overflow: auto; }
.pair h4 { margin: 2px 0 4px; font-size: 13px; color: #555; }
.doc { font-size: 14px; line-height: 2.0; }
"""


def render_html(report: dict, title: str) -> str:
    types = report["entity_types"]
    scores = report["scores"]
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="sub">{report["documents"]} documents · scored on {html.escape(report["scoring"])}.</p>']
    legend = "".join(f'<span class="chip c{i % PALETTE_SIZE}">{html.escape(t)}</span>' for i, t in enumerate(types))
    parts.append(f'<div class="legend">{legend}</div>')

    rows = "".join(
        f'<tr><td>{html.escape(name)}</td><td>{_pct(s["precision"])}</td><td>{_pct(s["recall"])}</td>'
        f'<td><b>{_pct(s["f1"])}</b></td><td>{s["gold"]}</td><td>{s["predicted"]}</td><td>{s["correct"]}</td></tr>'
        for name, s in scores.items())
    parts.append('<section id="per-type"><h2>Per type</h2><table><tr><th>type</th><th>P %</th><th>R %</th>'
                 f'<th>F1 %</th><th>gold</th><th>predicted</th><th>correct</th></tr>{rows}</table></section>')

    labels, matrix = report["confusion"]["labels"], report["confusion"]["matrix"]
    head = "".join(f"<th>{html.escape(p)}</th>" for p in labels)
    body = []
    for g, row in zip(labels, matrix):
        cells = []
        for p, n in zip(labels, row):
            kind = "zero" if not n else "diag" if g == p else "off" if NONE not in (g, p) else ""
            cells.append(f'<td class="{kind}">{n}</td>')
        body.append(f"<tr><th>{html.escape(g)}</th>{''.join(cells)}</tr>")
    parts.append('<section id="confusion"><h2>Type confusion</h2><p class="hint">Rows: gold type; columns: '
                 'predicted type. Each prediction counts under the gold span it overlaps (exact or not); red cells '
                 f'are predictions overlapping a gold span of another type; {html.escape(NONE)} holds spurious '
                 f'predictions (row) and missed gold spans (column).</p><table class="confusion"><tr>'
                 f'<th>gold \\ predicted</th>{head}</tr>{"".join(body)}</table></section>')

    errors = report["errors"]
    summary = "".join(f'<tr><td><a href="#errors-{k}">{html.escape(CLASS_TITLES[k])}</a></td>'
                      f'<td>{errors[k]["count"]}</td></tr>' for k in ERROR_CLASSES)
    sections = []
    for kind in ERROR_CLASSES:
        items = errors[kind]["examples"]
        more = len(items) - HTML_EXAMPLES
        note = f'<p class="hint">{more} more in errors.json.</p>' if more > 0 else ""
        sections.append(f'<h3 id="errors-{kind}">{html.escape(CLASS_TITLES[kind])}: {len(items)}</h3>'
                        + (_examples_table(items[:HTML_EXAMPLES], types) + note if items else '<p class="hint">None.</p>'))
    parts.append('<section id="errors"><h2>Errors by class</h2><table><tr><th>class</th><th>count</th></tr>'
                 f'{summary}</table>{"".join(sections)}</section>')

    edges = report["window_edges"]
    if edges["long_documents"]:
        near, errs = edges["errors_near_edges"], edges["errors_in_long_documents"]
        by_class = ", ".join(f"{k}: {n}" for k, n in edges["near_edges_by_class"].items() if n) or "none"
        text = (f'{edges["long_documents"]} documents are longer than one window. Of their {errs} errors, {near} '
                f'lie within {edges["margin_tokens"]} sub-word tokens of a window edge ({by_class}); '
                f'{edges["gold_near_edges"]} of their {edges["gold_in_long_documents"]} gold entities lie that close.')
        table = _examples_table(edges["examples"][:HTML_EXAMPLES], types, with_class=True) if edges["examples"] else ""
    else:
        text, table = "No document is longer than one window: no window edges to look at.", ""
    parts.append(f'<section id="window-edges"><h2>Near window edges</h2><p>{html.escape(text)}</p>{table}</section>')

    nesting = report["nesting"]
    if nesting["gold_inner"] or nesting["predicted_inner"]:
        recall = "-" if nesting["inner_recall"] is None else _pct(nesting["inner_recall"]) + " %"
        text = (f'{nesting["gold_inner"]} gold entities lie inside another gold entity; {nesting["found_inner"]} of them '
                f'were predicted exactly (inner recall {recall}). {nesting["predicted_inner"]} predictions lie inside '
                f'another prediction, {nesting["spurious_inner"]["count"]} of them wrong.')
        tables = []
        for kind, title in (("missed_inner", "Missed inner entities"), ("spurious_inner", "Spurious inner predictions")):
            items = nesting[kind]["examples"]
            more = f'<p class="hint">{len(items) - HTML_EXAMPLES} more in errors.json.</p>' if len(items) > HTML_EXAMPLES else ""
            tables.append(f'<h3>{title}: {len(items)}</h3>' + (_examples_table(items[:HTML_EXAMPLES], types) + more
                                                               if items else '<p class="hint">None.</p>'))
        parts.append(f'<section id="nesting"><h2>Nested entities</h2><p>{html.escape(text)}</p>'
                     f'<p class="hint">Context: the inner span with the entity enclosing it.</p>{"".join(tables)}</section>')

    docs = []
    for doc in report["worst_documents"]:
        counts = ", ".join(f"{k}: {n}" for k, n in doc["by_class"].items())
        docs.append(f'<h3>{html.escape(str(doc["document"]))}: {doc["errors"]} errors ({html.escape(counts)})</h3>'
                    f'<div class="pair"><div><h4>gold</h4>{highlight(doc["text"], doc["gold"], types)}</div>'
                    f'<div><h4>predicted</h4>{highlight(doc["text"], doc["predicted"], types)}</div></div>')
    parts.append('<section id="documents"><h2>Documents with the most errors</h2><p class="hint">Spans drawn with '
                 'a dashed red outline are errors (missed or wrong gold spans on the left, wrong predictions on the '
                 f'right).</p>{"".join(docs) or "<p>No errors.</p>"}</section>')

    css = (resources.files("nerkit") / "static" / "highlight.css").read_text(encoding="utf-8")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{css}{REPORT_CSS}</style></head><body><main>{"".join(parts)}</main></body></html>\n')


def write_error_report(inference: Inference, documents: Sequence[Document], run_dir: str | Path, split_name: str,
                       margin: int = 3) -> Path:
    """Analyse ``documents`` and write ``errors.json`` and ``errors.html`` into ``run_dir``; returns the HTML path."""
    run_dir = Path(run_dir)
    report = {"split": split_name, **analyze(inference, documents, margin)}
    write_text_atomically(run_dir / "errors.json", json.dumps(report, ensure_ascii=False, indent=1))
    path = run_dir / "errors.html"
    write_text_atomically(path, render_html(report, f"Errors of {run_dir.name} on {split_name}"))
    return path
