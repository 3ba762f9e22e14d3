"""Sliding windows for long documents: planning, merging back, training examples, truncation baseline."""
from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers import AutoTokenizer

from nerkit.data.batching import window_dataset
from nerkit.data.encoding import AlignmentStats, TextEncoder, char_to_word_spans
from nerkit.data.readers import Document
from nerkit.data.schemes import Span
from nerkit.data.windowing import Window, WindowTable, check_window_size, plan_windows
from nerkit.encoders.bert import BertEncoder
from nerkit.evaluation import evaluate
from nerkit.heads.crf import CRFHead
from nerkit.heads.global_pointer import EfficientGlobalPointerHead, GlobalPointerHead
from nerkit.heads.softmax import SoftmaxHead
from nerkit.inference import merge_spans
from nerkit.model import NerModel
from nerkit.predict import Predictor

HEADS = {
    "softmax": lambda h, types: SoftmaxHead(h, types),
    "crf": lambda h, types: CRFHead(h, types),
    "global_pointer": lambda h, types: GlobalPointerHead(h, types, head_size=8),
    "efficient_global_pointer": lambda h, types: EfficientGlobalPointerHead(h, types, head_size=8),
}


@st.composite
def layouts(draw, max_word_tokens: int = 4):
    """Word lengths in tokens, a window capacity and a stride (overlap) that leaves progress."""
    lengths = draw(st.lists(st.integers(1, max_word_tokens), max_size=120))
    capacity = draw(st.integers(1, 40))
    stride = draw(st.integers(0, capacity - 1))
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    return starts, sum(lengths), capacity, stride


@settings(max_examples=300, deadline=None)
@given(layouts())
def test_plan_windows_covers_every_word_within_capacity(layout):
    starts, n_tokens, capacity, stride = layout
    windows = plan_windows(starts, n_tokens, capacity, stride)
    ends = [*starts[1:], n_tokens]
    if not starts:
        assert windows == []
        return
    assert windows[0].word_start == 0 and windows[-1].word_end == len(starts)
    for win in windows:
        assert win.word_start < win.word_end
        assert win.token_start == starts[win.word_start]
        assert 0 < win.token_end - win.token_start <= capacity
        if win.token_end != ends[win.word_end - 1]:  # only a single word longer than the window is cut
            assert win.word_end - win.word_start == 1 and win.token_end == win.token_start + capacity
        # Windows are filled: the next word would not have fitted.
        assert win.word_end == len(starts) or ends[win.word_end] - win.token_start > capacity
    for prev, nxt in zip(windows, windows[1:]):
        assert prev.word_start < nxt.word_start <= prev.word_end  # progress, and no word skipped
        overlap = ends[prev.word_end - 1] - nxt.token_start
        # At least `stride` tokens of overlap, unless that would mean no progress (forced one-word step);
        # and no more than needed: starting one word later would overlap by less than `stride`.
        assert overlap >= stride or nxt.word_start == prev.word_start + 1
        assert nxt.word_start + 1 >= len(starts) or ends[prev.word_end - 1] - starts[nxt.word_start + 1] < stride


@settings(max_examples=200, deadline=None)
@given(layouts(max_word_tokens=3))
def test_number_of_windows_grows_linearly_with_length(layout):
    starts, n_tokens, capacity, stride = layout
    windows = plan_windows(starts, n_tokens, capacity, stride)
    assert len(windows) <= len(starts)
    # Each window moves on by more than capacity - stride - 2 * (longest word) tokens.
    advance = capacity - stride - 2 * 3
    if advance > 0:
        assert len(windows) <= 1 + n_tokens / advance


def test_windows_per_token_stay_constant_on_real_text(tiny_bert_dir):
    encoder = TextEncoder(AutoTokenizer.from_pretrained(tiny_bert_dir), max_length=64, stride=16)
    paragraph = "The European Commission said on Thursday it disagreed with German advice to consumers.\n"
    counts = {}
    for repeat in (1, 10, 100, 1000):
        [enc] = encoder.encode([paragraph * repeat])
        counts[repeat] = (len(enc.windows), len(enc.token_ids))
    windows, tokens = counts[1000]
    longest = max(b - a for a, b in zip(enc.word_token_starts, enc.word_token_starts[1:]))
    assert windows > 100
    # 62 content tokens per window, 16 of them shared with the next, less rounding to whole words.
    assert windows <= tokens / (62 - 16 - 2 * longest) + 1
    assert counts[1000][0] <= 10 * counts[100][0] + 1 and counts[100][0] <= 10 * counts[10][0] + 1


@pytest.mark.parametrize("capacity,stride", [(10, 10), (10, 11), (10, -1), (0, 0)])
def test_stride_without_progress_is_rejected(capacity, stride):
    with pytest.raises(ValueError, match="overlap|at least one token"):
        check_window_size(capacity, stride)


def test_text_encoder_rejects_a_stride_that_leaves_no_progress(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    with pytest.raises(ValueError, match=r"stride is the overlap .* must be in \[0, 30\)"):
        TextEncoder(tokenizer, max_length=32, stride=30)


@settings(max_examples=200, deadline=None)
@given(layouts(), st.data())
def test_owners_are_the_most_central_windows(layout, data):
    starts, n_tokens, capacity, stride = layout
    windows = plan_windows(starts, n_tokens, capacity, stride)
    n = len(starts)
    context = lambda w, s, e: min(s - w.word_start, w.word_end - e)  # noqa: E731
    table = WindowTable.of([windows])
    owners = table.word_owners()
    assert len(owners) == n
    # Several documents (one without words) in one table: each keeps its own owners.
    several = WindowTable.of([windows, [], windows])
    assert several.word_owners().tolist() == [*owners.tolist(), *(owners + len(windows)).tolist()]
    assert several.doc_words.tolist() == [n, 0, n]
    for word in range(n):
        holding = [k for k, w in enumerate(windows) if w.word_start <= word < w.word_end]
        best = max(context(windows[k], word, word + 1) for k in holding)
        assert owners[word] == min(k for k in holding if context(windows[k], word, word + 1) == best)
    if n:
        spans = []
        for _ in range(5):
            start = data.draw(st.integers(0, n - 1))
            spans.append((start, data.draw(st.integers(start + 1, n))))
        expected = []
        for start, end in spans:
            holding = [k for k, w in enumerate(windows) if w.word_start <= start and end <= w.word_end]
            best = max((context(windows[k], start, end) for k in holding), default=None)
            expected.append(min((k for k in holding if context(windows[k], start, end) == best), default=-1))
        starts, ends = [s for s, _ in spans], [e for _, e in spans]
        assert table.span_owners([0] * len(spans), starts, ends).tolist() == expected
        # The same spans in the third document of a table of several: rows of that document only.
        shift = [k + len(windows) if k >= 0 else -1 for k in expected]
        assert several.span_owners([2] * len(spans), starts, ends).tolist() == shift


# --- windowed prediction == unwindowed prediction when the document fits one window ---------------

WORDS = ["john", "smith", "berlin", "paris", "lives", "in", "the", "extraordinarily", ",", ".", "siemens", "42"]


@pytest.fixture(scope="module")
def tiny_models(tiny_bert_dir):
    torch.manual_seed(0)
    return {name: NerModel(BertEncoder(str(tiny_bert_dir)), make(32, ["LOC", "ORG", "PER"])).eval()
            for name, make in HEADS.items()}


@pytest.mark.parametrize("head", list(HEADS))
@settings(max_examples=8, deadline=None)
@given(words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=40), seps=st.lists(st.sampled_from([" ", "  ", "\n"]), min_size=40, max_size=40))
def test_windowed_equals_unwindowed_when_the_text_fits(tiny_models, head, words, seps):
    model = tiny_models[head]
    text = "".join(w + s for w, s in zip(words, seps)).strip()
    predictor = Predictor(model, max_length=128, stride=32, precision="fp32")  # as the direct call
    [enc] = predictor.text_encoder.encode([text])
    assert len(enc.windows) == 1
    ids, index = predictor.text_encoder.window_input(enc, enc.windows[0])
    with torch.inference_mode():
        mask = torch.ones(1, len(index), dtype=torch.bool)
        scores = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), torch.tensor([index]), mask)
        direct = model.head.decode(scores, mask)[0]
    [windowed] = predictor.predict_encoded([enc])
    assert sorted(windowed) == sorted(direct)
    for entity, span in zip(predictor.predict([text])[0], sorted(windowed)):
        assert (entity.start, entity.end) == (enc.word_char_starts[span.start], enc.word_char_ends[span.end - 1])
        assert entity.text == text[entity.start : entity.end] and entity.text == entity.text.strip()


# --- an entity across a window boundary, with a model that is blind near window edges --------------

class EdgeBlindModel(nn.Module):
    """A deterministic stand-in for encoder + head: "alpha" starts a PER entity and following
    "beta"s continue it, but within `margin` words of a window edge it sees nothing (as a real
    model lacks context there) and predicts no entity. Only the maximal-context rule recovers
    entities that cross window boundaries."""

    def __init__(self, tokenizer, head, margin: int = 2):
        super().__init__()
        self.encoder = SimpleNamespace(tokenizer=tokenizer)
        self.head = head
        self.margin = margin
        self.alpha, self.beta = tokenizer.convert_tokens_to_ids(["alpha", "beta"])

    def forward(self, input_ids, attention_mask, word_index, word_mask):
        tokens = input_ids.gather(1, word_index)
        batch, n = tokens.shape
        types = len(self.head.entity_types)
        if isinstance(self.head, GlobalPointerHead):
            scores = torch.full((batch, types, n, n), -10.0)
        else:
            scores = torch.zeros(batch, n, len(self.head.tags))
        for row in range(batch):
            length = int(word_mask[row].sum())
            seen = lambda i: self.margin <= i < length - self.margin  # noqa: E731
            for i in range(length):
                if isinstance(self.head, GlobalPointerHead):
                    if tokens[row, i] == self.alpha:
                        j = i
                        while j + 1 < length and tokens[row, j + 1] == self.beta:
                            j += 1
                        if seen(i) and seen(j):
                            scores[row, 0, i, j] = 10.0
                else:
                    tag = "O"
                    if seen(i) and tokens[row, i] == self.alpha:
                        tag = "B-PER"
                    elif seen(i) and tokens[row, i] == self.beta:
                        tag = "I-PER"
                    scores[row, i, self.head.tag_ids[tag]] = 10.0
        return scores


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def boundary_document() -> tuple[str, list[Span]]:
    """Filler words, then "alpha beta beta beta beta" at words 11-15 (across the first window's
    edge at max_length=16), with irregular whitespace; its exact character span."""
    words = ["x"] * 11 + ["alpha", "beta", "beta", "beta", "beta"] + ["x"] * 12
    seps = ["  " if i % 3 else "\n" for i in range(len(words))]
    text = "".join(w + s for w, s in zip(words, seps)).rstrip()
    start = text.index("alpha")
    end = text.rindex("beta") + 4
    return text, [Span(start, end, "PER")]


@pytest.mark.parametrize("head", list(HEADS))
def test_entity_across_a_window_boundary_is_recovered_with_exact_offsets(tokenizer, head):
    model = EdgeBlindModel(tokenizer, HEADS[head](32, ["PER"]))
    text, [gold] = boundary_document()
    predictor = Predictor(model, max_length=16, stride=8)
    [enc] = predictor.text_encoder.encode([text])
    first = enc.windows[0]
    assert len(enc.windows) > 2 and enc.word_char_starts[first.word_end] < gold.end  # the entity crosses an edge
    [entities] = predictor.predict([text])
    assert [(e.start, e.end, e.label, e.text) for e in entities] == [(gold.start, gold.end, "PER", "alpha  beta\nbeta  beta  beta")]
    assert entities[0].text == text[gold.start : gold.end]
    assert evaluate(predictor, [Document("d", text, [gold])])["f1"] == 1.0


def test_truncation_baseline_keeps_only_the_first_window(tokenizer, caplog):
    model = EdgeBlindModel(tokenizer, SoftmaxHead(32, ["PER"]))
    text, gold = boundary_document()
    early = "x  x  x  alpha  beta  x  x  x"
    truncating = Predictor(model, max_length=16, stride=8, truncate=True)
    [enc] = truncating.text_encoder.encode([text])
    assert len(enc.windows) == 1 and enc.n_words == 28  # every word is still encoded, for evaluation
    late, found = truncating.predict([text, early])
    # Only the entity's head lies in the first window: truncation can at best find a clipped piece.
    assert [e.text for e in late] == ["alpha"] and late[0].start == gold[0].start
    assert [(e.start, e.end, e.label, e.text) for e in found] == [(9, 20, "PER", "alpha  beta")]
    metrics = evaluate(truncating, [Document("d", text, gold)])
    assert metrics["gold_entities"] == 1 and metrics["recall"] == 0.0  # counted as missed, not ignored
    with caplog.at_level(logging.WARNING):
        rows = window_dataset([Document("d", text, gold)], truncating.text_encoder, ["PER"], nested=False)
    assert len(rows) == 1
    assert "1 entities not whole in any window" in caplog.text


# --- training examples ------------------------------------------------------------------------------

def test_training_windows_keep_every_entity_aligned(tokenizer, caplog):
    rng = torch.Generator().manual_seed(0)
    pool = ["john", "smith", "lives", "in", "berlin", "extraordinarily", "and", "paris", ",", "."]
    words = [pool[int(i)] for i in torch.randint(len(pool), (300,), generator=rng)]
    text = " ".join(words)
    spans = [Span(m.start(), m.end(), "PER") for m in re.finditer(r"john smith", text)]
    spans += [Span(m.start(), m.end(), "LOC") for m in re.finditer(r"berlin|paris", text)]
    encoder = TextEncoder(tokenizer, max_length=32, stride=12)
    with caplog.at_level(logging.WARNING):
        rows = window_dataset([Document("d", text, spans)], encoder, ["LOC", "PER"], nested=False).to_list()
    assert "not whole" not in caplog.text
    [enc] = encoder.encode([text])
    gold = {(s, e, ["LOC", "PER"].index(label)) for s, e, label in char_to_word_spans(enc, spans, AlignmentStats())}
    assert len(rows) == len(enc.windows) > 10 and len(gold) == len(spans) > 20
    found = set()
    for row, win in zip(rows, enc.windows):
        assert len(row["input_ids"]) <= 32
        # Labels sit on the right tokens: the window's words are the document's words.
        assert [row["input_ids"][i] for i in row["word_index"]] == [
            enc.token_ids[enc.word_token_starts[w]] for w in range(win.word_start, win.word_end)]
        inside = {(max(s, win.word_start), min(e, win.word_end), label) for s, e, label in gold
                  if s < win.word_end and e > win.word_start}  # clipped at the window's edges
        absolute = {(s + win.word_start, e + win.word_start, label) for s, e, label in row["spans"]}
        assert absolute == inside
        found |= absolute
    assert gold <= found  # every entity whole in some window

    # Without overlap an entity cut by a window edge is whole nowhere: counted and reported.
    cut_doc = " ".join(["x"] * 29 + ["john", "smith"] + ["x"] * 5)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        window_dataset([Document("d", cut_doc, [Span(cut_doc.index("john"), cut_doc.index("john") + 10, "PER")])],
                       TextEncoder(tokenizer, max_length=32, stride=0), ["PER"], nested=False)
    assert "1 entities not whole in any window" in caplog.text


# --- GlobalPointer: spans kept once, from their most central window --------------------------------

def test_global_pointer_keeps_each_span_once_from_its_most_central_window():
    head = GlobalPointerHead(8, ["LOC", "PER"], head_size=4)
    windows = [Window(0, 10, 0, 10), Window(5, 15, 5, 15)]
    spans_w0 = [(6, 8, "PER", 0.9), (6, 8, "LOC", 0.6), (8, 10, "PER", 0.7)]  # (8, 10) touches w0's edge
    spans_w1 = [(1, 3, "PER", 0.8), (3, 5, "PER", 0.5), (9, 10, "LOC", 0.4)]  # absolute (6,8), (8,10), (14,15)
    [kept] = merge_spans(head.decoder(), WindowTable.of([windows]), [spans_w0, spans_w1])
    assert kept == [(6, 8, "LOC", 0.6), (6, 8, "PER", 0.9), (8, 10, "PER", 0.5), (14, 15, "LOC", 0.4)]


def test_conll_document_level_config_reads_whole_documents():
    from hydra.utils import instantiate

    from tests.helpers import make_cfg

    cfg = make_cfg(["data=conll2003_docs"])
    docs = instantiate(cfg.data.train)
    assert len(docs) == 946
    assert all(not d.text.startswith("-DOCSTART-") for d in docs)
    assert sum(len(d.spans) for d in docs) == 23499  # every sentence-level entity, with document offsets
    assert all(d.text[s:e] == d.text[s:e].strip() and "\n" not in d.text[s:e] for d in docs for s, e, _ in d.spans)


def test_every_head_config_has_a_windowing_case():
    from tests.helpers import HEAD_NAMES

    assert sorted(HEADS) == HEAD_NAMES, "add the new conf/head/*.yaml head to HEADS above"
