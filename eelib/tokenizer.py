"""Tokenizers: bytes (offline default), SmolLM2's (paper scale), or any saved Hugging Face tokenizer.

A tokenizer here is what the shard builder needs: `encode_batch(texts) -> list[list[int]]`,
`decode(ids)`, `vocab_size` and `eos_id` (the id that separates packed documents, eelib/data.py).
Ids must fit uint16, the shards' dtype.
"""
from __future__ import annotations

from pathlib import Path

from eelib.config import ConfigError, digest
from eelib.io import sha256_file


class ByteTokenizer:
    """UTF-8 bytes 0..255, plus end-of-document (256) and a spare pad id (257). Offline, exact."""
    vocab_size = 258
    eos_id = 256

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face fast tokenizer: SmolLM2's (the paper-scale path, vocab 49,152) or one saved on disk.

    `name` is "smollm2" or a directory written by `save_pretrained` (tokenizer.json and
    tokenizer_config.json), e.g. SmolLM2's tokenizer files copied to a cluster without hub access.
    Documents are encoded in batches through the Rust backend, which spreads a batch over all
    cores (TOKENIZERS_PARALLELISM); one call per document leaves C4-scale builds single-threaded.
    """
    hub_id = "HuggingFaceTB/SmolLM2-135M"

    def __init__(self, name: str):
        from transformers import AutoTokenizer
        if name == "smollm2":
            try:  # a copy in the Hugging Face cache works offline (download once on a login node)
                self.tok = AutoTokenizer.from_pretrained(self.hub_id, local_files_only=True)
            except OSError:
                from eelib.corpora import CORPORA, HubUnavailable, ensure_hub_reachable
                try:
                    ensure_hub_reachable(CORPORA["c4"])
                except HubUnavailable as e:
                    raise HubUnavailable(
                        f"tokenizer {self.hub_id}: not in the Hugging Face cache and the hub cannot be "
                        "reached; set data.tokenizer to a directory holding its tokenizer.json, or use "
                        "data.tokenizer: bytes with data.source: offline") from e
                self.tok = AutoTokenizer.from_pretrained(self.hub_id)
        else:
            self.tok = AutoTokenizer.from_pretrained(name)
        self.vocab_size = len(self.tok)
        self.eos_id = self.tok.eos_token_id
        if self.eos_id is None:
            raise ConfigError(f"data.tokenizer: {name} has no eos_token, which separates packed documents; "
                             "set eos_token in its tokenizer_config.json")
        self._backend = self.tok.backend_tokenizer

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # encode_batch_fast (tokenizers >= 0.21) skips the character offsets eelib never reads:
        # the same ids, 1.6x the speed on a byte-level BPE here (docs/corpora.md)
        encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])


def get_tokenizer(name: str):
    if name == "bytes":
        return ByteTokenizer()
    if name == "smollm2" or Path(name).is_dir():
        return HFTokenizer(name)
    raise ValueError(f"data.tokenizer: unknown tokenizer {name!r}; use bytes, smollm2, or a directory "
                     "holding a saved Hugging Face tokenizer (tokenizer.json)")


def tokenizer_id(name: str) -> str:
    """What identifies a tokenizer in cache and stage keys: its name, or for a directory the hash of
    its files. Moving the directory keeps the key; editing the tokenizer in place changes it."""
    if name in ("bytes", "smollm2"):
        return name
    d = Path(name)
    files = [d / f for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")]
    return "dir:" + digest([sha256_file(f) for f in files if f.exists()])


def tokenizer_vocab(name: str) -> int:
    """Vocabulary size (added tokens included) without building the full tokenizer."""
    if name == "bytes":
        return ByteTokenizer.vocab_size
    if name == "smollm2":
        return 49152
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(Path(name) / "tokenizer.json")).get_vocab_size(with_added_tokens=True)


def train_bpe(texts, vocab_size: int, where: Path, eos: str = "<|endoftext|>") -> Path:
    """Train a byte-level BPE on `texts` and save it as a tokenizer directory for `data.tokenizer`.

    For studies on new data without a tokenizer of their own, and for the tests and benchmarks of
    the saved-tokenizer path. Byte-level, so every text round-trips; `eos` is id 0.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[eos], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos).save_pretrained(where)
    return Path(where)
