"""Tokenizers and tokenized corpora: the token budgets of §3 turned into fixed windows.

A corpus split becomes a `Windows` array of shape [n, seq_len]: documents in their stream order,
each followed by an end-of-document token, packed and cut at exactly n·seq_len tokens. So every
budget is counted in whole windows and a budget of B tokens delivers exactly ⌊B/seq_len⌋·seq_len.
Prefixes are nested by construction: the 30M D_post is the first 30M tokens of the 150M one (§4.1).

Arrays are cached under data.cache_dir keyed by everything that produced them, written atomically.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eelib.config import DataConfig, digest
from eelib.io import atomic_save_npy

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


def _pack(docs, tokenizer, n_tokens: int) -> np.ndarray:
    out = np.empty(n_tokens, dtype=np.int32)
    filled = 0
    for doc in docs:
        ids = tokenizer.encode(doc)
        ids.append(tokenizer.eos_id)
        take = min(len(ids), n_tokens - filled)
        out[filled:filled + take] = ids[:take]
        filled += take
        if filled == n_tokens:
            return out
    raise ValueError(f"corpus exhausted after {filled} tokens; asked for {n_tokens}. "
                     "Lower the budget (data.*_tokens / stage3.tokens) or use a larger corpus.")


def corpus_windows(corpus: str, split: str, n_tokens: int, data: DataConfig) -> Windows:
    """The first ⌊n_tokens/seq_len⌋ windows of `corpus`/`split`, cached."""
    from eelib import corpora
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
    if best is not None:
        flat = np.load(best[1], mmap_mode="r")[:n_exact]
    else:
        tok = get_tokenizer(data.tokenizer)
        docs = corpora.documents(corpus, split, source=data.source, seed=CORPUS_SEED,
                                 data_files=data.data_files.get(corpus))
        flat = _pack(docs, tok, n_exact)
        atomic_save_npy(cache / f"{corpus}-{split}-{key}-{n_exact}.npy", flat)
    return Windows(corpus, split, np.ascontiguousarray(flat).reshape(n_windows, data.seq_len))


def cache_root(data: DataConfig) -> Path:
    """Where tokenized corpora live; shared by every run on this machine (the key says what's inside)."""
    if data.cache_dir:
        return Path(data.cache_dir)
    return Path(os.environ.get("EELIB_CACHE_DIR") or Path.home() / ".cache" / "eelib")


def vocab_size(data: DataConfig) -> int:
    return ByteTokenizer.vocab_size if data.tokenizer == "bytes" else 49152


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))
