"""Offline analogue of ChemPile: generated SMILES, reactions and chemistry prose.

ChemPile (jablonkagroup, arXiv 2505.12534) mixes molecule representations (SMILES, IUPAC names),
property records, reactions and educational text. This generator keeps the SMILES-heavy part:
- molecules from a small fragment grammar: carbon chains with N/O/S, branches, double and triple
  bonds, aromatic and aliphatic rings (ring-closure digits, nested up to three deep), stereo
  centres, and functional groups (acids, amides, esters, nitriles, nitro, sulfonamides, CF3...);
- reactions written `A.B>>C` (esterification, amide coupling) whose product is built from the
  reactants' SMILES;
- records and prose whose numbers are computed, not invented: molecular formula (Hill order) and
  molecular weight come from parsing the generated SMILES with `formula_of` below, which counts
  implicit hydrogens from standard valences.
Invented lab details (yields, melting points) are random and say nothing about real chemistry.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Iterator

# Standard atomic weights (IUPAC, abridged to three decimals).
ATOMIC_WEIGHT = {"H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999, "S": 32.06, "F": 18.998,
                 "Cl": 35.45, "Br": 79.904, "P": 30.974, "I": 126.904}
_VALENCES = {"C": (4,), "N": (3, 5), "O": (2,), "S": (2, 4, 6), "P": (3, 5), "F": (1,), "Cl": (1,),
             "Br": (1,), "I": (1,)}
_TOKEN = re.compile(r"(\[[^\]]+\]|Br|Cl|[BCNOPSFI]|[cnos]|%\d\d|\d|[=#\-:()/\\.])")
_BRACKET = re.compile(r"\[(\d*)([A-Z][a-z]?|[cnos])(@*)(H\d*)?([+-]\d*)?\]")
_BOND_ORDER = {"-": 1, "=": 2, "#": 3, ":": 1.5}


def formula_of(smiles: str) -> Counter:
    """Element counts (hydrogens included) of one molecule in the SMILES subset generated here.

    Implicit H of an organic-subset atom = the smallest standard valence that covers its bonds,
    minus those bonds; an aromatic carbon or nitrogen counts one extra bond for the pi system.
    Bracket atoms carry their hydrogens explicitly.
    """
    atoms: list[dict] = []  # element, aromatic, explicit H (None = implicit), bond-order sum
    prev, stack, rings, bond = None, [], {}, None

    def connect(a: int, b: int, order) -> None:
        if order is None:  # unspecified: aromatic between two aromatic atoms, else single
            order = 1.5 if atoms[a]["arom"] and atoms[b]["arom"] else 1
        for x in (a, b):
            atoms[x]["bonds"] += 1 if order == 1.5 else order
            atoms[x]["degree"] += 1

    for tok in _TOKEN.findall(smiles):
        if tok in _BOND_ORDER or tok in "/\\":
            bond = _BOND_ORDER.get(tok, 1)
        elif tok == "(":
            stack.append(prev)
        elif tok == ")":
            prev = stack.pop()
        elif tok[0] == "%" or tok.isdigit():
            if tok in rings:
                other, order = rings.pop(tok)
                connect(prev, other, bond if bond is not None else order)
            else:
                rings[tok] = (prev, bond)
            bond = None
        elif tok == ".":
            raise ValueError("formula_of takes one molecule; split reactions at '.' first")
        else:
            if tok[0] == "[":
                m = _BRACKET.fullmatch(tok)
                if m is None:
                    raise ValueError(f"unsupported bracket atom {tok!r}")
                el, h = m.group(2), m.group(4)
                atom = {"el": el, "arom": el.islower(), "h": (int(h[1:] or 1) if h else 0)}
            else:
                atom = {"el": tok, "arom": tok.islower(), "h": None}
            atom.update(bonds=0, degree=0)
            atoms.append(atom)
            if prev is not None:
                connect(prev, len(atoms) - 1, bond)
            prev, bond = len(atoms) - 1, None
    if rings or stack:
        raise ValueError(f"unbalanced rings or branches in {smiles!r}")
    counts: Counter = Counter()
    for a in atoms:
        el = a["el"].capitalize() if a["arom"] else a["el"]
        counts[el] += 1
        h = a["h"]
        if h is None:
            used = a["bonds"] + (1 if a["arom"] and el in ("C", "N") else 0)
            valence = next((v for v in _VALENCES[el] if v >= used), None)
            if valence is None:
                raise ValueError(f"{el} with {used} bonds exceeds its valence in {smiles!r}")
            h = int(valence - used)
            if a["arom"] and el in ("O", "S"):
                h = 0
        counts["H"] += h
    return +counts


def hill_formula(counts: Counter) -> str:
    """Hill order: C, then H, then the other elements alphabetically."""
    order = (["C", "H"] if "C" in counts else []) + sorted(e for e in counts if not ("C" in counts and e in "CH"))
    return "".join(e + (str(counts[e]) if counts[e] > 1 else "") for e in order)


def molecular_weight(counts: Counter) -> float:
    return sum(ATOMIC_WEIGHT[e] * n for e, n in counts.items())


# ---------------------------------------------------------------- the fragment grammar
# Each ring template: atoms in order; the first atom bonds to the chain before the ring, the last
# one to the chain after it, so only middle positions may carry a substituent. The last atom is
# never O or S: it takes three bonds (two in the ring, one onward).
_RINGS = [("c", "ccccc", "aromatic"), ("c", "ccncc", "aromatic"), ("c", "ccsc", "aromatic"),
          ("c", "ccoc", "aromatic"), ("C", "CCCCC", "aliphatic"), ("C", "CCCC", "aliphatic"),
          ("C", "COCCN", "aliphatic"), ("C", "CCNCC", "aliphatic")]
_SUBSTITUENTS = ["F", "Cl", "Br", "O", "N", "C", "CC", "C#N", "C(=O)O", "C(=O)N", "OC", "C(F)(F)F",
                 "[N+](=O)[O-]", "S(=O)(=O)N", "C(C)C", "OC(C)=O", "NC(C)=O", "C=O"]


def _substituent(rng: random.Random, ring_level: int) -> str:
    if ring_level < 2 and rng.random() < 0.2:
        return _chain(rng, rng.randint(1, 3), ring_level)
    return rng.choice(_SUBSTITUENTS)


def _ring(rng: random.Random, ring_level: int) -> str:
    first, middle, _ = rng.choice(_RINGS)
    digit = str(ring_level + 1)  # inner rings close before outer ones, so depth picks the digit
    out = [first + digit]
    for i, atom in enumerate(middle[:-1]):
        out.append(atom)
        substitutable = atom in "cC" and rng.random() < 0.25
        if substitutable:
            out.append("(" + _substituent(rng, ring_level + 1) + ")")
    out.append(middle[-1] + digit)
    return "".join(out)


def _chain(rng: random.Random, n: int, ring_level: int) -> str:
    """n units; a unit is an atom (with 0-2 branches), a C=C or C(=O) pair, or a ring."""
    parts, prev = [], ""
    for i in range(n):
        inner = 0 < i < n - 1
        r = rng.random()
        if r < 0.18 and ring_level < 3:
            parts.append(_ring(rng, ring_level))
            prev = "ring"
            continue
        if r < 0.26 and prev not in ("=", "O"):
            parts.append(rng.choice(["C=C", "C(=O)", "C#C"] if inner else ["C=C", "C(=O)"]))
            prev = "="
            continue
        atom = rng.choices(["C", "N", "O", "S"], [70, 12, 12, 6])[0]
        if atom in "OS" and prev in ("O", "S", ""):
            atom = "C"  # no O-O / O-S links, and heteroatoms do not start a chain
        branches = 0
        if atom == "C":
            branches = rng.choices([0, 1, 2], [60, 30, 10])[0]
        elif atom == "N":
            branches = rng.choices([0, 1], [70, 30])[0]
        if atom == "C" and branches == 1 and inner and rng.random() < 0.15:
            atom = rng.choice(["[C@H]", "[C@@H]"])  # stereocentre: H + prev + branch + next = 4
        parts.append(atom + "".join("(" + _substituent(rng, ring_level) + ")" for _ in range(branches)))
        prev = atom if atom in ("O", "S") else "C"
    return "".join(parts)


def random_smiles(rng: random.Random) -> str:
    return _chain(rng, rng.randint(2, 9), 0)


# ---------------------------------------------------------------- documents
_STATES = ["white solid", "colourless oil", "pale yellow solid", "off-white powder", "clear liquid"]
_SOLVENTS = ["dichloromethane", "ethanol", "THF", "DMF", "toluene", "ethyl acetate", "water"]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _describe(smiles: str) -> dict:
    counts = formula_of(smiles)
    heavy = sum(n for e, n in counts.items() if e != "H")
    return {"smiles": smiles, "formula": hill_formula(counts), "mw": molecular_weight(counts),
            "heavy": heavy, "rings": sum(t.isdigit() for t in _TOKEN.findall(smiles)) // 2,
            "aromatic": sum(ch in "cnos" for ch in re.sub(r"Cl|Br", "", smiles)),
            "hetero": sum(n for e, n in counts.items() if e not in ("C", "H"))}


def _compound_record(rng: random.Random, ident: int) -> str:
    d = _describe(random_smiles(rng))
    lines = [f"Compound {ident}", f"SMILES: {d['smiles']}", f"Molecular formula: {d['formula']}",
             f"Molecular weight: {d['mw']:.2f} g/mol", f"Heavy atoms: {d['heavy']}",
             f"Heteroatoms: {d['hetero']}", f"Rings: {d['rings']}", f"Aromatic atoms: {d['aromatic']}"]
    return "\n".join(lines)


def _prose(rng: random.Random) -> str:
    d = _describe(random_smiles(rng))
    sentences = [
        f"The molecule {d['smiles']} has the formula {d['formula']} and a molecular weight of {d['mw']:.2f} g/mol.",
        f"It contains {d['heavy']} heavy atoms, {d['hetero']} of them heteroatoms.",
        ("It has no aromatic ring." if d["aromatic"] == 0 else f"{d['aromatic']} of its atoms are aromatic."),
        f"The product was obtained as {_article(rng.choice(_STATES))} in {rng.randint(35, 98)}% yield after "
        f"purification in {rng.choice(_SOLVENTS)}.",
        f"Its melting point was recorded as {rng.randint(40, 260)} °C.",
    ]
    return " ".join(sentences[:3] + rng.sample(sentences[3:], rng.randint(0, 2)))


def _reaction(rng: random.Random) -> str:
    # R is written from its attachment atom, so it can follow the carbonyl carbon directly.
    r1, r2 = random_smiles(rng), rng.choice(["C", "CC", "CCC", "CC(C)C", "Cc1ccccc1", "CCO"])
    if rng.random() < 0.5:
        kind, a, b, prod = "esterification", f"OC(=O){r1}", f"O{r2}", f"O=C(O{r2}){r1}"
    else:
        kind, a, b, prod = "amide coupling", f"OC(=O){r1}", f"N{r2}", f"O=C(N{r2}){r1}"
    pa, pp = _describe(a), _describe(prod)
    return (f"Reaction: {a}.{b}>>{prod}\nType: {kind}\n"
            f"Acid: {pa['formula']} ({pa['mw']:.2f} g/mol); product: {pp['formula']} ({pp['mw']:.2f} g/mol); "
            f"solvent: {rng.choice(_SOLVENTS)}; yield {rng.randint(30, 97)}%.")


def _table(rng: random.Random) -> str:
    rows = ["smiles\tformula\tmw"]
    for _ in range(rng.randint(4, 12)):
        d = _describe(random_smiles(rng))
        rows.append(f"{d['smiles']}\t{d['formula']}\t{d['mw']:.2f}")
    return "\n".join(rows)


def chem_documents(stream_seed: str) -> Iterator[str]:
    """Infinite deterministic stream of ChemPile-like documents for one seed string."""
    rng, ident = random.Random(stream_seed), 0
    while True:
        target, parts = rng.randint(300, 1500), []
        while sum(len(p) for p in parts) < target:
            r = rng.random()
            if r < 0.35:
                ident += 1
                parts.append(_compound_record(rng, ident))
            elif r < 0.6:
                parts.append(_prose(rng))
            elif r < 0.85:
                parts.append(_reaction(rng))
            else:
                parts.append(_table(rng))
        yield "\n\n".join(parts)
