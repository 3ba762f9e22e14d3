"""Generate the synthetic sample in data/sample (CoNLL columns, IOB2).

Real corpora (CoNLL-2003 is Reuters text) cannot be redistributed, so the default run trains
on templated English news-style sentences. Deterministic: `python data/sample/make_sample.py`.
"""
import random
from pathlib import Path

PER = ["Angela Merkel", "John Smith", "Maria Garcia", "Wei Zhang", "Olga Petrova", "Ahmed Hassan", "Laura Chen",
       "Pierre Dubois", "Kenji Tanaka", "Sarah O'Neill", "David Miller", "Ana Souza", "Tom Hanks", "Nina Berg"]
LOC = ["Berlin", "New York", "Paris", "Tokyo", "Brazil", "Kenya", "Lake Geneva", "South Africa", "Madrid",
       "Toronto", "the Alps", "Cairo", "Oslo", "Buenos Aires", "Hong Kong"]
ORG = ["Siemens", "the United Nations", "Reuters", "Toyota Motor Corp", "the World Bank", "Ajax Amsterdam",
       "Goldman Sachs", "the European Commission", "Nokia", "Real Madrid", "Airbus", "the Red Cross"]
MISC = ["German", "Olympic", "French", "Nobel Prize", "World Cup", "Japanese", "Euro", "Christmas", "Brazilian"]
TEMPLATES = [
    "{PER} met {PER} in {LOC} on Monday .",
    "{ORG} said profits rose 12 percent in {LOC} .",
    "{PER} , chief executive of {ORG} , resigned on Friday .",
    "The {MISC} delegation arrived in {LOC} ahead of the {MISC} talks .",
    "{ORG} shares fell 3.5 percent after {PER} warned of weaker demand .",
    "{PER} scored twice as {ORG} beat {ORG} 2-1 in {LOC} .",
    "Police in {LOC} said {PER} was arrested late on Tuesday .",
    "{ORG} will open a new plant near {LOC} , {PER} told reporters .",
    "A {MISC} court in {LOC} fined {ORG} 2 million euros .",
    "{PER} won the {MISC} title for the third time .",
    "Talks between {ORG} and {ORG} ended without agreement .",
    "Flights from {LOC} to {LOC} were cancelled because of snow .",
    "Prices rose slightly in the week to Friday , traders said .",
    "{PER} will visit {LOC} and {LOC} next month .",
]
FILLERS = {"PER": PER, "LOC": LOC, "ORG": ORG, "MISC": MISC}


def sentence(rng: random.Random) -> list[tuple[str, str]]:
    out = []
    for piece in rng.choice(TEMPLATES).split():
        label = piece.strip("{}")
        if label in FILLERS:
            words = rng.choice(FILLERS[label]).split()
            out += [(w, ("B-" if i == 0 else "I-") + label) for i, w in enumerate(words)]
        else:
            out.append((piece, "O"))
    return out


def write(path: Path, n: int, rng: random.Random) -> None:
    lines = []
    for i in range(n):
        if i % 20 == 0:
            lines += ["-DOCSTART- O", ""]
        lines += [f"{w} {t}" for w, t in sentence(rng)] + [""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    here = Path(__file__).parent
    write(here / "train.conll", 600, random.Random(1))
    write(here / "dev.conll", 150, random.Random(2))
