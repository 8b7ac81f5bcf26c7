"""The paper's four corpora by role: C4 (general), MusicPile and ChemPile (domains), FLAN (instructions).

`documents(name, split, source, seed)` is the one entry point the data layer uses:
- source="offline": the analogue that installs with the project (KJV text for C4, generators
  for the rest); no network.
- source="hub": the real dataset, streamed; raises HubUnavailable fast when the hub is unreachable.
- source="local": the hub's record format read from `data_files` (json/jsonl(.gz)/parquet), with
  the same field mapping and held-out rule as source="hub"; also a corpus of the user's own under
  any other name (its `text` field, 1 document in 200 held out by hash: registry.own_corpus).

Held-out data is fixed: it does not depend on `seed` (only the training order/content does), so
runs with different seeds are evaluated on the same documents. Train and val are disjoint by
construction (official split, held-out chapters, or a stable hash of the document text).
"""

from __future__ import annotations

from typing import Iterator

from .chem import chem_documents
from .hub import HubUnavailable, ensure_hub_reachable, hub_documents, input_files, resolve_revision
from .instruct import instruction_documents
from .music import music_documents
from .prose import KJVMissing, kjv_documents
from .registry import CORPORA, HUB_DATASET_FIELDS, CorpusSpec, corpus_spec, own_corpus
from .split import GENERATED_HELDOUT_EVERY, in_split

__all__ = ["CORPORA", "HUB_DATASET_FIELDS", "CorpusSpec", "HubUnavailable", "KJVMissing", "corpus_spec", "documents",
           "ensure_hub_reachable", "input_files", "own_corpus", "resolve_revision"]

SPLITS = ("train", "val")
SOURCES = ("offline", "hub", "local")
_GENERATORS = {"musicpile": music_documents, "chempile": chem_documents, "flan": instruction_documents}


def _generated(name: str, split: str, seed: int) -> Iterator[str]:
    # Train and val draw from different seed streams (val's is fixed), and the hash rule then
    # guarantees they never share a document even when a short document is generated twice.
    stream_seed = f"{name}:val" if split == "val" else f"{name}:train:{seed}"
    for doc in _GENERATORS[name](stream_seed):
        if in_split(doc, split, GENERATED_HELDOUT_EVERY):
            yield doc


def documents(name: str, split: str, source: str = "offline", seed: int = 0,
              data_files: str | None = None, revision: str | None = None,
              hub_dataset: dict | None = None) -> Iterator[str]:
    """Yield documents of corpus `name` for `split` ("train" or "val") in a deterministic order.

    Offline generated corpora are infinite; offline C4 (KJV) and the hub/local sources end when
    exhausted (offline C4 train: one seed-shuffled pass, ~3.9 MB; val: ~0.2 MB).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    spec = corpus_spec(name, source, hub_dataset if source == "hub" else None)  # KeyError: unknown, unless local
    if source == "offline":
        return kjv_documents(split, seed) if name == "c4" else _generated(name, split, seed)
    return hub_documents(spec, split, source, seed, data_files, revision)
