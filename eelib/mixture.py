"""One exact, auditable mixture sampler for every stage (§3, §4.1, §4.2, §4.4).

It serves three uses with one rule:
  * stage-1 λ-mixing: D_pre once + the first round(λ·N_post) windows of D_post once, spread
    uniformly through the stage (Fig 3a "added" semantics, §4.1);
  * stage-2 replay: D_post repeated for as many epochs as early stopping asks, plus a fraction
    `replay` of D_pre windows (paper: 1%, after Bethune et al. 2025);
  * the compute-matched split (Fig 3b): stage 1 takes the first λ of one pass, stage 2 the rest,
    each once.

The rule: before each window, pick the source whose delivered count lags its target share the most
(largest deficit w_s·(n+1) − c_s, ties to the earlier source). With quotas this lands exactly on
each quota at the end and never strays more than one window from the target share on the way,
so "uniformly spread" holds at every prefix. Inside a source, windows come in a seeded permutation,
reshuffled per epoch. A source marked `once` can never be read twice: asking for a second epoch
raises (the OLMo-core lesson: a rounding slip must not silently train a second epoch).

State is two integers per source plus n, so checkpoints restore it exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Source:
    name: str
    windows: np.ndarray     # [N, seq_len]; a view into the corpus array
    weight: float           # target share of windows
    once: bool = True       # at most one pass (stage 1, compute-matched stage 2)
    quota: int | None = None  # exact number of windows to deliver (None: open-ended)
    prefix: bool = True     # a quota'd one-pass source draws its first `quota` windows (D_post: nested
                            # subsets); False draws `quota` windows from all of them (replay)


class Mixture:
    def __init__(self, sources: list[Source], seed: int):
        if not sources:
            raise ValueError("mixture needs at least one source")
        total_w = sum(s.weight for s in sources)
        if total_w <= 0:
            raise ValueError("mixture weights must sum to > 0")
        for s in sources:
            if s.weight < 0:
                raise ValueError(f"mixture source {s.name}: negative weight")
            if s.once and s.quota is not None and s.quota > len(s.windows):
                raise ValueError(f"mixture source {s.name}: quota {s.quota} windows exceeds one pass "
                                 f"({len(s.windows)} windows); that would be a second epoch")
        self.sources = [s for s in sources if s.weight > 0]
        self.w = np.array([s.weight / total_w for s in self.sources])
        quotas = [s.quota for s in self.sources]
        if all(q is not None for q in quotas) and sum(quotas) > 0:
            # Every source has a quota: the quotas are what gets delivered, so they are the target
            # shares. Weights only roughly proportional to them (stage-2 split + replay rounds its
            # replay quota) would otherwise drift more than one window off near the end.
            self.w = np.array(quotas, dtype=np.float64) / sum(quotas)
        self.seed = seed
        self.n = 0
        self.counts = np.zeros(len(self.sources), dtype=np.int64)
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def total(self) -> int | None:
        """Windows in the whole stage if every source has a quota, else None (open-ended)."""
        if all(s.quota is not None for s in self.sources):
            return int(sum(s.quota for s in self.sources))
        return None

    @property
    def seq_len(self) -> int:
        return int(self.sources[0].windows.shape[1])

    def remaining(self) -> int | None:
        t = self.total
        return None if t is None else t - self.n

    # -- sampling ------------------------------------------------------------------------------
    def _perm(self, i: int, epoch: int) -> np.ndarray:
        key = (i, epoch)
        if key not in self._perm_cache:
            rng = np.random.default_rng([self.seed, i, epoch, 0xE1])
            n = len(self.sources[i].windows)
            s = self.sources[i]
            limit = s.quota if s.once and s.quota and s.prefix else n
            # A quota'd one-pass source permutes only its first `limit` windows: the nested prefix.
            # Without `prefix` it permutes all of them and the quota takes the permutation's head.
            self._perm_cache = {k: v for k, v in self._perm_cache.items() if k[0] != i}
            self._perm_cache[key] = rng.permutation(limit)
        return self._perm_cache[key]

    def _pick(self) -> int:
        deficit = self.w * (self.n + 1) - self.counts
        for i, s in enumerate(self.sources):  # exhausted quotas are never picked
            if s.quota is not None and self.counts[i] >= s.quota:
                deficit[i] = -np.inf
        i = int(np.argmax(deficit))
        if not np.isfinite(deficit[i]):
            raise StopIteration("mixture exhausted: every source delivered its quota")
        return i

    def next_window(self) -> tuple[int, np.ndarray]:
        i = self._pick()
        s = self.sources[i]
        c = int(self.counts[i])
        size = s.quota if (s.once and s.quota) else len(s.windows)
        epoch, pos = divmod(c, size)
        if s.once and epoch >= 1:
            raise RuntimeError(f"mixture source {s.name}: one pass exhausted after {c} windows; "
                               "refusing a silent second epoch")
        w = s.windows[self._perm(i, epoch)[pos]]
        self.counts[i] += 1
        self.n += 1
        return i, w

    def next_batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """[batch_size, seq_len] tokens and the source index of each row. Shorter at the very end."""
        rows, src = [], []
        for _ in range(batch_size):
            if self.remaining() == 0:
                break
            i, w = self.next_window()
            rows.append(w)
            src.append(i)
        if not rows:
            raise StopIteration("mixture exhausted")
        return np.stack(rows), np.array(src)

    # -- audit and checkpointing ---------------------------------------------------------------
    def audit(self) -> dict:
        """What was delivered, per source, next to what was asked (written with every stage)."""
        out = {}
        for i, s in enumerate(self.sources):
            c = int(self.counts[i])
            out[s.name] = {
                "windows": c, "tokens": c * self.seq_len,
                "requested_windows": s.quota, "target_share": float(self.w[i]),
                "delivered_share": c / max(self.n, 1),
                "pool_windows": len(s.windows), "epochs": c / len(s.windows),
                "once": s.once,
            }
        return out

    def state_dict(self) -> dict:
        return {"n": int(self.n), "counts": [int(c) for c in self.counts],
                "names": [s.name for s in self.sources], "seed": self.seed}

    def load_state_dict(self, st: dict) -> None:
        if st["names"] != [s.name for s in self.sources] or st["seed"] != self.seed:
            raise ValueError("mixture state belongs to a different mixture (sources or seed differ)")
        self.n = int(st["n"])
        self.counts = np.array(st["counts"], dtype=np.int64)


def check_delivery(audit: dict) -> None:
    """Raise if a quota'd source delivered other than its quota or a one-pass source repeated."""
    for name, a in audit.items():
        if a["requested_windows"] is not None and a["windows"] != a["requested_windows"]:
            raise AssertionError(f"mixture audit: {name} delivered {a['windows']} windows, "
                                 f"requested {a['requested_windows']}")
        if a["once"] and a["epochs"] > 1.0:
            raise AssertionError(f"mixture audit: {name} ran {a['epochs']:.3f} epochs; one pass allowed")
