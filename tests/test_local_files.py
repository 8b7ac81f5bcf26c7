"""Local corpora in the hub's format as real downloads come (eelib/corpora/hub.py): files whose
other columns differ, empty or cut-off files, row-less parquet parts, C4 split into folders.
Each either reads or stops with one line naming the file and the fix."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eelib import corpora, data as D
from eelib.config import DataConfig
from eelib.corpora import hub

DOCS = [f"Tune {i}: X:{i}\nT:Air {i}\nK:G\n|:GABc d2e2|" + " fa la" * (i % 7) for i in range(400)]


def _jsonl(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _read(data_files, corpus="musicpile", split="train") -> list[str]:
    return list(corpora.documents(corpus, split, source="local", data_files=str(data_files)))


def test_parquet_parts_with_other_extra_columns_and_an_empty_part_are_read(tmp_path):
    """Only the text column is read, so other columns may differ between parts; a part with no
    rows (common in exported shards) is skipped instead of failing the reader."""
    pq.write_table(pa.Table.from_pylist([{"text": t, "id": i} for i, t in enumerate(DOCS[:200])]), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pylist([{"text": t, "meta": {"k": 1}} for t in DOCS[200:]]), tmp_path / "b.parquet")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "c.parquet")
    got = _read(tmp_path)
    assert sorted(got) == sorted(t for t in DOCS if corpora.split.in_split(t, "train", 200))


def test_json_files_with_other_columns_name_the_file_and_the_fix(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"text": t} for t in DOCS[:200]])
    _jsonl(tmp_path / "b.jsonl", [{"text": t, "meta": "x"} for t in DOCS[200:]])
    with pytest.raises(hub.RecordFormatError, match=r"corpus 'musicpile': .*b\.jsonl have other fields .* than "
                                                    r"those of .*a\.jsonl \(meta \(str\)\).*keep the same fields"):
        _read(tmp_path)


@pytest.mark.parametrize("case", ["empty", "cut-off gzip", "not gzip"])
def test_an_unreadable_first_file_is_one_line_naming_it(tmp_path, case):
    if case == "empty":  # the only file (beside others, an empty file is read as holding nothing)
        (tmp_path / "a.jsonl").write_text("")
        match = r"a\.jsonl is empty \(no records\); remove it"
    elif case == "not gzip":  # plain JSON lines named .gz (was the bare "Not a gzipped file", no corpus)
        (tmp_path / "a.jsonl.gz").write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS))
        match = r"the first unreadable file: .*a\.jsonl\.gz: BadGzipFile"
    else:
        gz = gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in DOCS).encode())
        (tmp_path / "a.jsonl.gz").write_bytes(gz[:len(gz) // 2])
        match = r"the first unreadable file: .*a\.jsonl\.gz: EOFError"
    with pytest.raises(hub.RecordFormatError, match="corpus 'musicpile': cannot read a record of .*" + match):
        _read(tmp_path)


def test_json_lines_whose_records_are_arrays_say_records_must_be_objects(tmp_path):
    """Each line a JSON array (was: "line 2: Extra data", as if the file were one broken array)."""
    (tmp_path / "a.jsonl").write_text("".join(json.dumps([t, "x"]) + "\n" for t in DOCS[:50]))
    with pytest.raises(hub.RecordFormatError, match=r"a\.jsonl line 1: a record is a JSON array; each line must "
                                                    r"be one JSON object holding the text field"):
        _read(tmp_path)
    # one JSON array split over lines and broken inside still gets its parser's line
    (tmp_path / "a.jsonl").write_text('[\n{"text": "a"},\n{"text": "b"\n]\n')
    with pytest.raises(hub.RecordFormatError, match=r"a\.jsonl line 4: Expecting ',' delimiter"):
        _read(tmp_path)


def test_zst_files_without_zstandard_say_what_to_install(tmp_path, monkeypatch):
    import builtins
    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "zstandard" else real(name, *a, **k))
    (tmp_path / "a.jsonl.zst").write_bytes(b"")
    with pytest.raises(ImportError, match="need the zstandard package: pip install zstandard"):
        hub.resolve_files(str(tmp_path))
    # and a params file naming them gets that line, not "no file matches; fix the path"
    from eelib import config as C
    files = {"c4": str(tmp_path), "musicpile": str(tmp_path), "chempile": str(tmp_path)}
    with pytest.raises(C.ConfigError, match=r"^data\.data_files\.c4: .*pip install zstandard"):
        C.from_dict({"data": {"source": "local", "data_files": files}}, models=False)


def test_c4_validation_in_its_own_folder_is_the_held_out_set(tmp_path):
    """c4/train/*.json and c4/validation/*.json: the folder marks the official split, as the
    file name does in the hub's layout; before, every file went to train and val was hashed."""
    _jsonl(tmp_path / "train" / "part-0.json", [{"text": t} for t in DOCS[:300]])
    _jsonl(tmp_path / "validation" / "part-0.json", [{"text": t} for t in DOCS[300:]])
    assert sorted(_read(tmp_path, "c4", "val")) == sorted(DOCS[300:])
    assert sorted(_read(tmp_path, "c4", "train")) == sorted(DOCS[:300])
    # such shards get a key of their own; the hub's file-name layout keeps its key
    by_folder = DataConfig(source="local", data_files={"c4": str(tmp_path)})
    assert D.shard_key("c4", "val", by_folder)[-1] == "val-files:by-folder"
    named = tmp_path / "named"
    _jsonl(named / "c4-train.00000.json", [{"text": t} for t in DOCS[:300]])
    _jsonl(named / "c4-validation.00000.json", [{"text": t} for t in DOCS[300:]])
    assert "val-files:by-folder" not in D.shard_key("c4", "val", DataConfig(source="local", data_files={"c4": str(named)}))
