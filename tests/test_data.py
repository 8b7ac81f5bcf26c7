"""Tokenized shards (eelib/data.py): exact budgets, nesting, manifests, and resumable builds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eelib import corpora, data as D
from eelib.config import DataConfig

FIXTURES = Path(__file__).parent / "fixtures" / "hub"


def _cfg(tmp_path, **kw) -> DataConfig:
    return DataConfig(seq_len=32, cache_dir=str(tmp_path / "cache"), **kw)


def test_budget_is_whole_windows_and_prefixes_nest(tmp_path):
    d = _cfg(tmp_path)
    big = D.corpus_windows("musicpile", "train", 3000, d)
    small = D.corpus_windows("musicpile", "train", 1000, d)
    assert big.tokens.shape == (3000 // 32, 32) and big.tokens.dtype == np.uint16
    assert small.n == 1000 // 32
    np.testing.assert_array_equal(small.tokens, big.tokens[:small.n])  # nested D_post subsets
    assert len(list((tmp_path / "cache" / "tokens").glob("*.npy"))) == 1  # served from one shard
    # documents are packed with the end-of-document id between them
    assert (big.tokens == D.ByteTokenizer.eos_id).sum() >= 2


def test_local_source_reads_hub_format_with_a_manifest(tmp_path):
    d = _cfg(tmp_path, source="local", data_files={"musicpile": str(FIXTURES / "musicpile")})
    w = D.corpus_windows("musicpile", "train", 2000, d)
    text = D.ByteTokenizer().decode(w.tokens.reshape(-1)[:400])
    first = next(corpora.documents("musicpile", "train", source="local", data_files=str(FIXTURES / "musicpile")))
    assert text.startswith(first[:100])
    (manifest,) = (tmp_path / "cache" / "tokens").glob("*.json")
    m = json.loads(manifest.read_text())
    assert m["tokens"] == w.n_tokens and m["dtype"] == "uint16" and m["source"] == "local"
    assert m["data_files"] == str(FIXTURES / "musicpile") and len(m["sha256"]) == 64 and m["documents"] > 0


def test_interrupted_tokenization_resumes_to_the_same_shard(tmp_path, monkeypatch):
    ref = D.corpus_windows("chempile", "train", 6000, _cfg(tmp_path / "ref")).tokens.copy()

    monkeypatch.setattr(D, "PROGRESS_EVERY", 500)
    real = corpora.documents
    calls = {"n": 0}

    def dying(*a, **kw):  # the first build dies after 4 documents, as a kill would
        calls["n"] += 1
        it = real(*a, **kw)
        if calls["n"] == 1:
            def gen():
                for i, doc in enumerate(it):
                    if i == 4:
                        raise KeyboardInterrupt("simulated kill")
                    yield doc
            return gen()
        return it

    monkeypatch.setattr(corpora, "documents", dying)
    d = _cfg(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        D.corpus_windows("chempile", "train", 6000, d)
    partial = list((tmp_path / "cut" / "cache" / "tokens" / "partial").glob("*.progress.json"))
    assert partial, "no resume point was recorded"
    done = json.loads(partial[0].read_text())
    assert 0 < done["tokens"] < 6000 and done["documents"] <= 4
    out = D.corpus_windows("chempile", "train", 6000, d).tokens
    np.testing.assert_array_equal(out, ref)
    assert not list((tmp_path / "cut" / "cache" / "tokens" / "partial").glob("*"))


def test_exhausted_corpus_is_a_clear_error(tmp_path):
    d = _cfg(tmp_path, source="local", data_files={"flan": str(FIXTURES / "flan")})
    with pytest.raises(ValueError, match="corpus exhausted"):
        D.corpus_windows("flan", "train", 10_000_000, d)
