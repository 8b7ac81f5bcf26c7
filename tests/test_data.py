"""Tokenized shards (eelib/data.py): exact budgets, nesting, manifests, and resumable builds."""
from __future__ import annotations

import fcntl
import itertools
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from eelib import corpora, data as D
from eelib.config import DataConfig
from eelib.tokenizer import train_bpe

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
    ref = D.corpus_windows("chempile", "train", 20000, _cfg(tmp_path / "ref")).tokens.copy()

    monkeypatch.setattr(D, "PROGRESS_EVERY", 500)
    monkeypatch.setattr(D, "ENCODE_BATCH", 2)
    real = corpora.documents
    calls = {"n": 0}

    def dying(*a, **kw):  # the first build dies at its 9th document, as a kill would
        calls["n"] += 1
        it = real(*a, **kw)
        if calls["n"] == 1:
            def gen():
                for i, doc in enumerate(it):
                    if i == 8:
                        raise KeyboardInterrupt("simulated kill")
                    yield doc
            return gen()
        return it

    monkeypatch.setattr(corpora, "documents", dying)
    d = _cfg(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        D.corpus_windows("chempile", "train", 20000, d)
    partial = list((tmp_path / "cut" / "cache" / "tokens" / "partial").glob("*.progress.json"))
    assert partial, "no resume point was recorded"
    done = json.loads(partial[0].read_text())
    # resume points fall after whole batches, before the killed one
    assert 0 < done["tokens"] < 20000 and done["documents"] <= 8 and done["documents"] % 2 == 0
    # the resume keeps the metadata the build started with (for hub data: the dataset commit it
    # resolved then, not a newer one streamed onto the older prefix)
    (started,) = (tmp_path / "cut" / "cache" / "tokens" / "partial").glob("*.meta.json")
    started.write_text(json.dumps(dict(json.loads(started.read_text()), revision="commit-at-start")))
    out = D.corpus_windows("chempile", "train", 20000, d).tokens
    np.testing.assert_array_equal(out, ref)
    assert not list((tmp_path / "cut" / "cache" / "tokens" / "partial").glob("*"))
    (manifest,) = (tmp_path / "cut" / "cache" / "tokens").glob("*.json")
    assert json.loads(manifest.read_text())["revision"] == "commit-at-start"


def test_a_shard_of_the_exact_budget_is_read_back_not_built_again(tmp_path, monkeypatch):
    """The cache serves a request from a shard of exactly its length (C4 at paper scale takes hours
    to tokenize), not only from longer ones."""
    d = _cfg(tmp_path)
    first = D.corpus_windows("musicpile", "train", 3000, d).tokens.copy()
    monkeypatch.setattr(D, "get_tokenizer", lambda name: pytest.fail("tokenized again"))
    np.testing.assert_array_equal(D.corpus_windows("musicpile", "train", 3000, d).tokens, first)


def test_a_shard_is_built_by_one_process_at_a_time(tmp_path, monkeypatch):
    """Parallel workers on a fresh cache need the same shards: a second builder waits on the shard's
    lock, else it reopens the first one's partial memmap with w+ (truncating it under the writer) and
    both publish and clean up the same files."""
    d = _cfg(tmp_path)
    cache = tmp_path / "cache" / "tokens"
    cache.mkdir(parents=True)
    key = D.digest(D.shard_key("chempile", "train", d))
    entered, real = threading.Event(), D._tokenize_to_shard
    monkeypatch.setattr(D, "_tokenize_to_shard", lambda *a, **k: (entered.set(), real(*a, **k)))
    with open(cache / f".chempile-train-{key}.lock", "w") as held:  # another builder holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        builder = threading.Thread(target=D.corpus_windows, args=("chempile", "train", 4000, d))
        builder.start()
        assert not entered.wait(1.0), "built while another process held the shard's lock"
    builder.join(60)
    assert entered.is_set() and len(list(cache.glob("chempile-train-*.npy"))) == 1


def test_exhausted_corpus_is_a_clear_error(tmp_path):
    d = _cfg(tmp_path, source="local", data_files={"flan": str(FIXTURES / "flan")})
    with pytest.raises(D.CorpusExhausted, match="corpus exhausted"):
        D.corpus_windows("flan", "train", 10_000_000, d)


# ---------------------------------------------------------------------------------------------
# A saved Hugging Face tokenizer (the paper path's SmolLM2 tokenizer, or a researcher's own), tested
# with a small byte-level BPE trained here on the hub-format fixtures.

def _save_bpe(where: Path, vocab: int) -> Path:
    texts = [t for c in ("c4", "musicpile", "chempile", "flan")
             for t in corpora.documents(c, "train", source="local", data_files=str(FIXTURES / c))]
    return train_bpe(texts, vocab, where)


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory) -> Path:
    return _save_bpe(tmp_path_factory.mktemp("bpe") / "tok", 600)


def _local(tmp_path, tokenizer, **kw) -> DataConfig:
    files = {c: str(FIXTURES / c) for c in ("c4", "musicpile", "chempile", "flan")}
    return _cfg(tmp_path, source="local", data_files=files, tokenizer=str(tokenizer), **kw)


def test_saved_tokenizer_dir_builds_shards_with_its_identity(tmp_path, bpe_dir, monkeypatch):
    d = _local(tmp_path, bpe_dir)
    tok = D.get_tokenizer(str(bpe_dir))
    assert D.vocab_size(d) == tok.vocab_size == 600 and tok.eos_id == 0
    w = D.corpus_windows("musicpile", "train", 2048, d)
    flat = w.tokens.reshape(-1)
    assert flat.max() < 600 and (flat == tok.eos_id).sum() >= 1
    first = next(corpora.documents("musicpile", "train", source="local", data_files=str(FIXTURES / "musicpile")))
    n_first = int(np.argmax(flat == tok.eos_id))
    assert tok.decode(flat[:n_first]) == first  # a byte-level BPE round-trips the document exactly
    (mpath,) = (tmp_path / "cache" / "tokens").glob("musicpile-train-*.json")
    m = json.loads(mpath.read_text())
    assert m["tokenizer_id"] == D.tokenizer_id(str(bpe_dir)) and m["tokenizer_id"].startswith("dir:")
    assert m["vocab_size"] == 600 and m["eos_id"] == 0 and m["revision"] is None
    assert [f["bytes"] for f in m["input_files"]] == [(FIXTURES / "musicpile" / "train.jsonl").stat().st_size]

    # Batched encoding gives the same tokens as one document per call.
    monkeypatch.setattr(D, "ENCODE_BATCH", 1)
    one = D.corpus_windows("musicpile", "train", 2048, _local(tmp_path / "one", bpe_dir))
    np.testing.assert_array_equal(one.tokens, w.tokens)


def test_another_tokenizer_in_the_same_dir_gets_new_shards(tmp_path):
    tok_dir = _save_bpe(tmp_path / "tok", 400)
    d = _local(tmp_path, tok_dir)
    before = D.tokenizer_id(str(tok_dir))
    a = D.corpus_windows("flan", "train", 1024, d).tokens.copy()
    _save_bpe(tok_dir, 500)  # retrained in place
    assert D.tokenizer_id(str(tok_dir)) != before
    b = D.corpus_windows("flan", "train", 1024, d).tokens
    assert len(list((tmp_path / "cache" / "tokens").glob("flan-train-*.npy"))) == 2
    assert not np.array_equal(a, b) and b.max() >= 400  # the new ids, not the stale shard


def test_a_longer_shard_keeps_the_dataset_commit_of_the_shorter_one(tmp_path):
    """A 150M D_post built after the 30M one must extend the same text for the subsets to nest."""
    cache = tmp_path / "tokens"
    cache.mkdir()
    np.save(cache / "musicpile-train-k-8.npy", np.array([5, 6, 7, 0, 9, 9, 9, 9], dtype=np.uint16))
    (cache / "musicpile-train-k-8.json").write_text(json.dumps(
        {"corpus": "musicpile", "split": "train", "source": "hub", "revision": "abc123", "documents": 2,
         "last_document_start": 4, "tokens": 8, "sha256": "x", "created": "t", "dtype": "uint16"}))
    meta = D._seed_from_shorter(cache / "musicpile-train-k-16.npy", "musicpile-train-k", 16)
    assert meta["revision"] == "abc123" and meta["extended_from"] == "musicpile-train-k-8.npy"
    assert not {"tokens", "documents", "sha256", "created"} & set(meta)
    # the resume point: the shorter shard as an interrupted build whose cut second document is
    # encoded again whole (and checked against the copied tokens)
    progress = json.loads((cache / "partial" / "musicpile-train-k-16.progress.json").read_text())
    assert progress == {"tokens": 8, "documents": 2, "last_document_start": 4}
    assert np.load(cache / "partial" / "musicpile-train-k-16.npy")[:8].tolist() == [5, 6, 7, 0, 9, 9, 9, 9]
    assert D._seed_from_shorter(cache / "musicpile-train-k-4.npy", "musicpile-train-k", 4) is None


def test_pinning_a_revision_changes_the_cache_key_only_when_set():
    plain, pinned = DataConfig(source="hub"), DataConfig(source="hub", revisions={"musicpile": "v1"})
    assert D.shard_key("musicpile", "train", plain)[-1] == D.CORPUS_SEED  # the key it always had
    assert D.shard_key("musicpile", "train", pinned)[-1] == "v1"


def test_tokenizer_over_uint16_is_refused_by_the_config(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from eelib import config as C
    from eelib.validate import validate
    vocab = {f"w{i}": i for i in range(70_000)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w1").save_pretrained(tmp_path / "big")
    cfg = C.ExperimentConfig(data=DataConfig(tokenizer=str(tmp_path / "big")))
    with pytest.raises(C.ConfigError, match="data.tokenizer: .* has 70,000 ids; tokens are stored as uint16"):
        validate(cfg, models=False)


def test_three_stages_on_hub_format_files_with_a_saved_tokenizer(tmp_path, bpe_dir):
    """The paper path end to end, offline: source local (files in the hub's record format) and a
    saved Hugging Face tokenizer, as on a cluster that holds downloaded corpora and SmolLM2's files.
    About 3 s: test-micro, a few steps per stage."""
    from eelib import config as C, stages
    from eelib.validate import validate
    files = {c: str(FIXTURES / c) for c in ("c4", "musicpile", "chempile")}
    cfg = validate(C.ExperimentConfig(
        name="local-bpe", model="test-micro", threads=1, pipeline="music->chem",
        data=DataConfig(source="local", tokenizer=str(bpe_dir), data_files=files, seq_len=32,
                        general_tokens=1024, post_tokens=512, val_tokens=256,
                        cache_dir=str(tmp_path / "cache")),
        stage1=C.Stage1Config(lam=0.5, batch_size=4),
        stage2=C.Stage2Config(batch_size=4, max_tokens=1024, eval_interval=4, patience=2),
        stage3=C.Stage3Config(lrs=[1e-3], tokens=512, batch_size=4, eval_interval=2)))
    s1 = stages.pretrain(cfg, root=tmp_path / "out", progress=False)
    s2 = stages.posttrain(cfg, s1, root=tmp_path / "out", progress=False)
    s3 = stages.finetune(cfg, s2, 1e-3, root=tmp_path / "out", progress=False)
    for k in ("L_ret", "L_ft", "L_pre"):
        assert 0 < s3[k] < np.log(600) + 1, (k, s3[k])  # finite and near or below uniform over 600 ids
    assert s2["L_im"] < np.log(600)
    # the stage key carries the tokenizer's identity, not its path
    assert D.tokenizer_id(str(bpe_dir)) in json.dumps(json.loads((s1.dir / "key.json").read_text()))


def test_smollm2_tokenizer_without_cache_or_hub_names_the_way_out(monkeypatch):
    from eelib.corpora import HubUnavailable
    from eelib.tokenizer import HFTokenizer
    monkeypatch.setattr(HFTokenizer, "hub_id", "eelib-tests/not-a-cached-tokenizer")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailable, match="set data.tokenizer to a directory holding its tokenizer.json"):
        HFTokenizer("smollm2")


def test_a_longer_budget_extends_the_shorter_shard_bit_for_bit(tmp_path, monkeypatch):
    """D_post 30M → 150M, C4 8.7B → 19.7B: the longer shard starts from the shorter one."""
    fresh = D.corpus_windows("chempile", "train", 12_000, _cfg(tmp_path / "fresh")).tokens.copy()
    d = _cfg(tmp_path / "grown")
    short = D.corpus_windows("chempile", "train", 4_000, d)
    encoded = []
    real = D.ByteTokenizer.encode_batch
    monkeypatch.setattr(D.ByteTokenizer, "encode_batch", lambda self, texts: encoded.extend(texts) or real(self, texts))
    monkeypatch.setattr(D, "ENCODE_BATCH", 1)
    long = D.corpus_windows("chempile", "train", 12_000, d)
    np.testing.assert_array_equal(long.tokens, fresh)
    np.testing.assert_array_equal(long.tokens[:short.n], short.tokens)
    cache = tmp_path / "grown" / "cache" / "tokens"
    m_short = json.loads(next(cache.glob("chempile-train-*-4000.json")).read_text())
    m_long = json.loads(next(cache.glob("chempile-train-*-12000.json")).read_text())
    m_fresh = json.loads(next((tmp_path / "fresh" / "cache" / "tokens").glob("*.json")).read_text())
    assert m_long["extended_from"].endswith("-4000.npy")
    assert m_long["sha256"] == m_fresh["sha256"] and m_long["documents"] == m_fresh["documents"]
    # only the cut last document of the short shard and the new ones were tokenized
    assert len(encoded) == m_long["documents"] - m_short["documents"] + 1
    assert not list((cache / "partial").glob("*"))


def _other_stream(monkeypatch, skip: int):
    """corpora.documents as it would read after the files, revision or `datasets` changed: the
    same documents, the first `skip` of them gone."""
    real = corpora.documents
    monkeypatch.setattr(corpora, "documents", lambda *a, **kw: itertools.islice(real(*a, **kw), skip, None))


def test_a_resume_on_another_document_stream_stops_instead_of_splicing(tmp_path, monkeypatch):
    """A resumed build encodes its last consumed document again and compares it with the tokens
    on disk: another stream (a datasets upgrade reorders the shuffle) stops the build, naming the
    files to delete, instead of finishing one shard from two document orders."""
    d = _cfg(tmp_path)
    monkeypatch.setattr(D, "PROGRESS_EVERY", 500)
    monkeypatch.setattr(D, "ENCODE_BATCH", 2)
    real = corpora.documents

    def dying(*a, **kw):
        def gen():
            for i, doc in enumerate(real(*a, **kw)):
                if i == 8:
                    raise KeyboardInterrupt("simulated kill")
                yield doc
        return gen()
    monkeypatch.setattr(corpora, "documents", dying)
    with pytest.raises(KeyboardInterrupt):
        D.corpus_windows("chempile", "train", 20000, d)
    monkeypatch.setattr(corpora, "documents", real)
    _other_stream(monkeypatch, skip=1)
    with pytest.raises(D.StreamChanged, match=r"chempile/train: document .* splice .* Delete .*partial"):
        D.corpus_windows("chempile", "train", 20000, d)
    assert not list((tmp_path / "cache" / "tokens").glob("*.npy"))  # nothing published
    monkeypatch.setattr(corpora, "documents", real)  # the stream it started from: resumes
    ref = D.corpus_windows("chempile", "train", 20000, _cfg(tmp_path / "ref")).tokens
    np.testing.assert_array_equal(D.corpus_windows("chempile", "train", 20000, d).tokens, ref)


def test_extending_a_shard_from_another_document_stream_stops(tmp_path, monkeypatch):
    """The 150M D_post extends the 30M one only if the stream still starts with the 30M one's
    documents; else the subsets would not nest (the cut last document is the check)."""
    d = _cfg(tmp_path)
    D.corpus_windows("chempile", "train", 4_000, d)
    _other_stream(monkeypatch, skip=1)
    with pytest.raises(D.StreamChanged, match="chempile/train"):
        D.corpus_windows("chempile", "train", 12_000, d)


def test_a_waiting_build_reads_the_longer_shard_the_process_it_waited_for_built(tmp_path, monkeypatch):
    """Two runs start together, one needing 12k tokens and one 4k: the second waits on the lock,
    and then reads a prefix of the first one's shard instead of tokenizing its own."""
    d = _cfg(tmp_path)
    long = D.corpus_windows("chempile", "train", 12_000, d)
    cache = tmp_path / "cache" / "tokens"
    key = D.digest(D.shard_key("chempile", "train", d))
    monkeypatch.setattr(D, "get_tokenizer", lambda name: pytest.fail("tokenized again"))
    # as the waiting process sees it once it holds the lock (it looked before the long one existed)
    got = D._build_locked("chempile", "train", 4_000 // 32 * 32, key, cache, d)
    assert got.name.endswith("-12000.npy") and len(list(cache.glob("*.npy"))) == 1
    np.testing.assert_array_equal(np.load(got)[:3968], long.tokens.reshape(-1)[:3968])


def test_a_tokenizer_over_uint16_is_refused_by_the_shard_builder_too(tmp_path):
    """The config refuses it first; the builder does not rely on that (numpy < 2 would wrap ids)."""
    class Big(D.ByteTokenizer):
        vocab_size = 70_000
    with pytest.raises(ValueError, match="70,000 ids do not fit the uint16"):
        D._tokenize_to_shard(iter(["a"]), Big(), 8, tmp_path / "x.npy", {"corpus": "c4", "split": "train"})


def test_hf_tokenizer_batch_encoding_matches_one_at_a_time(bpe_dir):
    tok = D.get_tokenizer(str(bpe_dir))
    texts = ["X:1\nT:Air\nK:G\n|:GABc d2 e2|", "CCO>>CC(=O)O", "", "Instruction: add 2 and 3\nResponse: 5"]
    assert tok.encode_batch(texts) == [tok.tok.encode(t, add_special_tokens=False) for t in texts]
