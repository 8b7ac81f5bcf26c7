"""Real corpora: streamed from the Hugging Face hub, or read from local copies in the hub's format.

Both sources go through `_stream`, so the field mapping and the held-out rule tested on local
fixtures are the ones used on the hub.

Design choices:
- Fail fast: before `datasets` touches the network we check the offline flags and open one TCP
  connection to the hub host, in a daemon thread with a hard deadline (DNS lookups ignore socket
  timeouts, so only a thread bounds them). Unreachable -> `HubUnavailable` in about 2 s, never a
  hang; `datasets` itself would retry for ~25 s before failing.
- Held-out data: C4 has an official validation split; the other corpora ship only `train`, so
  1 document in `heldout_every` is held out by a stable hash of its text (eelib.corpora.split).
- Order: a seeded shuffle of files and a buffer (`IterableDataset.shuffle`), so `seed` changes
  the train order but not the content. A hash-split corpus's val follows train's shuffled order
  (VAL_SEED, the seed eelib reads train with), so both come from the same files; read in file
  order it would come from the first files by name alone (FLAN's are grouped by task family), a
  distribution unlike train's. An official val split (C4's validation files) is read as shipped.
- Streams end when the source is exhausted; they do not cycle.
"""

from __future__ import annotations

import glob
import gzip
import json
import logging
import os
import socket
import sys
import threading
import zlib
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from .instruct import render
from .registry import INPUTS_TARGETS, CorpusSpec
from .split import in_split

_OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_PROBE_TIMEOUT_S = 2.0
_SHUFFLE_BUFFER = 10_000
# The order a hash-split val set is read in, whatever the run's seed. It equals data.CORPUS_SEED,
# the seed train is read with, so val follows train's shuffled file order (a test checks): with
# files of GBs each, both are drawn from the files that come first in that order.
VAL_SEED = 0
_JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz", ".json.zst", ".jsonl.zst")


class HubUnavailable(RuntimeError):
    """The Hugging Face hub cannot be reached (offline flag set, or no connection)."""


class RecordFormatError(RuntimeError):
    """A record lacks the field its corpus is read from (e.g. `text`); the message names the fix."""


def _flag_set(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")


def _connect(host: str, port: int, timeout: float) -> None:
    socket.create_connection((host, port), timeout=timeout).close()


def ensure_hub_reachable(spec: CorpusSpec, timeout: float = _PROBE_TIMEOUT_S) -> None:
    """Raise HubUnavailable within about `timeout` seconds unless the hub host accepts a connection."""
    advice = (f"Corpus '{spec.name}' ({spec.hub_id}) cannot be streamed. Use its offline analogue "
              f"instead (source: offline -> {spec.offline}), or download the data and use "
              f"source: local with data_files.")
    for var in _OFFLINE_FLAGS:
        if _flag_set(var):
            raise HubUnavailable(f"{var} is set, so the Hugging Face hub is not contacted. {advice}")
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    outcome: dict = {}

    def probe() -> None:
        try:
            _connect(host, port, timeout)
            outcome["ok"] = True
        except OSError as exc:  # refused, unreachable, DNS failure, timeout
            outcome["error"] = exc

    worker = threading.Thread(target=probe, name="eelib-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if not outcome.get("ok"):
        reason = outcome.get("error") or f"no answer within {timeout:.1f} s"
        raise HubUnavailable(f"Cannot reach {host}:{port} ({reason}). {advice}")


def describe_record(record: dict, limit: int = 160) -> str:
    """A record as JSON, cut to `limit` characters: what an error shows so the record can be found
    with grep (a shuffled stream has no file line to report)."""
    text = json.dumps(record, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def record_text(spec: CorpusSpec, record: dict) -> str | None:
    """The training document of one hub record; None where its field is null."""
    try:  # per record, so the check costs nothing unless it fails
        if spec.text_field == INPUTS_TARGETS:
            inputs, targets = record["inputs"], record["targets"]
            if inputs is None or targets is None:
                return None
            values = {"inputs": inputs, "targets": targets}
        else:
            values = {spec.text_field: record[spec.text_field]}
    except KeyError as missing:  # a whole corpus in the wrong shape: say it once, plainly
        fields = "inputs and targets" if spec.text_field == INPUTS_TARGETS else spec.text_field
        raise RecordFormatError(f"corpus {spec.name!r}: a record has no field {missing.args[0]!r} (its fields: "
                                f"{', '.join(sorted(record)) or 'none'}); eelib reads {fields} of each record, "
                                "so rename the field in your files") from None
    for field, value in values.items():
        if value is not None and not isinstance(value, str):  # a number or a list, in JSON lines
            raise RecordFormatError(f"corpus {spec.name!r}: the {field!r} of a record is a "
                                    f"{type(value).__name__}, not a string: {describe_record(record)}; "
                                    "make it a string or drop that record")
    return render(inputs, targets) if spec.text_field == INPUTS_TARGETS else values[spec.text_field]


def _open_text(f: str):
    """A JSON data file as text, gzip or not (a BOM, as some exporters write, is dropped)."""
    return gzip.open(f, "rt", encoding="utf-8-sig") if f.endswith(".gz") else open(f, encoding="utf-8-sig")


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def first_unreadable_line(files: list[str], max_lines: int = 5_000_000) -> str | None:
    """Where the first line a JSON reader would reject is ("part-001.jsonl line 701: Expecting
    ',' delimiter"), or None. Only called after a read failed: the reader's own message counts
    rows within one read block, which does not find the line in a large file. Reads at most
    `max_lines` lines in all; a file holding one JSON document (an array) is parsed whole."""
    seen = 0
    for f in files:
        if not f.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")):
            continue
        try:
            with _open_text(f) as fh:
                head = fh.read(1)
                while head.isspace():
                    head = fh.read(1)
                if head == "[":  # one JSON document: its parser gives the line
                    rest = fh.read()
                    try:
                        json.loads(head + rest)
                    except ValueError as e:
                        if _is_json(head + rest.split("\n", 1)[0]):  # lines that are arrays, not one array
                            return (f"{f} line 1: a record is a JSON array; each line must be one JSON "
                                    "object holding the text field, e.g. {\"text\": \"...\"}")
                        return f"{f} line {getattr(e, 'lineno', '?')}: {getattr(e, 'msg', e)}"
                    continue
                for i, line in enumerate(fh, start=1):
                    line = (head + line) if i == 1 else line
                    seen += 1
                    if seen > max_lines:
                        return None
                    if not line.strip():
                        continue
                    try:
                        json.loads(line)
                    except ValueError as e:
                        return f"{f} line {i}: {getattr(e, 'msg', e)}"
        except (OSError, UnicodeDecodeError, EOFError, zlib.error) as e:  # EOFError: a cut-off .gz
            return f"{f}: {type(e).__name__}: {e}"
    return None


def _first_record(f: str) -> dict | None:
    """The first record of a JSON-lines or JSON-array file, or None (empty, or unreadable)."""
    try:
        with _open_text(f) as fh:
            text = fh.read(1 << 20)
    except (OSError, UnicodeDecodeError, EOFError, zlib.error):
        return None
    text = text.lstrip()
    if text.startswith("["):
        try:
            data = json.loads(text)  # a small array file; a large one is cut here and skipped
        except ValueError:
            return None
        return data[0] if data and isinstance(data[0], dict) else None
    line = text.split("\n", 1)[0]
    try:
        record = json.loads(line) if line.strip() else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _kinds(record: dict) -> dict[str, str]:
    return {k: "null" if v is None else type(v).__name__ for k, v in record.items()}


def diagnose_files(files: list[str]) -> str | None:
    """Why a JSON reader may have failed on these files, beyond a malformed line: a file with no
    records, or files whose records have other fields or field types than the first file's (the
    JSON reader of `datasets` takes its columns from the first file and cannot cast the others)."""
    json_files = [f for f in files if not f.endswith(".parquet")]
    for f in json_files:
        if os.path.getsize(f) == 0:
            return f"{f} is empty (no records); remove it"
    firsts = [(f, _first_record(f)) for f in json_files]
    firsts = [(f, r) for f, r in firsts if r is not None]
    if not firsts:
        return None
    f0, kinds0 = firsts[0][0], _kinds(firsts[0][1])
    for f, r in firsts[1:]:
        kinds = _kinds(r)
        if kinds != kinds0:
            diff = sorted(set(kinds.items()) ^ set(kinds0.items()))
            fields = ", ".join(f"{k} ({t})" for k, t in diff[:6])
            return (f"the records of {f} have other fields or field types than those of {f0} "
                    f"({fields}); the reader takes every file's columns from the first file, so keep the "
                    "same fields in every file, e.g. only the text field: jq -c '{text}'")
    return None


def resolve_files(data_files: str) -> list[str]:
    """A file, a directory (searched recursively) or a glob -> sorted list of data files."""
    path = Path(data_files)
    if path.is_dir():
        found = [str(p) for p in path.rglob("*") if p.is_file()]
    else:
        found = glob.glob(data_files, recursive=True)
    files = sorted(f for f in found if f.endswith(_JSON_SUFFIXES) or f.endswith(".parquet"))
    if not files:
        raise FileNotFoundError(f"no .json/.jsonl(.gz) or .parquet files match data_files={data_files!r}")
    if any(f.endswith(".zst") for f in files):
        try:
            import zstandard  # noqa: F401  (what the JSON reader decompresses .zst with)
        except ImportError:  # ImportError, not FileNotFoundError: the files are there, a package is not
            raise ImportError(f"data_files={data_files!r} holds .zst files, which need the zstandard "
                              "package: pip install zstandard (or decompress them)") from None
    return files


def _parquet_rows(f: str) -> int:
    import pyarrow.parquet as pq
    return pq.read_metadata(f).num_rows


def _fields(spec: CorpusSpec) -> list[str]:
    return ["inputs", "targets"] if spec.text_field == INPUTS_TARGETS else [spec.text_field]


def _load_local(spec: CorpusSpec, files: list[str], where: str):
    import datasets

    kinds = {"parquet" if f.endswith(".parquet") else "json" for f in files}
    if len(kinds) > 1:  # validate.validate refuses this first, naming the field
        raise RecordFormatError(f"data_files mixes parquet and JSON files ({files[:3]} …); "
                                "give one format per corpus")
    kind, kw = kinds.pop(), {}
    if kind == "parquet":
        # Only the text columns: other columns may differ between files (a reader given them all
        # takes the first file's schema and fails on the others). Files with no rows are skipped:
        # the reader fails on them ("BatchSize must be greater than 0"), and they hold no text.
        import pyarrow.parquet as pq
        names = pq.read_schema(files[0]).names
        missing = [c for c in _fields(spec) if c not in names]
        if missing:
            raise RecordFormatError(f"corpus {spec.name!r}: {files[0]} has no column {missing[0]!r} (its columns: "
                                    f"{', '.join(names) or 'none'}); eelib reads {' and '.join(_fields(spec))} "
                                    "of each record, so rename the column in your files")
        files = [f for f in files if _parquet_rows(f)] or files[:1]
        kw["columns"] = _fields(spec)
    # Its JSON reader logs a parse error before raising it; texts() re-raises it as one line
    # naming the corpus, so the log line would only repeat it.
    logging.getLogger("datasets.packaged_modules.json.json").setLevel(logging.CRITICAL)
    try:  # the JSON reader reads the first file here, for its columns
        return datasets.load_dataset(kind, data_files=files, split="train", streaming=True, **kw)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # the file's: a .gz that is not gzip, or cut off
        raise _unreadable(spec, where, files, e) from e
    except (OSError, ImportError, MemoryError):  # the machine's, not the file's: as they are
        raise
    except Exception as e:
        raise _unreadable(spec, where, files, e) from e


def _unreadable(spec: CorpusSpec, where: str, files: list[str], e: Exception) -> RecordFormatError:
    """One line for a local file the reader cannot read, naming the file and line where found."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    try:
        line, why = first_unreadable_line(files), None
        why = None if line else diagnose_files(files)
    except OSError:  # the files went away meanwhile: the reader's message stands
        line = why = None
    what = "the first line that is not JSON" if line and " line " in line else "the first unreadable file"
    at = (f"; {what}: {line}; fix or remove it" if line else f"; {why}" if why else "; fix or remove that line or file")
    return RecordFormatError(f"corpus {spec.name!r}: cannot read a record of {where} "
                             f"({type(e).__name__}{': ' + first if first else ''}){at}")


def resolve_revision(spec: CorpusSpec, revision: str | None = None) -> str:
    """The commit the hub serves for `revision` (None: the default branch), for shard manifests.

    The paper names no dataset revisions; recording the resolved commit lets a rerun pin it with
    data.revisions. If the hub answers the connection but not the API call, the requested name is
    recorded with the reason instead of failing a multi-hour tokenization over metadata.
    """
    ensure_hub_reachable(spec)
    try:
        from huggingface_hub import HfApi
        return HfApi().dataset_info(spec.hub_id, revision=revision).sha
    except Exception as exc:  # network or API error: keep going, say so in the manifest and here
        pinned = revision is not None and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)
        if not pinned:  # a commit sha is streamed as requested: nothing can move under it
            print(f"[eelib] {spec.hub_id}: revision {revision or 'main'!r} not resolved to a commit "
                  f"({type(exc).__name__}); streaming it as the hub serves it now. A resumed or extended build "
                  "may then read another commit (it stops with StreamChanged where the documents differ): pin "
                  f"data.revisions.{spec.name} to a commit sha to be sure", file=sys.stderr)
        return f"{revision or 'main'} (unresolved: {type(exc).__name__})"


def input_files(data_files: str) -> list[dict]:
    """The local files a shard was read from, with sizes (hashing hundreds of GB would cost hours)."""
    return [{"path": f, "bytes": os.path.getsize(f)} for f in resolve_files(data_files)]


def _stream(spec: CorpusSpec, split: str, source: str, data_files: str | None,
            revision: str | None = None):
    """(IterableDataset, hash_filter) for one corpus/split/source."""
    import datasets

    official_val = spec.val_split is not None
    if source == "hub":
        ensure_hub_reachable(spec)
        hub_split = (spec.val_split if split == "val" else "train") if official_val else "train"
        ds = datasets.load_dataset(spec.hub_id, spec.hub_config, split=hub_split, streaming=True,
                                   revision=revision)
        return ds, not official_val
    if data_files is None:
        raise ValueError("source='local' needs data_files (a file, directory or glob in the hub's format)")
    files = resolve_files(data_files)
    where = f"data_files={data_files!r}"
    if official_val:
        val_files = official_val_files(files, spec.val_split)
        if val_files:
            chosen = val_files if split == "val" else [f for f in files if f not in val_files]
            return _load_local(spec, chosen, where), False
    return _load_local(spec, files, where), True


def official_val_files(files: list[str], val_split: str) -> list[str]:
    """The files of an official held-out split: named for it (the hub's c4-validation.*.json.gz),
    or under a folder named for it below the files' common folder (c4/validation/part-0.json).
    Without any, the corpus falls back to the hash split."""
    by_name = [f for f in files if val_split in Path(f).name]
    if by_name:
        return by_name
    base = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
    return [f for f in files if any(val_split in part for part in Path(os.path.abspath(f)).relative_to(base).parts[:-1])]


def hub_documents(spec: CorpusSpec, split: str, source: str, seed: int = 0,
                  data_files: str | None = None, revision: str | None = None) -> Iterator[str]:
    """Documents of a real corpus (hub or local copy); ends when the source is exhausted.

    Not a generator function: the hub check and the file lookup run at call time, so a missing
    hub or a bad `data_files` fails where `documents(...)` is called, not at the first `next`.
    """
    ds, hash_split = _stream(spec, split, source, data_files, revision)
    if split == "train":
        ds = ds.shuffle(seed=seed, buffer_size=_SHUFFLE_BUFFER)
    elif hash_split:  # val drawn across the files like train, and fixed (module docstring)
        ds = ds.shuffle(seed=VAL_SEED, buffer_size=_SHUFFLE_BUFFER)

    where = f"data_files={data_files!r}" if source == "local" else f"{spec.hub_id} ({split})"

    field = "inputs/targets" if spec.text_field == INPUTS_TARGETS else spec.text_field

    def texts() -> Iterator[str]:
        records, n, blank = iter(ds), 0, 0
        while True:
            try:
                record = next(records)
            except StopIteration:
                if n and blank == n and source == "local":  # else data.py blames the token budget
                    raise RecordFormatError(f"corpus {spec.name!r}: all {n:,} records of {where} have "
                                            f"an empty {field!r}; put the documents' text there") from None
                return
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # a .gz that is not gzip, or cut off
                if source != "local":
                    raise
                raise _unreadable(spec, where, resolve_files(data_files), e) from e
            except (OSError, ImportError, MemoryError):  # disk, network, a missing package, memory:
                raise                                       # not the file's content; as they are
            except Exception as e:  # a local file the reader cannot parse: name the corpus, one line
                if source != "local":
                    raise
                try:
                    files = resolve_files(data_files)
                except OSError:  # the files went away meanwhile: the reader's message stands
                    files = []
                raise _unreadable(spec, where, files, e) from e
            n += 1
            text = record_text(spec, record)
            if text is None and source == "local":  # a missing field reads as null in a file
                raise RecordFormatError(f"corpus {spec.name!r}: a record of {where} has no {field!r} "
                                        f"value: {describe_record(record)}; every record needs one, "
                                        f"so fill it in or drop that record")
            if not text or text.isspace():
                blank += 1
            if text and (not hash_split or in_split(text, split, spec.heldout_every)):
                yield text

    return texts()
