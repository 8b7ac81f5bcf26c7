"""Offline analogue of FLAN: instruction -> response pairs from many templated tasks.

FLAN (Wei et al. 2021; the Flan 2022 collection, Longpre et al. 2023) renders many NLP tasks as
natural-language instructions with several phrasings per task, zero-shot and few-shot. This
generator keeps that shape with tasks whose answers are computed, so every response is correct:
reading comprehension over a generated passage, arithmetic, sorting, reversing, letter and word counting, case changes, comparisons, yes/no
questions (even, prime, palindrome), word filtering, unit conversion, weekday arithmetic, list
min/max/dedup and digit sums. About a third of the prompts are few-shot: solved examples of the
same task come first, as in FLAN's "fs" templates, which also spreads document lengths.

A record is a dict in the hub's own layout ({"inputs", "targets", "task"}) and is rendered by
`render`, the same function the hub and local loaders use, so offline and real FLAN documents
have one format: "Instruction: ...\nResponse: ...".
"""

from __future__ import annotations

import random
from typing import Callable, Iterator

_WORDS = ["apple", "river", "stone", "garden", "window", "silver", "candle", "forest", "market",
          "pencil", "rocket", "island", "yellow", "bridge", "shadow", "planet", "kitten", "ladder",
          "butter", "coffee", "winter", "summer", "engine", "button", "mirror", "bottle", "circle",
          "dragon", "flower", "guitar", "hammer", "jacket", "lemon", "meadow", "needle", "orange",
          "pepper", "rabbit", "saddle", "tunnel", "violin", "wagon", "basket", "cactus", "dinner"]
_PALINDROMES = ["level", "radar", "civic", "kayak", "refer", "rotor", "madam", "noon", "stats"]
_SUBJECTS = ["the farmer", "a small dog", "my neighbour", "the teacher", "an old sailor", "the children",
             "the baker", "a young artist", "the doctor", "our team"]
_VERBS = ["painted", "carried", "found", "watched", "built", "cleaned", "opened", "borrowed", "sold", "fixed"]
_OBJECTS = ["a red wagon", "the broken fence", "three baskets", "the heavy door", "a silver bell",
            "the garden gate", "an orange kite", "the wooden boat", "a warm coat", "the tall ladder"]
_PLACES = ["near the river", "before dinner", "in the morning", "at the market", "after the storm",
           "behind the barn", "on a quiet street", "during the festival"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_UNITS = [("kilometres", "metres", 1000), ("kilograms", "grams", 1000), ("hours", "minutes", 60),
          ("minutes", "seconds", 60), ("metres", "centimetres", 100), ("litres", "millilitres", 1000),
          ("days", "hours", 24), ("weeks", "days", 7)]


def render(inputs: str, targets: str) -> str:
    """One FLAN-style record as one training document (shared by offline, hub and local sources)."""
    return f"Instruction: {inputs.strip()}\nResponse: {targets.strip()}"


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_PLACES)}".capitalize() + "."


def _numbers(rng: random.Random, n: int, lo: int = -50, hi: int = 200) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


# Each task returns (question, answer, args); `args` lets tests recompute the answer independently.
def _arithmetic(rng):
    a, b, op = rng.randint(-99, 999), rng.randint(0, 999), rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(-40, 40), rng.randint(0, 40)
    ans = {"+": a + b, "-": a - b, "*": a * b}[op]
    q = rng.choice(["What is {e}?", "Compute {e}.", "Calculate the value of {e}.", "Solve: {e} ="])
    return q.format(e=f"{a} {op} {b}"), str(ans), (a, op, b)


def _sort(rng):
    xs, desc = _numbers(rng, rng.randint(3, 9)), rng.random() < 0.4
    order = "descending" if desc else "ascending"
    q = rng.choice([f"Sort these numbers in {order} order: {{l}}", f"Arrange in {order} order: {{l}}",
                    f"Put the following list in {order} order.\n{{l}}"])
    return q.format(l=", ".join(map(str, xs))), ", ".join(map(str, sorted(xs, reverse=desc))), (xs, desc)


def _reverse(rng):
    w = rng.choice(_WORDS)
    q = rng.choice(["Reverse the word \"{w}\".", "Write \"{w}\" backwards.", "Spell {w} in reverse order."])
    return q.format(w=w), w[::-1], (w,)


def _count_letter(rng):
    w = rng.choice(_WORDS)
    letter = rng.choice(w) if rng.random() < 0.8 else rng.choice("xyzq")
    q = rng.choice(["How many times does the letter \"{c}\" appear in \"{w}\"?",
                    "Count the occurrences of '{c}' in the word {w}."])
    return q.format(c=letter, w=w), str(w.count(letter)), (w, letter)


def _capitalize(rng):
    s = _sentence(rng).lower()
    if rng.random() < 0.5:
        return f"Convert to upper case: {s}", s.upper(), (s, "upper")
    return f"Capitalize the first letter of every word: {s}", " ".join(t[:1].upper() + t[1:] for t in s.split()), (s, "title")


def _compare(rng):
    a, b = rng.randint(-500, 500), rng.randint(-500, 500)
    q = rng.choice(["Which is larger, {a} or {b}?", "Which number is greater: {a} or {b}?"])
    ans = str(a) if a > b else (str(b) if b > a else "They are equal.")
    return q.format(a=a, b=b), ans, (a, b)


def _yes_no(rng):
    kind = rng.choice(["even", "prime", "palindrome"])
    if kind == "even":
        n = rng.randint(0, 9999)
        return f"Is {n} an even number? Answer yes or no.", "yes" if n % 2 == 0 else "no", (kind, n)
    if kind == "prime":
        n = rng.randint(2, 200)
        return f"Is {n} a prime number? Answer yes or no.", "yes" if _is_prime(n) else "no", (kind, n)
    w = rng.choice(_PALINDROMES + _WORDS)
    return f"Is \"{w}\" a palindrome? Answer yes or no.", "yes" if w == w[::-1] else "no", (kind, w)


def _word_list(rng):
    words = rng.sample(_WORDS, rng.randint(4, 9))
    if rng.random() < 0.5:
        return "Sort these words alphabetically: " + ", ".join(words), ", ".join(sorted(words)), (words, "sort")
    letter = rng.choice([w[0] for w in words])
    hits = [w for w in words if w.startswith(letter)]
    return (f"From the list {', '.join(words)}, list the words that start with \"{letter}\".",
            ", ".join(hits), (words, letter))


def _convert(rng):
    big, small, factor = rng.choice(_UNITS)
    if rng.random() < 0.25:
        c = rng.randint(-30, 45)
        return f"Convert {c} degrees Celsius to Fahrenheit.", f"{_fmt(c * 9 / 5 + 32)} degrees Fahrenheit", (c,)
    x = rng.randint(1, 60) if rng.random() < 0.7 else rng.randint(1, 99) / 2
    return (f"How many {small} are in {_fmt(x)} {big}?", f"{_fmt(x * factor)} {small}", (x, factor))


def _count_words(rng):
    s = _sentence(rng)
    return f"How many words are in this sentence? {s}", str(len(s.split())), (s,)


def _minmax(rng):
    xs, want = _numbers(rng, rng.randint(4, 10)), rng.choice(["largest", "smallest"])
    ans = max(xs) if want == "largest" else min(xs)
    return f"What is the {want} number in this list: {', '.join(map(str, xs))}?", str(ans), (xs, want)


def _dedupe(rng):
    xs = [rng.randint(1, 9) for _ in range(rng.randint(5, 12))]
    out = list(dict.fromkeys(xs))
    return (f"Remove the duplicates from {xs}, keeping the first occurrence of each number.", str(out), (xs,))


def _weekday(rng):
    d, k = rng.randrange(7), rng.randint(1, 30)
    return f"What day of the week is {k} days after {_DAYS[d]}?", _DAYS[(d + k) % 7], (d, k)


def _reading(rng):
    """A short story, then a question answered by exactly one of its sentences (FLAN's
    reading-comprehension tasks give longer prompts; this keeps their passage-then-question shape)."""
    facts = []
    for _ in range(rng.randint(3, 7)):
        facts.append((rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_PLACES)))
    story = " ".join(f"{s} {v} {o} {p}".capitalize() + "." for s, v, o, p in facts)
    # Ask about a (verb, object) pair that occurs once, so the answer is unambiguous.
    pairs = [(v, o) for _, v, o, _ in facts]
    unique = [f for f in facts if pairs.count((f[1], f[2])) == 1]
    if not unique:
        return f"Read the passage and count its sentences.\n\n{story}", str(len(facts)), (story,)
    subj, verb, obj, _ = rng.choice(unique)
    return (f"Read the passage and answer the question.\n\n{story}\n\nQuestion: Who {verb} {obj}?",
            subj.capitalize() + ".", (facts, verb, obj))


def _digit_sum(rng):
    n = rng.randint(10, 10 ** rng.randint(2, 9))
    return f"What is the sum of the digits of {n}?", str(sum(map(int, str(n)))), (n,)


TASKS: dict[str, Callable] = {
    "arithmetic": _arithmetic, "sort_numbers": _sort, "reverse_word": _reverse,
    "count_letter": _count_letter, "change_case": _capitalize, "compare_numbers": _compare,
    "yes_no": _yes_no, "word_list": _word_list, "unit_conversion": _convert,
    "count_words": _count_words, "min_max": _minmax, "dedupe": _dedupe, "weekday": _weekday,
    "digit_sum": _digit_sum, "reading": _reading,
}


def make_record(rng: random.Random, task: str | None = None) -> dict:
    """One {"inputs", "targets", "task", "args"} record; few-shot prompts include solved examples."""
    name = task or rng.choice(list(TASKS))
    fn = TASKS[name]
    question, answer, args = fn(rng)
    if rng.random() < 0.35:
        shots = [fn(rng) for _ in range(rng.randint(1, 5))]
        demo = "\n\n".join(f"Q: {q}\nA: {a}" for q, a, _ in shots)
        question = f"{demo}\n\nQ: {question}\nA:"
    return {"inputs": question, "targets": answer, "task": name, "args": args}


def instruction_documents(stream_seed: str) -> Iterator[str]:
    """Infinite deterministic stream of rendered instruction documents for one seed string."""
    rng = random.Random(stream_seed)
    while True:
        r = make_record(rng)
        yield render(r["inputs"], r["targets"])
