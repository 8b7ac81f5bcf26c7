"""Tokenized corpora: the token budgets of the notes' §3 turned into fixed windows (tokenizers: eelib/tokenizer.py).

A corpus split becomes a `Windows` array of shape [n, seq_len]: documents in their stream order,
each followed by an end-of-document token, packed and cut at exactly n·seq_len tokens. So every
budget is counted in whole windows and a budget of B tokens delivers exactly ⌊B/seq_len⌋·seq_len.
Prefixes are nested by construction: the 30M D_post is the first 30M tokens of the 150M one (a project choice: docs/decisions.md).

Token arrays are uint16 shards (both tokenizers have < 65,536 ids) cached under the cache root,
keyed by everything that produced them, with a manifest; they are read back as memmaps.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eelib.config import DataConfig, digest
from eelib.corpora.split import HUB_HELDOUT_EVERY
from eelib.io import atomic_write_json, check_free_disk, sha256_file
from eelib.tokenizer import ByteTokenizer, get_tokenizer, tokenizer_id, tokenizer_vocab  # noqa: F401 (re-exported)

CORPUS_SEED = 0  # the corpora's content is fixed; the run seed varies init and order (decisions.md)


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


class CorpusExhausted(RuntimeError):
    """A corpus holds fewer tokens than a budget asks (found while tokenizing hub/local data, whose
    size is unknown until read); the CLI reports it as one line, naming the budgets to lower."""


class StreamChanged(RuntimeError):
    """The documents a resumed or extended shard reads are not the ones its first part was built
    from (other files, another dataset revision, or a `datasets` version that shuffles otherwise);
    continuing would splice two streams into one shard, so the build stops, naming what to delete."""


UINT16_IDS = 1 << 16  # token ids a uint16 shard can hold


PROGRESS_EVERY = 1 << 22  # tokens between progress records while tokenizing (resume points)
ENCODE_BATCH = 256        # documents per tokenizer call: one call per batch, parallel in Rust


def _tokenize_to_shard(docs, tokenizer, n_tokens: int, final: Path, meta: dict) -> None:
    """Tokenize `docs` into a uint16 .npy shard of exactly n_tokens, resumably, then publish it.

    Documents are encoded ENCODE_BATCH at a time into a memmap under <cache>/partial/. Every
    PROGRESS_EVERY tokens, after whole batches, the position is recorded atomically: tokens filled,
    documents consumed, and where the last document began. An interrupted build resumes there,
    skipping the consumed documents. The finished file gets a manifest (source, dataset id and
    revision, tokenizer, token and document counts, sha256) and is renamed into place: readers
    only ever see complete shards.
    """
    if tokenizer.vocab_size > UINT16_IDS:  # numpy < 2 would wrap larger ids silently
        raise ValueError(f"data.tokenizer: {tokenizer.vocab_size:,} ids do not fit the uint16 token shards "
                         f"(at most {UINT16_IDS:,}); use a tokenizer with a smaller vocabulary")
    partial = final.parent / "partial" / final.name
    progress = partial.with_suffix(".progress.json")
    verify = None
    if partial.exists() and progress.exists():
        arr = np.lib.format.open_memmap(partial, mode="r+")
        st = json.loads(progress.read_text())
        # Step back to where the last consumed document began and encode it again: its tokens must
        # be those on disk, or the stream is not the one this shard was started from. (Equal
        # positions: an extension's record written before this check, which stepped back already.)
        if st["documents"] and st["tokens"] > st["last_document_start"]:
            verify = (st["last_document_start"], st["tokens"])
            st = dict(st, tokens=st["last_document_start"], documents=st["documents"] - 1)
        docs = itertools.islice(docs, st["documents"], None)
    else:
        check_free_disk(final.parent, n_tokens * 2, f"the tokenized {meta['corpus']}/{meta['split']} shard")
        partial.parent.mkdir(parents=True, exist_ok=True)
        arr = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint16, shape=(n_tokens,))
        st = {"tokens": 0, "documents": 0}
    filled, n_docs, mark = st["tokens"], st["documents"], st["tokens"]
    last_start = st.get("last_document_start", 0)
    docs = iter(docs)
    while filled < n_tokens:
        batch = list(itertools.islice(docs, ENCODE_BATCH))
        if not batch:
            budget = ("data.val_tokens" if meta["split"] == "val" else "data.general_tokens"
                      if meta["corpus"] == "c4" else "data.post_tokens (D_post) or stage3.tokens (D_ft)")
            held = ""
            if meta["split"] == "val" and meta.get("source") in ("hub", "local"):
                held = (" This corpus holds out 1 document in "
                        f"{HUB_HELDOUT_EVERY} (by a hash of its text), so it needs about "
                        f"{HUB_HELDOUT_EVERY}× data.val_tokens tokens in all")
                held += (" (or files named *validation* or in a validation folder, held out whole)." if meta["corpus"] == "c4" else ".")
            del arr
            _drop_leftovers(final)  # a full-size (sparse) partial that no budget of these files can finish
            raise CorpusExhausted(f"{meta['corpus']}/{meta['split']}: corpus exhausted after {filled:,} tokens "
                                  f"({n_docs:,} documents); asked for {n_tokens:,}. Lower {budget} or use a "
                                  f"larger corpus.{held}")
        for ids in tokenizer.encode_batch(batch):
            ids.append(tokenizer.eos_id)
            if verify is not None:
                _verify_resumed(arr, verify, ids, n_docs, meta, partial)
                verify = None
            last_start = filled
            take = min(len(ids), n_tokens - filled)
            arr[filled:filled + take] = ids[:take]
            filled += take
            n_docs += 1
            if filled == n_tokens:
                break
        if filled < n_tokens and filled - mark >= PROGRESS_EVERY:  # resume points after whole batches
            arr.flush()
            atomic_write_json(progress, {"tokens": filled, "documents": n_docs, "last_document_start": last_start})
            mark = filled
    arr.flush()
    del arr
    manifest = dict(meta, dtype="uint16", tokens=n_tokens, documents=n_docs, last_document_start=last_start,
                    sha256=sha256_file(partial), created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    atomic_write_json(final.with_suffix(".json"), manifest)
    os.replace(partial, final)
    _drop_leftovers(final)


def _drop_leftovers(final: Path) -> None:
    """Remove a shard's build files once a finished shard serves it: the records a kill between
    publishing and this leaves, or an unfinished build a longer shard made redundant."""
    for name in (final.name, final.stem + ".progress.json", final.stem + ".meta.json"):
        final.parent.joinpath("partial", name).unlink(missing_ok=True)


def _verify_resumed(arr, verify: tuple[int, int], ids: list[int], n_docs: int, meta: dict, partial: Path) -> None:
    start, end = verify
    on_disk = np.asarray(arr[start:end], dtype=np.int64)
    if len(ids) < end - start or not np.array_equal(on_disk, np.asarray(ids[:end - start], dtype=np.int64)):
        raise StreamChanged(
            f"{meta['corpus']}/{meta['split']}: document {n_docs:,} of the stream is not the one at token "
            f"{start:,} of the shard being resumed or extended ({partial.name}): the data files, the "
            "dataset revision or the `datasets` version changed since it was started, and continuing would "
            f"splice two document orders into one shard. Delete {partial} and the files next to it named "
            f"{partial.stem}.* (and, if it extends a shorter shard, that shard: its manifest is named in "
            f"{partial.stem}.meta.json) to build it again from the start")


def _cached(cache: Path, corpus: str, split: str, key: str, n_exact: int) -> Path | None:
    """The shortest finished shard of this key holding at least n_exact tokens."""
    best = None
    if cache.exists():
        for p in cache.glob(f"{corpus}-{split}-{key}-*.npy"):
            have = int(p.stem.rsplit("-", 1)[1])
            if have >= n_exact and (best is None or have < best[0]):
                best = (have, p)
    return best[1] if best else None


def corpus_windows(corpus: str, split: str, n_tokens: int, data: DataConfig) -> Windows:
    """The first ⌊n_tokens/seq_len⌋ windows of `corpus`/`split`, cached."""
    n_windows = n_tokens // data.seq_len
    if n_windows < 1:
        raise ValueError(f"{corpus}/{split}: a budget of {n_tokens} tokens is less than one window "
                         f"(data.seq_len={data.seq_len})")
    n_exact = n_windows * data.seq_len
    # Key on the prefix length, not the budget: a longer cached prefix serves shorter requests.
    key = digest(shard_key(corpus, split, data))
    cache = cache_root(data) / "tokens"
    found = _cached(cache, corpus, split, key, n_exact) or _build_locked(corpus, split, n_exact, key, cache, data)
    # A read-only memmap: paper-scale corpora (17 GB of C4 at 135M) are never loaded into memory.
    flat = np.load(found, mmap_mode="r")[:n_exact]
    return Windows(corpus, split, flat.reshape(n_windows, data.seq_len))


FINGERPRINT_BYTES = 1 << 16  # read at each end of a local data file for its identity


@functools.lru_cache(maxsize=None)
def _file_fingerprint(path: str, stat_key: tuple) -> str:
    # Cached per (device, inode, size, mtime, ctime): a copy with preserved mtime (cp -p, rsync -a)
    # still changes ctime or the inode, so a long-lived kernel never keeps a stale hash.
    h = hashlib.blake2b(digest_size=8)
    size = stat_key[2]
    with open(path, "rb") as f:
        h.update(f.read(FINGERPRINT_BYTES))
        if size > 2 * FINGERPRINT_BYTES:
            f.seek(size - FINGERPRINT_BYTES)
        h.update(f.read(FINGERPRINT_BYTES))
    return h.hexdigest()


def files_identity(data_files: str) -> str:
    """The identity of a source=local corpus's files, not of the path written in the params.

    Each file's path relative to the files' common directory, its size and a hash of its first and
    last 64 KiB: the same data copied elsewhere keeps its identity (shards and stages are reused),
    while another corpus under the same relative path, or a file edited or appended to, gets a new
    one. Hashing whole files would take hours at paper scale; an edit inside a file that keeps its
    size and both ends is the case this misses (docs/decisions.md).
    """
    from eelib.corpora import input_files
    files = [f["path"] for f in input_files(data_files)]
    base = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
    parts = []
    for f in files:
        st = os.stat(f)
        stat_key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        parts.append([os.path.relpath(os.path.abspath(f), base), st.st_size,
                      _file_fingerprint(os.path.abspath(f), stat_key)])
    return digest(parts)


def shard_key(corpus: str, split: str, data: DataConfig) -> list:
    """What a token shard depends on; its digest names the cache file (benchmarks prefill by it)."""
    files = files_identity(data.data_files[corpus]) if data.source == "local" else None
    key = [corpus, split, data.source, tokenizer_id(data.tokenizer), files, CORPUS_SEED]
    if split == "val" and data.source != "offline":
        # A hash-split val set is now read shuffled (corpora/hub.py), so its shards are new. Every
        # hub/local val key gets the mark: local C4 without validation files is hash-split too.
        from eelib.corpora.hub import VAL_SEED
        key.append(f"val-order:shuffled:{VAL_SEED}")
    if data.source == "local":
        key += _val_files_mark(corpus, data)
    if data.source == "hub" and data.hub_datasets.get(corpus):  # another dataset: other shards
        key.append({"hub_dataset": dict(sorted(data.hub_datasets[corpus].items()))})
    revision = data.revisions.get(corpus)
    return key + [revision] if revision else key  # unpinned keys stay as they were before pinning existed


def _val_files_mark(corpus: str, data: DataConfig) -> list:
    """Local C4's held-out files found by their folder (c4/validation/part-0.json), which before
    2026-11-27 went to train: such shards get a new key; those of files named for the split
    (c4-validation.*.json.gz), and of every other layout, keep theirs."""
    from eelib.corpora import CORPORA
    from eelib.corpora.hub import official_val_files, resolve_files
    val_split = CORPORA[corpus].val_split if corpus in CORPORA else None
    if not val_split:
        return []
    files = resolve_files(data.data_files[corpus])
    found = official_val_files(files, val_split)
    return ["val-files:by-folder"] if found and not any(val_split in Path(f).name for f in found) else []


_MANIFEST_ONLY = ("dtype", "tokens", "documents", "last_document_start", "sha256", "created")


def _seed_from_shorter(final: Path, stem: str, n_tokens: int) -> dict | None:
    """Start a longer shard from the longest shorter one of the same key, as a resume point.

    Budgets grow (D_post 30M → 150M → 300M; C4 8.7B at 135M → 19.7B at 1B), and the longer
    shard's first tokens are the shorter one's. Its tokens are copied and the stream resumes at
    the document it ended in, re-encoding that one whole (it must begin with the copied tokens,
    else StreamChanged), so the result is the shard a fresh build would give and only the new
    part is tokenized (the stream still skips the consumed documents). Returns the shorter shard's metadata (same dataset commit),
    or None when there is no usable shorter shard.
    """
    best = None
    for m in final.parent.glob(f"{stem}-*.json"):
        have, man = int(m.stem.rsplit("-", 1)[1]), json.loads(m.read_text())
        if (have < n_tokens and "last_document_start" in man and m.with_suffix(".npy").exists()
                and (best is None or have > best[0])):
            best = (have, m.with_suffix(".npy"), man)
    if best is None:
        return None
    have, src_path, man = best
    start = int(man["last_document_start"])
    check_free_disk(final.parent, n_tokens * 2, f"the tokenized {man['corpus']}/{man['split']} shard")
    partial = final.parent / "partial" / final.name
    partial.parent.mkdir(parents=True, exist_ok=True)
    arr = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint16, shape=(n_tokens,))
    src = np.load(src_path, mmap_mode="r")
    for i in range(0, have, 1 << 26):  # 128 MB at a time: C4 shards are tens of GB
        arr[i:min(have, i + (1 << 26))] = src[i:min(have, i + (1 << 26))]
    arr.flush()
    del arr, src
    # The shorter shard as an interrupted build of this one: its last document, cut at its end,
    # is encoded again whole, and must begin with the tokens copied here (_tokenize_to_shard).
    atomic_write_json(partial.with_suffix(".progress.json"),
                      {"tokens": have, "documents": man["documents"], "last_document_start": start})
    meta = {k: v for k, v in man.items() if k not in _MANIFEST_ONLY}
    return dict(meta, extended_from=src_path.name)


def _build_locked(corpus: str, split: str, n_exact: int, key: str, cache: Path, data: DataConfig) -> Path:
    """Build one shard under a file lock: parallel runs needing it wait, then read the same file
    (or a longer one of the same key that the process they waited for built)."""
    from eelib import corpora
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / f"{corpus}-{split}-{key}-{n_exact}.npy"
    with open(cache / f".{corpus}-{split}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (done := _cached(cache, corpus, split, key, n_exact)) is not None:
            _drop_leftovers(final)
            return done
        hub = data.source == "hub"
        hub_dataset = data.hub_datasets.get(corpus) if hub else None
        spec = corpora.corpus_spec(corpus, data.source, hub_dataset)
        tok = get_tokenizer(data.tokenizer)
        # An interrupted build resumes with the metadata it started with, and a longer shard
        # takes that of the shorter one it extends: above all the dataset commit, so neither a
        # resume nor a larger D_post splices documents of a newer revision onto an older prefix.
        started = cache / "partial" / (final.stem + ".meta.json")
        if started.exists():
            meta = json.loads(started.read_text())
        elif (meta := _seed_from_shorter(final, f"{corpus}-{split}-{key}", n_exact)) is not None:
            atomic_write_json(started, meta)
        else:
            meta = {"corpus": corpus, "split": split, "source": data.source,
                    "tokenizer": data.tokenizer, "tokenizer_id": tokenizer_id(data.tokenizer),
                    "vocab_size": tok.vocab_size, "eos_id": tok.eos_id,
                    "hub_id": spec.hub_id if hub else None, "hub_config": spec.hub_config if hub else None,
                    "text_field": spec.text_field if hub else None,
                    "revision_requested": data.revisions.get(corpus),
                    "revision": corpora.resolve_revision(spec, data.revisions.get(corpus)) if hub else None,
                    "data_files": data.data_files.get(corpus),
                    "input_files": (corpora.input_files(data.data_files[corpus])
                                    if data.source == "local" else None),
                    "corpus_seed": CORPUS_SEED,
                    # what orders and tokenizes the documents: another `datasets` shuffles otherwise
                    "libraries": _library_versions() if data.source != "offline" else None}
            started.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(started, meta)
        revision = meta["revision_requested"]
        if hub and " (unresolved" not in meta["revision"]:
            revision = meta["revision"]  # stream the resolved commit: exactly what the manifest names
        docs = corpora.documents(corpus, split, source=data.source, seed=CORPUS_SEED,
                                 data_files=data.data_files.get(corpus), revision=revision,
                                 hub_dataset=hub_dataset)
        _tokenize_to_shard(docs, tok, n_exact, final, meta)
    return final


def _library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("datasets", "tokenizers", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def cache_root(data: DataConfig) -> Path:
    """Where tokenized corpora live; shared by every run on this machine (the key says what's inside)."""
    if data.cache_dir:
        return Path(data.cache_dir)
    return Path(os.environ.get("EELIB_CACHE_DIR") or Path.home() / ".cache" / "eelib")


def vocab_size(data: DataConfig) -> int:
    return tokenizer_vocab(data.tokenizer)
