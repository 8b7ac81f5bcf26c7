"""The one rule that decides train vs held-out for every corpus that has no official split.

A document is held out when a stable hash of its text falls in bucket 0 of `k` buckets. The rule
depends only on the text, so it is the same on every machine, Python version, seed and source
(offline, hub, local files): the hub path and its local-fixture tests share it exactly, and train
and val can never overlap, whatever order the stream comes in.

Python's built-in `hash` is salted per process, so blake2b is used instead.
"""

from __future__ import annotations

import hashlib

# 1 in 200 for the real (large) corpora: a few thousand documents of MusicPile's millions is a
# stable loss estimate and costs nothing measurable of the training data.
HUB_HELDOUT_EVERY = 200
# 1 in 10 for generated corpora: the val stream has to reject the other 9 documents, so a larger
# held-out share keeps the val stream fast (see docs/corpora.md for the measured speeds).
GENERATED_HELDOUT_EVERY = 10


def stable_hash(text: str) -> int:
    """64-bit hash of `text`, identical across processes and platforms."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def is_heldout(text: str, every: int) -> bool:
    """True when `text` belongs to the held-out split (1 document in `every`)."""
    return stable_hash(text) % every == 0


def in_split(text: str, split: str, every: int) -> bool:
    """True when `text` belongs to `split` ("train" or "val") under the 1-in-`every` rule."""
    return is_heldout(text, every) == (split == "val")
