"""Raw text is cut into the units the model learned (``data.words``, nerkit/data/words.py)."""
from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from nerkit.config import embedded_model_path
from nerkit.data.encoding import TextEncoder
from nerkit.data.words import _PATTERN, _spans, char_words, conll_words
from nerkit.predict import Predictor
from nerkit.validation import ConfigError, validate_config
from tests.helpers import make_cfg, save_tiny_run

# Natural text -> the tokens CoNLL-2003 (Penn Treebank conventions) and social-media corpora have.
CONLL_CASES = [
    ("Germany's U.S. envoy doesn't expect a 1,000-point fall.",
     ["Germany", "'s", "U.S.", "envoy", "does", "n't", "expect", "a", "1,000-point", "fall", "."]),
    ("Shares of Acme Corp. rose 3.5% to $12.50 on 1996-08-22 (Reuters).",
     ["Shares", "of", "Acme", "Corp.", "rose", "3.5", "%", "to", "$", "12.50", "on", "1996-08-22", "(", "Reuters", ")", "."]),
    ("1. Michael Schumacher (Germany) 1:30.5 -- O'Brien won 6-4 at 10 a.m. in the U.S.",
     ["1.", "Michael", "Schumacher", "(", "Germany", ")", "1:30.5", "--", "O'Brien", "won", "6-4", "at", "10", "a.m.",
      "in", "the", "U.S", "."]),
    ("@paulwalk can't wait for #NYC!!! :) https://t.co/abc123.",
     ["@paulwalk", "ca", "n't", "wait", "for", "#NYC", "!!!", ":)", "https://t.co/abc123", "."]),
    ('"Amazon is hiring", says Jeff. Mail john.doe@gmail.com or see www.nasa.gov/mars?! $AAPL C$10',
     ['"', "Amazon", "is", "hiring", '"', ",", "says", "Jeff", ".", "Mail", "john.doe@gmail.com", "or", "see",
      "www.nasa.gov/mars", "?!", "$AAPL", "C$", "10"]),
    ("Paris!!loved it;) ok", ["Paris", "!!", "loved", "it", ";)", "ok"]),
    ("在北京大学学习 NLP", ["在", "北", "京", "大", "学", "学", "习", "NLP"]),
]


@pytest.mark.parametrize(("text", "tokens"), CONLL_CASES)
def test_conll_splitter_reproduces_conll_tokens_with_exact_offsets(text, tokens):
    spans = conll_words(text)
    assert [text[s:e] for s, e in spans] == tokens
    assert all(e0 <= s1 for (_, e0), (s1, _) in zip(spans, spans[1:]))


@pytest.mark.parametrize("split", [conll_words, char_words])
def test_splitters_keep_offsets_exact_on_odd_text(split):
    nfd = unicodedata.normalize("NFD", "Café Zoë")
    text = f"{nfd}\u00a0\t 👍🏽 👩‍💻\x07x\u3000中文\r\n"
    spans = split(text)
    words = [text[s:e] for s, e in spans]
    # Combining marks stay with their letter, an emoji sequence is one word, a control character
    # separates words (a normalizer would delete it and glue them), no word holds whitespace.
    assert "e\u0301" in "".join(words) and not any(w.startswith("\u0301") for w in words)
    assert "👍🏽" in words and "👩‍💻" in words
    assert "x" in words and not any("\x07" in w for w in words)
    assert not any(c.isspace() for w in words for c in w)
    assert "".join(words) == "".join(c for c in text if not c.isspace() and c != "\x07")


def test_char_splitter_cuts_every_character():
    text = "毕业于MBA 2005年"
    assert [text[s:e] for s, e in char_words(text)] == list("毕业于MBA2005年")


@pytest.fixture(scope="module")
def minilm():
    return AutoTokenizer.from_pretrained(embedded_model_path())


def test_raw_text_is_encoded_exactly_as_its_dataset_tokens(minilm):
    """The splitter's words take the tokenized-data path: the same sub-tokens and labelled positions."""
    text, tokens = CONLL_CASES[3]
    spans = conll_words(text)
    encoder = TextEncoder(minilm, 64, 8, words="conll")
    raw, tokenized = encoder.encode([text]), encoder.encode([text], [spans])
    assert raw[0].token_ids == tokenized[0].token_ids
    assert raw[0].word_token_starts == tokenized[0].word_token_starts
    assert list(zip(raw[0].word_char_starts, raw[0].word_char_ends)) == spans
    # The tokenizer's own words split the handle and the contraction differently.
    old = TextEncoder(minilm, 64, 8, words="pretokenizer").encode([text])[0]
    assert [text[s:e] for s, e in zip(old.word_char_starts, old.word_char_ends)][:4] == ["@", "paulwalk", "can", "'"]


def test_a_word_the_tokenizer_drops_is_no_raw_text_word(minilm):
    text = "Paris \u200b Berlin"  # a lone zero-width space: no sub-token
    enc = TextEncoder(minilm, 64, 8, words="conll").encode([text])[0]
    assert [text[s:e] for s, e in zip(enc.word_char_starts, enc.word_char_ends)] == ["Paris", "Berlin"]
    # As a dataset token it has a label, so it is kept, as [UNK].
    kept = TextEncoder(minilm, 64, 8, words="conll").encode([text], [[(0, 5), (6, 7), (8, 14)]])[0]
    assert kept.n_words == 3 and kept.unk_tokens == 1


def test_the_run_records_its_splitter_and_a_loaded_predictor_uses_it(tiny_bert_dir, tmp_path):
    run = save_tiny_run(tiny_bert_dir, tmp_path / "run", overrides=["data.words=chars"])
    assert OmegaConf.load(run / "config.yaml").data.words == "chars"
    predictor = Predictor.from_run(run, "cpu")
    assert predictor.text_encoder.words == "chars"
    enc = predictor.text_encoder.encode(["NLP 中文"])[0]
    assert enc.word_char_starts == [0, 1, 2, 4, 5]


def test_a_run_without_the_key_gets_the_default_and_a_bad_value_names_the_file(tiny_bert_dir, tmp_path):
    run = save_tiny_run(tiny_bert_dir, tmp_path / "run")
    cfg = OmegaConf.load(run / "config.yaml")
    del cfg.data["words"]  # a run trained before the key existed
    OmegaConf.save(cfg, run / "config.yaml")
    assert Predictor.from_run(run, "cpu").text_encoder.words == "conll"
    cfg.data.words = "spacy"
    OmegaConf.save(cfg, run / "config.yaml")
    with pytest.raises(ValueError, match=r"config\.yaml: data\.words='spacy' is not a word splitter"):
        Predictor.from_run(run, "cpu")


def test_an_unknown_splitter_is_a_config_error():
    validate_config(make_cfg(["data.words=pretokenizer"]))
    with pytest.raises(ConfigError, match=r"data\.words='spacy': must be one of conll\|chars\|pretokenizer"):
        validate_config(make_cfg(["data.words=spacy"]))


# Pieces that exercise every alternative of the pattern, and the spaces between them.
PIECES = [*"aZ9 .,'’-/&:;=()[]$@#+!?\n\r\t\u0301\u00e9\u4e2d\U0001F600\u200d\u2028\x07%*`\"",
          "<3", "^_^", "n't", "'s", "U.S.", "Mr.", "http://x.co", "www.a.b", "1.", " 1.", "e@x.org", ":)", "US$",
          "1,000", "3.5", "1996-08-22", "@paul", "#tag"]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30).map("".join))
def test_conll_words_are_the_patterns_matches_over_the_whole_text(text):
    # conll_words takes runs of ASCII letters and digits without the pattern: the same words
    assert conll_words(text) == _spans(_PATTERN, text)
