import pytest

from nerkit.data.batching import remove_overlaps
from nerkit.data.schemes import Span, TagError, get_scheme


@pytest.mark.parametrize("name", ["BIO", "BIOES"])
def test_encode_decode_roundtrip(name):
    scheme = get_scheme(name)
    spans = [Span(0, 2, "PER"), Span(3, 4, "LOC"), Span(4, 7, "ORG")]
    tags = scheme.encode(spans, 8)
    assert scheme.decode(tags) == (spans, 0)


def test_bioes_tags_and_bmes_spelling():
    assert get_scheme("BIOES").encode([Span(0, 1, "X"), Span(1, 4, "Y")], 4) == ["S-X", "B-Y", "I-Y", "E-Y"]
    assert get_scheme("BMES").decode(["B-Y", "M-Y", "E-Y", "S-X", "O"]) == ([Span(0, 3, "Y"), Span(3, 4, "X")], 0)


def test_i_without_b_is_repaired_and_counted():
    spans, repairs = get_scheme("BIO").decode(["O", "I-PER", "I-PER", "B-LOC", "I-ORG"])
    assert spans == [Span(1, 3, "PER"), Span(3, 4, "LOC"), Span(4, 5, "ORG")]
    assert repairs == 2


def test_bioes_unterminated_entity_is_closed_and_counted():
    spans, repairs = get_scheme("BIOES").decode(["B-PER", "I-PER", "O", "E-LOC"])
    assert spans == [Span(0, 2, "PER"), Span(3, 4, "LOC")]
    assert repairs == 2


@pytest.mark.parametrize("tag", ["B", "X-PER", "B-", "S-PER"])
def test_tags_outside_the_scheme_are_rejected(tag):
    with pytest.raises(TagError):
        get_scheme("BIO").split(tag)


def test_allowed_transitions():
    start, end, transition = get_scheme("BIO").allowed(["O", "B-PER", "I-PER", "B-LOC"])
    assert not transition[0, 2] and not transition[3, 2] and transition[1, 2]  # O / B-LOC -> I-PER; B-PER -> I-PER
    assert not start[2] and end.all()
    start, end, transition = get_scheme("BIOES").allowed(["O", "B-PER", "I-PER", "E-PER", "S-LOC"])
    assert not transition[1, 0] and transition[3, 4]  # B-PER -> O; E-PER -> S-LOC
    assert not end[2] and not end[1] and end[3] and start[4]


def test_one_span_with_two_labels_keeps_the_same_label_whatever_the_order():
    spans = [(0, 2, "PER"), (0, 2, "LOC"), (1, 3, "ORG")]
    assert remove_overlaps(spans) == remove_overlaps(spans[::-1]) == ([(0, 2, "LOC")], 2)
