"""Word splitters: how raw text is cut into the words the model labels (config key ``data.words``).

A model trained on tokenized data (CoNLL columns) learned labels on the dataset's tokens, each
carried by its first sub-token. Raw text must be cut into the same units, or a word the data
kept whole (``@paulwalk``, ``U.S.``, ``Germany's`` -> ``Germany`` ``'s``) starts a second word at a
sub-token that was never a labelled position. The splitter is recorded in the run's config,
so a loaded model cuts text as its training data was cut:

- ``conll``: CoNLL/Penn-Treebank-like tokens: punctuation on its own, clitics split
  (``does n't``, ``Germany 's``), and whole: abbreviations (``U.S.``, ``Corp.``), numbers
  (``1,000``, ``3.5``, ``1996-08-22``), hyphenated words, handles, hashtags, URLs, e-mail
  addresses, emoticons; every CJK ideograph on its own.
- ``chars``: every character (grapheme) on its own, for one-character-per-line data (Chinese).
- ``pretokenizer``: the tokenizer's own pre-tokenizer words (whitespace and punctuation split).

Splitters return character spans ``[start, end)`` into the text; control characters separate
words (BERT-style normalizers delete them, which would glue their neighbours together).
"""
from __future__ import annotations

from typing import Callable

import regex
from omegaconf import DictConfig

WORD_SPLITTERS = ("conll", "chars", "pretokenizer")
DEFAULT_WORDS = "conll"

# Control characters other than whitespace: separators, replaced by a space of the same length.
CONTROLS_TO_SPACE = {c: " " for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if chr(c) not in "\t\n\r"}

# Abbreviations that keep their period in Penn-Treebank-style data (besides single letters, "U.S."-like
# dotted forms and list numbers at the start of a line, handled by the pattern).
_ABBREVIATIONS = (
    "Mr Mrs Ms Dr Prof Jr Sr St Mt Ft Gen Gov Sen Rep Lt Col Sgt Capt Cmdr Adm Rev Hon "
    "Inc Corp Co Ltd Bros Cos Plc Assn Dept Univ vs etc approx "
    "Jan Feb Apr Jun Jul Aug Sep Sept Oct Nov Dec Tue Tues Thu Thur Thurs Fri "
    "Ala Ariz Ark Calif Colo Conn Fla Ga Kan Kans Ky Md Mich Minn Mont Neb Nev Okla Tenn Tex Va Vt Wis Wyo"
).split()

_LETTER = r"[\p{L}\p{M}--\p{Han}]"  # letters and their combining marks; CJK ideographs stand alone
_ALNUM = rf"(?:{_LETTER}|\p{{N}})"
_APOSTROPHE = "['\u2019]"
_CLITIC = rf"{_APOSTROPHE}(?i:s|m|d|re|ve|ll)(?!{_ALNUM})"
_NOT = rf"(?i:n{_APOSTROPHE}t)(?!{_ALNUM})"
# Alphanumeric runs joined by inner connectors: hyphenated words, O'Brien (not a clitic), S&P,
# 1996/97, a.m, U.S, and digit groups 1,000 / 3.5 / 10:30.
# A dot joins digits (3.5) or a short letter group (U.S, a.m, google.com), not glued sentences.
_DOT = rf"(?:(?<=\p{{N}})\.(?=\p{{N}})|\.(?={_LETTER}{{1,3}}(?!{_LETTER})))"
_JOINED = (rf"{_ALNUM}+(?:(?:[-/&]|{_DOT}|(?!{_CLITIC}|{_NOT}){_APOSTROPHE}){_ALNUM}+"
           rf"|(?<=\p{{N}})[,:](?=\p{{N}}){_ALNUM}+)*")
_ABBREVIATION = rf"(?:(?i:{'|'.join(_ABBREVIATIONS)})|\p{{Lu}}|(?:{_ALNUM}+-)*{_ALNUM}+(?:\.{_ALNUM}+)+)"
_PATTERN = regex.compile(
    rf"""
      (?:https?://|www\.)[^\s<>"]+?(?=[.,;:!?)\]'"]*(?:\s|$))        # URL, without trailing punctuation
    | [\p{{L}}\p{{N}}_.+-]+@[\p{{L}}\p{{N}}-]+(?:\.[\p{{L}}\p{{N}}-]+)+       # e-mail address
    | (?:[@\#]|\$(?=\p{{L}}))[\p{{L}}\p{{M}}\p{{N}}_]+                      # handle, hashtag, cashtag
    | (?<![^\s\p{{L}}])(?:[:;=][-o^']?[)(\]\[dDpP/\\|*]+|<3+|\^_*\^)(?![\p{{L}}\p{{N}}])  # emoticon
    | \p{{Lu}}{{1,3}}\$                                                # currency: US$, C$, HK$
    | {_LETTER}+?(?={_NOT})                                      # do|n't, ca|n't
    | {_NOT} | {_CLITIC}                                          # n't, 's, 're ...
    | (?<=^|\n)\s*\p{{N}}+\.(?=\s)                                   # 1. (a list number at a line start)
    | (?<![\p{{L}}\p{{N}}])[+-]?\.?(?=\p{{N}}){_JOINED}(?:=(?!\S))?     # +44, -3, .500, 10= (a tie)
    | {_ABBREVIATION}\.(?=[\s\p{{Pe}}\p{{Pf}}"',;:.])(?!\W*$)        # U.S., Corp., J. (not ending the text)
    | {_JOINED}                                                  # words, numbers
    | \p{{Han}}                                                    # one CJK ideograph
    | [!?]{{2,}}                                                 # !!! ?! ??
    | ([\p{{P}}\p{{Sm}}\p{{Sc}}--[@\#\p{{Ps}}\p{{Pe}}\p{{Pi}}\p{{Pf}}"']])\1*       # a punctuation run: -- ... !!
    | \X                                                         # anything else: an emoji, with its modifiers
    """,
    regex.VERBOSE | regex.V1,
)
_GRAPHEME = regex.compile(r"\X", regex.V1)
_NON_SPACE = regex.compile(r"\S+", regex.V1)  # the pattern's own idea of a space


def _word(m: regex.Match) -> tuple[int, int]:
    """A match's span without the leading spaces some alternatives take (a list number's)."""
    return m.start() + len(m[0]) - len(m[0].lstrip()), m.end()


def _spans(pattern: regex.Pattern, text: str) -> list[tuple[int, int]]:
    text = text.translate(CONTROLS_TO_SPACE)
    return [_word(m) for m in pattern.finditer(text) if not m[0].isspace()]


def conll_words(text: str) -> list[tuple[int, int]]:
    """CoNLL/Penn-Treebank-like words of ``text`` as character spans: ``_PATTERN``'s matches over
    the whole text. A run of ASCII letters and digits between spaces is one such match whatever
    the alternatives (none of them splits it or reaches past a space into it), and most words are
    such runs, so they are taken as they are; the pattern scans the rest from where the word
    before ended, which is where a scan of the whole text would be, its lookarounds seeing the
    same text. On CoNLL-2003 sentences a third of the time of scanning everything."""
    text = text.translate(CONTROLS_TO_SPACE)
    words: list[tuple[int, int]] = []
    scanned = 0  # the pattern's matches so far cover text[:scanned]
    for run in _NON_SPACE.finditer(text):
        start, end = run.span()
        if end <= scanned:
            continue
        if start >= scanned and run[0].isascii() and run[0].isalnum():
            words.append((start, end))
            scanned = end
            continue
        for m in _PATTERN.finditer(text, scanned):
            if not m[0].isspace():
                words.append(_word(m))
            scanned = m.end()
            if scanned >= end:
                break
    return words


def char_words(text: str) -> list[tuple[int, int]]:
    """Every non-space character (grapheme: a letter with its combining marks, an emoji sequence)."""
    return _spans(_GRAPHEME, text)


def word_splitter(name: str) -> Callable[[str], list[tuple[int, int]]] | None:
    """The splitter named by ``data.words``; None for ``pretokenizer`` (the tokenizer's words)."""
    if name not in WORD_SPLITTERS:
        raise ValueError(f"unknown word splitter {name!r}: must be one of {', '.join(WORD_SPLITTERS)}")
    return {"conll": conll_words, "chars": char_words, "pretokenizer": None}[name]


def words_of(cfg: DictConfig, source: str = "the config") -> str:
    """The splitter a training config or a run's config.yaml names (``data.words``); a run that
    predates the key gets the default."""
    data = cfg.get("data")
    name = data.get("words", DEFAULT_WORDS) if isinstance(data, DictConfig) else DEFAULT_WORDS
    if name not in WORD_SPLITTERS:
        raise ValueError(f"{source}: data.words={name!r} is not a word splitter: must be one of {', '.join(WORD_SPLITTERS)}")
    return name
