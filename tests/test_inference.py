"""The one inference path: token input predicts what evaluation scores, for every head; token
input is checked; entity ends never split a grapheme cluster."""
from __future__ import annotations

import random

import pytest
import torch

from nerkit.data.readers import Document
from nerkit.data.schemes import Span
from nerkit.data.words import DEFAULT_WORDS
from nerkit.evaluation import evaluate, score
from nerkit.model import NerModel
from nerkit.predict import Predictor
from tests.helpers import HEAD_NAMES, make_cfg

TYPES = ["LOC", "ORG", "PER"]
WORDS = ["John", "Smith", "lives", "in", "Berlin", ".", "Siemens", "hired", "@paulwalk", "#tag", "e\u0301te\u0301",
         "New-York", "42", "\u4e2d\u6587", ","]


def tiny_predictor(tiny_bert_dir, head: str, words: str = DEFAULT_WORDS) -> Predictor:
    torch.manual_seed(0)
    model = NerModel.from_config(make_cfg([f"head={head}", f"encoder.pretrained={tiny_bert_dir}"]), TYPES)
    # Short windows: several per text.
    return Predictor(model, max_length=16, stride=4, batch_size=4, precision="fp32", words=words)


def tokenized_documents(n_docs: int = 8, seed: int = 0) -> tuple[list[Document], list[list[str]]]:
    """Documents laid out with irregular whitespace (as a tokenized dataset's text may be), their tokens."""
    rng = random.Random(seed)
    docs, token_lists = [], []
    for i in range(n_docs):
        tokens = [rng.choice(WORDS) for _ in range(rng.randint(1, 40))]
        text, spans = "", []
        for token in tokens:
            spans.append((len(text), len(text) + len(token)))
            text += token + rng.choice([" ", "  ", "\n", "\t "])
        gold = [Span(*spans[j], rng.choice(TYPES)) for j in range(0, len(tokens), 5)]
        docs.append(Document(f"d{i}", text, gold, tokens=spans))
        token_lists.append(tokens)
    return docs, token_lists


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_token_input_predicts_exactly_the_spans_evaluation_scores(tiny_bert_dir, head):
    predictor = tiny_predictor(tiny_bert_dir, head)
    docs, token_lists = tokenized_documents()
    predicted = predictor.predict_tokens(token_lists)
    assert sum(map(len, predicted)) > 5
    for tokens, entities in zip(token_lists, predicted):
        text = " ".join(tokens)
        for e in entities:
            assert 0 <= e.token_start < e.token_end <= len(tokens)
            assert text[e.start:e.end] == e.text == " ".join(tokens[e.token_start:e.token_end])

    _, evaluated = predictor.predict_documents(docs)  # what evaluate() scores
    assert [[(e.token_start, e.token_end, e.label) for e in ents] for ents in evaluated] == \
           [[(e.token_start, e.token_end, e.label) for e in ents] for ents in predicted]
    assert [e.score for ents in evaluated for e in ents] == pytest.approx([e.score for ents in predicted for e in ents], abs=1e-6)
    units = [[(e.token_start, e.token_end, e.label) for e in ents] for ents in predicted]
    metrics = evaluate(predictor, docs)
    assert metrics == {**score(docs, units, predictor.scheme, nested=predictor.nested), "tokens_without_subtokens": 0}


def test_token_input_of_empty_documents_and_text_input_have_no_token_indices(tiny_bert_dir):
    predictor = tiny_predictor(tiny_bert_dir, "softmax")
    assert predictor.predict_tokens([]) == []
    assert predictor.predict_tokens([[], ("Paris",)])[0] == []
    assert all(e.token_start is None and e.token_end is None for ents in predictor.predict(["John lives in Berlin ."] * 3)
               for e in ents)


@pytest.mark.parametrize("tokens,error,message", [
    ("John Smith", TypeError, r"a list of token lists \(one list of str per document\), got a str"),
    (["John", "Smith"], TypeError, r"tokens\[0\] is a str, not a list of str tokens"),
    ([["John"], ["Smith", 42]], TypeError, r"tokens\[1\]\[1\] is a int, not a str"),
    ([["John"], ["Smith", ""]], ValueError, r"tokens\[1\]\[1\] is empty"),
    ([["New York", "is"]], ValueError, r"tokens\[0\]\[0\] 'New York' contains whitespace"),
    ([["a", "b\u00a0c"]], ValueError, r"tokens\[0\]\[1\] 'b\\xa0c' contains whitespace"),
])
def test_bad_token_input_is_refused_naming_the_list_and_the_token(tiny_bert_dir, tokens, error, message):
    with pytest.raises(error, match=message):
        tiny_predictor(tiny_bert_dir, "softmax").predict_tokens(tokens)


def test_entity_ends_extend_to_the_end_of_the_grapheme_cluster(tiny_bert_dir):
    """The uncased tokenizer drops combining marks and variation selectors from its offsets;
    an entity must still end after them (NFD accents, emoji presentation selectors). The
    tokenizer's own words show it (the default word splitter already keeps clusters whole)."""
    predictor = tiny_predictor(tiny_bert_dir, "softmax", words="pretokenizer")
    head = predictor.model.head
    with torch.no_grad():  # every word a one-word LOC
        head.classifier.weight.zero_()
        head.classifier.bias.copy_(torch.tensor([10.0 if tag == "B-LOC" else 0.0 for tag in head.tags]))
    text = "Cairo\u0301 and Paris\ufe0f ."
    [enc] = predictor.text_encoder.encode([text])
    assert (enc.word_char_ends[0], enc.word_char_ends[2]) == (5, 16)  # the words alone would split the clusters
    [entities] = predictor.predict([text])
    assert [e.text for e in entities] == ["Cairo\u0301", "and", "Paris\ufe0f", "."]
    assert [(e.start, e.end) for e in entities] == [(0, 6), (7, 10), (11, 17), (18, 19)]
    [tokens] = predictor.predict_tokens([["Cairo\u0301", "and", "Paris\ufe0f", "."]])
    assert [(e.start, e.end, e.token_start, e.token_end) for e in tokens] == [(0, 6, 0, 1), (7, 10, 1, 2), (11, 17, 2, 3), (18, 19, 3, 4)]
    metrics = evaluate(predictor, [Document("d", text, [Span(0, 6, "LOC"), Span(11, 17, "LOC")])])
    assert metrics["recall"] == 1.0  # scored on the same, whole-cluster offsets
