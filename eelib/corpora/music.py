"""Offline analogue of MusicPile: generated folk tunes in ABC notation, with English prose about them.

MusicPile mixes music prose (encyclopedic text, captions) with scores in ABC notation and
instruction-style chat about them (ChatMusician, arXiv 2402.16153). This generator keeps that
shape at toy scale and makes the notation dominate, so the domain is far from general prose:
- headers X: T: C: R: M: L: Q: K: (K: last, as ABC requires);
- two or three 8-bar parts with repeats `|: ... :|`, sometimes first/second endings;
- a key-aware melody: a random walk over the scale of the key (diatonic letters, so ABC's key
  signature does the accidentals), pulled onto chord tones on strong beats, ending on the tonic;
- chord symbols in quotes ("G", "Em", "D") whose quality is computed from the key;
- bar durations that add up exactly to the meter (L:1/8 units), with rhythm-specific groupings.
Documents come in three forms: prose + tune, a chat request + tune, and a short set of tunes.
"""

from __future__ import annotations

import random
from typing import Iterator

_LETTERS = "CDEFGAB"
_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_SHARP_ORDER, _FLAT_ORDER = "FCGDAEB", "BEADGCF"
_MAJOR_FIFTHS = {"C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5, "F": -1, "Bb": -2, "Eb": -3}
# Mode -> (ABC suffix, shift on the circle of fifths relative to the major key on the same tonic).
_MODES = {"major": ("", 0), "mixolydian": ("mix", -1), "dorian": ("dor", -2), "minor": ("m", -3)}
_KEYS = [("G", "major"), ("D", "major"), ("A", "major"), ("C", "major"), ("F", "major"),
         ("Bb", "major"), ("E", "minor"), ("A", "minor"), ("B", "minor"), ("D", "minor"),
         ("G", "minor"), ("D", "mixolydian"), ("A", "dorian"), ("E", "dorian"), ("G", "mixolydian")]

# rhythm -> (meter, bar length in L:1/8 units, beat length in units, tempo range)
_RHYTHMS = {
    "reel": ("4/4", 8, 2, (100, 120)), "hornpipe": ("4/4", 8, 2, (80, 100)),
    "jig": ("6/8", 6, 3, (104, 126)), "slip jig": ("9/8", 9, 3, (110, 130)),
    "polka": ("2/4", 4, 2, (120, 140)), "waltz": ("3/4", 6, 2, (90, 110)),
    "march": ("2/4", 4, 2, (96, 116)), "slide": ("12/8", 12, 3, (120, 140)),
}
_BEAT_PATTERNS = {2: [[1, 1], [1, 1], [1, 1], [2]], 3: [[1, 1, 1], [1, 1, 1], [2, 1], [3], [1, 2]]}

_ADJ = ["Windy", "Silver", "Green", "Lonely", "Merry", "Crooked", "Golden", "Stony", "Wild", "Humble",
        "Red", "Rolling", "Quiet", "Bright", "Old", "Dusty", "Frosty", "Hidden", "Long", "Sleepy"]
_NOUN = ["Harbour", "Meadow", "Fiddler", "Lantern", "Bridge", "Hill", "Mill", "Ferry", "Orchard",
         "Piper", "River", "Road", "Kitchen", "Island", "Market", "Wedding", "Shepherd", "Gate"]
_SYL = ["bal", "ly", "kil", "more", "dun", "ross", "glen", "na", "car", "rick", "ard", "more",
        "tor", "an", "bri", "don", "mal", "ven", "sco", "la"]
_FIRST = ["Mary", "John", "Nora", "Paddy", "Ellen", "Tom", "Maggie", "Hugh", "Ann", "Neil"]


class _Key:
    """Scale letters, accidentals and diatonic triads of one key."""

    def __init__(self, tonic: str, mode: str):
        suffix, shift = _MODES[mode]
        self.name, self.mode, self.tonic = tonic + suffix, mode, tonic
        fifths = _MAJOR_FIFTHS[tonic] + shift
        acc = {l: 0 for l in _LETTERS}
        for l in (_SHARP_ORDER[:fifths] if fifths > 0 else _FLAT_ORDER[:-fifths]):
            acc[l] = 1 if fifths > 0 else -1
        start = _LETTERS.index(tonic[0])
        self.letter_index = start  # diatonic position of the tonic within C..B
        self.scale = [_LETTERS[(start + i) % 7] for i in range(7)]
        self.acc = acc
        self.chords = [self._triad(d) for d in range(7)]

    def _spell(self, letter: str) -> str:
        return letter + {1: "#", -1: "b", 0: ""}[self.acc[letter]]

    def _triad(self, degree: int) -> str:
        root, third, fifth = (self.scale[(degree + k) % 7] for k in (0, 2, 4))
        pc = lambda l: _LETTER_PC[l] + self.acc[l]
        i3, i5 = (pc(third) - pc(root)) % 12, (pc(fifth) - pc(root)) % 12
        quality = "dim" if i5 == 6 else ("m" if i3 == 3 else "")
        return self._spell(root) + quality

    def long_name(self) -> str:
        return f"{self._spell(self.tonic[0])} {self.mode}"


def _abc_pitch(p: int) -> str:
    """Diatonic position (0 = middle C) -> ABC note letter with octave marks."""
    octave, letter = divmod(p, 7)
    ch = _LETTERS[letter]
    if octave <= 0:
        return ch + "," * (-octave)
    return ch.lower() + "'" * (octave - 1)


def _duration(units: int) -> str:
    return "" if units == 1 else str(units)


class _TuneWriter:
    """One tune: chooses key, rhythm and title, then writes parts bar by bar."""

    def __init__(self, rng: random.Random, number: int):
        self.rng = rng
        self.number = number
        self.key = _Key(*rng.choice(_KEYS))
        self.rhythm = rng.choice(list(_RHYTHMS))
        self.meter, self.bar_units, self.beat_units, tempo = _RHYTHMS[self.rhythm]
        self.tempo = rng.randrange(tempo[0], tempo[1] + 1, 4)
        self.title = self._title()
        self.composer = "Trad." if rng.random() < 0.5 else f"{rng.choice(_FIRST)} {self._word()}"
        self.n_parts = 2 if rng.random() < 0.8 else 3
        # Melody state: diatonic position relative to middle C; the tonic sits in the lowest
        # octave (C..B), and the walk ranges from a fourth below to an octave and a third above.
        self.tonic_p = self.key.letter_index
        self.p = self.tonic_p
        self.low, self.high = self.p, self.p

    def _word(self) -> str:
        return "".join(self.rng.choice(_SYL) for _ in range(self.rng.randint(2, 3))).capitalize()

    def _title(self) -> str:
        r, rng = self.rng.random(), self.rng
        if r < 0.4:
            return f"The {rng.choice(_ADJ)} {rng.choice(_NOUN)}"
        if r < 0.7:
            return f"{rng.choice(_FIRST)}'s {self.rhythm.title()}"
        return f"The {rng.choice(_NOUN)} of {self._word()}"

    def _step(self, chord_degree: int, strong: bool) -> int:
        rng = self.rng
        step = rng.choices([-3, -2, -1, 0, 1, 2, 3, 4], [3, 10, 30, 6, 30, 12, 4, 5])[0]
        p = self.p + step
        if strong and rng.random() < 0.6:
            # Pull strong beats onto a chord tone: the scale degrees of the bar's triad.
            tones = {(chord_degree + k) % 7 for k in (0, 2, 4)}
            for delta in (0, -1, 1, -2, 2):
                if (p + delta - self.tonic_p) % 7 in tones:
                    p += delta
                    break
        lo, hi = self.tonic_p - 3, self.tonic_p + 10  # roughly a fiddle tune's usual range
        if p < lo or p > hi:
            p = self.p - step  # reflect at the edges of the range
        self.p = max(lo, min(hi, p))
        self.low, self.high = min(self.low, self.p), max(self.high, self.p)
        return self.p

    def _bar(self, chord_degree: int, final: bool) -> str:
        rng, groups = self.rng, []
        units_left = self.bar_units
        while units_left > 0:
            beat = min(self.beat_units, units_left)
            pattern = rng.choice([q for q in _BEAT_PATTERNS[self.beat_units] if sum(q) == beat] or [[beat]])
            last_beat = units_left - beat == 0
            notes = []
            for i, d in enumerate(pattern):
                if final and last_beat and i == len(pattern) - 1:
                    self.p = self.tonic_p  # every part cadences on the tonic
                    notes.append(_abc_pitch(self.p) + _duration(d))
                elif rng.random() < 0.02:
                    notes.append("z" + _duration(d))
                else:
                    notes.append(_abc_pitch(self._step(chord_degree, i == 0)) + _duration(d))
            if self.rhythm == "hornpipe" and pattern == [1, 1] and rng.random() < 0.5:
                groups.append(">".join(notes))  # dotted "broken" rhythm typical of hornpipes
            else:
                groups.append("".join(notes))
            units_left -= beat
        chord = f'"{self.key.chords[chord_degree]}"' if rng.random() < 0.7 or final else ""
        return chord + " ".join(groups)

    def _part(self) -> str:
        rng = self.rng
        # I IV V vi ii in major-like modes; i iv v VII III in minor-like ones (no diminished chords).
        pool = [0, 3, 4, 5, 1, 4, 3] if self.key.mode in ("major", "mixolydian") else [0, 3, 4, 6, 2, 6, 3]
        degrees = [0] + [rng.choice(pool) for _ in range(5)] + [4, 0]
        bars = [self._bar(d, final=(i == 7)) for i, d in enumerate(degrees)]
        if rng.random() < 0.35:
            # First and second endings: the second ending replaces bar 8 on the repeat.
            alt = self._bar(0, final=True)
            body = " | ".join(bars[:4]) + " |\n" + " | ".join(bars[4:7]) + f" |1 {bars[7]} :|2 {alt} |]"
        else:
            body = " | ".join(bars[:4]) + " |\n" + " | ".join(bars[4:]) + " :|"
        return "|: " + body

    def abc(self) -> str:
        header = [f"X:{self.number}", f"T:{self.title}", f"C:{self.composer}", f"R:{self.rhythm}",
                  f"M:{self.meter}", "L:1/8", f"Q:1/4={self.tempo}", f"K:{self.key.name}"]
        return "\n".join(header + [self._part() for _ in range(self.n_parts)])

    def prose(self) -> str:
        rng, k = self.rng, self.key
        sentences = [
            f"\"{self.title}\" is a {self.rhythm} in {k.long_name()}, written in {self.meter} time.",
            f"The tune has {self.n_parts} parts of eight bars, and each part is played twice.",
            f"The melody moves mostly by step between {_abc_pitch(self.low)} and {_abc_pitch(self.high)} "
            f"and every part closes on the tonic, {k.scale[0]}.",
            f"The chords follow a simple pattern built on {k.chords[0]}, {k.chords[3]} and {k.chords[4]}.",
            f"A {self.rhythm} like this is usually played at about {self.tempo} beats per minute.",
            "Its composer is not known; it has been passed on by ear." if self.composer == "Trad."
            else f"It was written by {self.composer}.",
            f"In {self.meter} time each bar holds {self.bar_units} eighth notes.",
        ]
        # The sentence naming the tune leads; the others follow in random order.
        return " ".join([sentences[0]] + rng.sample(sentences[1:], rng.randint(1, 4)))


def _document(rng: random.Random, counter: list[int]) -> str:
    def tune() -> _TuneWriter:
        counter[0] += 1
        return _TuneWriter(rng, counter[0])

    form = rng.random()
    if form < 0.45:
        t = tune()
        score = t.abc()  # written first: the prose reports the range the melody actually used
        return t.prose() + "\n\n" + score
    if form < 0.8:
        t = tune()
        ask = rng.choice(["Write", "Compose", "Create"])
        return (f"User: {ask} a {t.rhythm} in {t.key.long_name()} in ABC notation.\n"
                f"Assistant: Here is a {t.rhythm} in {t.meter} time.\n{t.abc()}")
    tunes = [tune() for _ in range(rng.randint(2, 3))]
    return "\n\n".join(t.abc() for t in tunes)


def music_documents(stream_seed: str) -> Iterator[str]:
    """Infinite deterministic stream of MusicPile-like documents for one seed string."""
    rng, counter = random.Random(stream_seed), [0]
    while True:
        yield _document(rng, counter)
