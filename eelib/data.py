"""Tokenizers and tokenized corpora: the token budgets of §3 turned into fixed windows.

A corpus split becomes a `Windows` array of shape [n, seq_len]: documents in their stream order,
each followed by an end-of-document token, packed and cut at exactly n·seq_len tokens. So every
budget is counted in whole windows and a budget of B tokens delivers exactly ⌊B/seq_len⌋·seq_len.
Prefixes are nested by construction: the 30M D_post is the first 30M tokens of the 150M one (§4.1).

Token arrays are uint16 shards (both tokenizers have < 65,536 ids) cached under the cache root,
keyed by everything that produced them, with a manifest; they are read back as memmaps.
"""
from __future__ import annotations

import fcntl
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eelib.config import DataConfig, digest
from eelib.io import atomic_write_json, check_free_disk, sha256_file

CORPUS_SEED = 0  # the corpora's content is fixed; the run seed varies init and order (decisions.md)


class ByteTokenizer:
    """UTF-8 bytes 0..255, plus end-of-document (256) and a spare pad id (257). Offline, exact."""
    vocab_size = 258
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """The SmolLM2 tokenizer (vocab 49,152) for the paper-scale path (needs the hub once)."""
    hub_id = "HuggingFaceTB/SmolLM2-135M"

    def __init__(self):
        from eelib.corpora import CORPORA, HubUnavailable, ensure_hub_reachable
        try:
            ensure_hub_reachable(CORPORA["c4"])
        except HubUnavailable as e:
            raise HubUnavailable(f"tokenizer {self.hub_id}: the Hugging Face hub cannot be reached; "
                                 "use data.tokenizer: bytes with data.source: offline") from e
        from transformers import AutoTokenizer
        self.tok = AutoTokenizer.from_pretrained(self.hub_id)
        self.vocab_size = 49152
        self.eos_id = self.tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids))


def get_tokenizer(name: str):
    if name == "bytes":
        return ByteTokenizer()
    if name == "smollm2":
        return HFTokenizer()
    raise ValueError(f"data.tokenizer: unknown tokenizer {name!r}; use bytes or smollm2")


@dataclass
class Windows:
    """`tokens`: [n, seq_len] int array; `corpus`/`split` say where it came from."""
    corpus: str
    split: str
    tokens: np.ndarray

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.size)


PROGRESS_EVERY = 1 << 22  # tokens between progress records while tokenizing (resume points)


def _tokenize_to_shard(docs, tokenizer, n_tokens: int, final: Path, meta: dict) -> None:
    """Tokenize `docs` into a uint16 .npy shard of exactly n_tokens, resumably, then publish it.

    The shard is filled in place through a memmap under <cache>/partial/; every PROGRESS_EVERY
    tokens the position (tokens filled, documents consumed) is recorded atomically, after whole
    documents only. An interrupted build resumes from that record, skipping the consumed documents.
    The finished file gets a manifest (source, token and document counts, sha256) and is renamed
    into place: readers only ever see complete shards.
    """
    partial = final.parent / "partial" / final.name
    progress = partial.with_suffix(".progress.json")
    if partial.exists() and progress.exists():
        arr = np.lib.format.open_memmap(partial, mode="r+")
        st = json.loads(progress.read_text())
        docs = itertools.islice(docs, st["documents"], None)
    else:
        check_free_disk(final.parent, n_tokens * 2, f"the tokenized {meta['corpus']}/{meta['split']} shard")
        partial.parent.mkdir(parents=True, exist_ok=True)
        arr = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint16, shape=(n_tokens,))
        st = {"tokens": 0, "documents": 0}
    filled, n_docs, mark = st["tokens"], st["documents"], st["tokens"]
    for doc in docs:
        ids = tokenizer.encode(doc)
        ids.append(tokenizer.eos_id)
        take = min(len(ids), n_tokens - filled)
        arr[filled:filled + take] = ids[:take]
        filled += take
        n_docs += 1
        if filled == n_tokens:
            break
        if filled - mark >= PROGRESS_EVERY:
            arr.flush()
            atomic_write_json(progress, {"tokens": filled, "documents": n_docs})
            mark = filled
    else:
        raise ValueError(f"{meta['corpus']}/{meta['split']}: corpus exhausted after {filled:,} tokens; "
                         f"asked for {n_tokens:,}. Lower the budget (data.*_tokens / stage3.tokens) "
                         "or use a larger corpus.")
    arr.flush()
    del arr
    manifest = dict(meta, dtype="uint16", tokens=n_tokens, documents=n_docs,
                    sha256=sha256_file(partial), created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    atomic_write_json(final.with_suffix(".json"), manifest)
    os.replace(partial, final)
    progress.unlink(missing_ok=True)


def corpus_windows(corpus: str, split: str, n_tokens: int, data: DataConfig) -> Windows:
    """The first ⌊n_tokens/seq_len⌋ windows of `corpus`/`split`, cached."""
    n_windows = n_tokens // data.seq_len
    if n_windows < 1:
        raise ValueError(f"{corpus}/{split}: a budget of {n_tokens} tokens is less than one window "
                         f"(data.seq_len={data.seq_len})")
    n_exact = n_windows * data.seq_len
    # Key on the prefix length, not the budget: a longer cached prefix serves shorter requests.
    key = digest([corpus, split, data.source, data.tokenizer, data.data_files.get(corpus), CORPUS_SEED])
    cache = cache_root(data) / "tokens"
    best = None
    if cache.exists():
        for p in cache.glob(f"{corpus}-{split}-{key}-*.npy"):
            have = int(p.stem.rsplit("-", 1)[1])
            if have >= n_exact and (best is None or have < best[0]):
                best = (have, p)
    if best is None:
        return _build_locked(corpus, split, n_exact, key, cache, data)
    # A read-only memmap: paper-scale corpora (17 GB of C4 at 135M) are never loaded into memory.
    flat = np.load(best[1], mmap_mode="r")[:n_exact]
    return Windows(corpus, split, flat.reshape(n_windows, data.seq_len))


def _build_locked(corpus: str, split: str, n_exact: int, key: str, cache: Path, data: DataConfig) -> Windows:
    """Build one shard under a file lock: parallel runs needing it wait, then read the same file."""
    from eelib import corpora
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / f"{corpus}-{split}-{key}-{n_exact}.npy"
    with open(cache / f".{corpus}-{split}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.exists():
            spec = corpora.CORPORA[corpus]
            meta = {"corpus": corpus, "split": split, "source": data.source, "tokenizer": data.tokenizer,
                    "hub_id": spec.hub_id if data.source == "hub" else None,
                    "hub_config": spec.hub_config if data.source == "hub" else None,
                    "data_files": data.data_files.get(corpus), "corpus_seed": CORPUS_SEED}
            docs = corpora.documents(corpus, split, source=data.source, seed=CORPUS_SEED,
                                     data_files=data.data_files.get(corpus))
            _tokenize_to_shard(docs, get_tokenizer(data.tokenizer), n_exact, final, meta)
    flat = np.load(final, mmap_mode="r")
    return Windows(corpus, split, flat.reshape(n_exact // data.seq_len, data.seq_len))


def cache_root(data: DataConfig) -> Path:
    """Where tokenized corpora live; shared by every run on this machine (the key says what's inside)."""
    if data.cache_dir:
        return Path(data.cache_dir)
    return Path(os.environ.get("EELIB_CACHE_DIR") or Path.home() / ".cache" / "eelib")


def vocab_size(data: DataConfig) -> int:
    return ByteTokenizer.vocab_size if data.tokenizer == "bytes" else 49152
