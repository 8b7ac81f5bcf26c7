"""The assumptions of the paper's §5 theorems (App. C) as checks on a TheoryConfig, and the auto
fields (init scale, stage budgets) they determine. eelib/theory.py simulates; this refuses the
settings the theorems do not cover, naming the assumption.

How we read the assumptions (the notes are a summary; the exact appendix text was not available):
  * Mixture. The notes give the mixed task's covariance as (1-a)Sigma_pre + a Sigma_post, and
    Thm 5.1 gives the mixed solution's specialized value as a*beta. We read that as a single task with
    target A_mix = (1-a) A_pre P_pre + a A_post (P_pre projects on D_pre's input support) and
    isotropic inputs: `mixture="whitened"` (default). `mixture="population"` instead trains on the
    literal mixture of the two input distributions, (1-a) L_pre + a L_post; there the specialized
    features grow at the same rate (4 eta a beta) but converge to beta, not a*beta.
  * Singular values are >= 0 (C.1). Inconsistent: |sigma_post_inc - sigma_pre_inc| > c_mis and
    |sigma_post_inc - sigma_ft_inc| > c_mis. Specialized: 0 < beta < c_mis/2.
    With values >= 0 these, together with C.6, force sigma_post_inc < sigma_pre_inc and alpha > 2/3.
  * C.5: the smallest invariant value exceeds every other value of every task, the mixture included.
  * C.6: alpha*beta > m_inc = (1-a) sigma_pre_inc + a sigma_post_inc (the mixed inconsistent value),
    so that the specialized features are learned first in the mixed run.
  * C.8: init W1 = exp(-T) U, W2 = exp(-T) V^T (the paper's exp(-T) I, written in the singular basis so
    the dynamics stay exactly diagonal). "Small" is read as: a feature that is absent (<= eps) at a
    stage start stays below eps through every stage budget. A feature's value s grows at most like
    exp(4 eta sigma t) from s, so we require 2T >= ln(1/eps) + 4 eta (m_inc K1 + max(beta,
    sigma_post_inc) K2 + sigma_ft_inc K3). `init_T=0` picks the smallest integer T that satisfies it.
  * Thm C.9 (sequential learning) fixes the stage-1 stop: K1 must reach (within eps) every feature
    whose value is >= alpha*beta in the mixed run and >= sigma_pre_inc in the unmixed run, using the
    logistic time ln((s*/s0 - 1)(s* - eps)/eps) / (4 eta r) of the continuous-time dynamics.
    `steps_pre=0` takes 1.2x that time (the 20% covers discretisation); the check counts the steps
    of the discrete recursion itself (`_learn_steps`), which take a little longer.
  * C.11: 4 eta (lam + 2) Gamma < 1. C.12: Gamma bounds every target value (gamma=0: Gamma = the
    largest one). C.13: K2 >= ln(100 Gamma / eps) / (lam c_min), K2 counted in GD steps, c_min = the
    smallest nonzero value of Sigma_post. `steps_post=0` takes that bound.
  * Stage 3 has no stated bound; `steps_ft=0` takes ln(100 Gamma/eps) / (4 eta c_ft), c_ft = the
    smallest nonzero value of Sigma_ft (time for GD to close a gap of size Gamma to eps/100).
A parameter set that violates one of these raises ValueError naming the assumption. `run` then
checks the premise numerically as well: the features the theorems say are absent (the mixed run's
inconsistent ones, the unmixed run's specialized ones) must stay below eps after every stage, else
ValueError ("C.8 violated numerically"). That catches seeds the inequality above does not model:
roundoff in the random basis, and sampled covariances (`n_samples > 0`), which couple the features.
It also checks that stage 1 ends within eps of the features it must learn (C.9) and stage 2 within
eps of the proximal optimum on the features present at its start (C.13 as printed ignores eta).
"""
from __future__ import annotations

import math
from dataclasses import replace

from eelib.theory import TheoryConfig, task_values

def _learn_time(target: float, rate: float, s0: float, eps: float) -> float:
    """Logistic time for a feature to go from s0 to target - eps at initial growth rate `rate`."""
    if target <= eps:
        return 0.0
    return math.log((target / s0 - 1) * (target - eps) / eps) / rate


def derived(cfg: TheoryConfig) -> dict[str, float]:
    a, b = cfg.alpha, cfg.beta
    post, ft = task_values(cfg)["sigma_post"], task_values(cfg)["sigma_ft"]
    gamma = cfg.gamma or max(cfg.sigma_inv_max, cfg.sigma_pre_inc, cfg.sigma_post_inc,
                             cfg.sigma_ft_inc, cfg.beta)
    return dict(m_inc=(1 - a) * cfg.sigma_pre_inc + a * cfg.sigma_post_inc, gamma=gamma,
                c_min=float(post[post > 0].min()), c_ft=float(ft[ft > 0].min()),
                spec_target=a * b if cfg.mixture == "whitened" else b)


def _stage1_time(cfg: TheoryConfig, T: float) -> float:
    d, eta, s0 = derived(cfg), cfg.lr, math.exp(-2 * T)
    ab = cfg.alpha * cfg.beta
    return max(_learn_time(d["spec_target"], 4 * eta * ab, s0, cfg.eps),           # mixed run
               _learn_time(cfg.sigma_pre_inc, 4 * eta * cfg.sigma_pre_inc, s0, cfg.eps),  # unmixed
               _learn_time(cfg.sigma_inv_min, 4 * eta * cfg.sigma_inv_min, s0, cfg.eps))


def _learn_steps(target: float, eta: float, s0: float, eps: float, cap: int = 10 ** 7) -> int:
    """Gradient-descent steps for a feature of the balanced factors (w1 = w2 = w, theta = w^2) to
    go from s0 to within eps of `target`: the discrete recursion w <- w (1 - 2 eta (w^2 - target))
    itself. Its early growth per step is 2 ln(1 + 2 eta target), a little below the continuous
    4 eta target of `_learn_time`, so the continuous time is a few tens of steps short at the
    defaults (a review found steps_pre 47 steps below the need accepted, with alpha*beta missed
    by 4 eps); the stated stage-1 check uses this one."""
    if target <= eps:
        return 0
    w, k = math.sqrt(s0), 0
    while target - w * w >= eps and k < cap:
        w *= 1 - 2 * eta * (w * w - target)
        k += 1
    return k


def _stage1_steps(cfg: TheoryConfig, T: float) -> int:
    d, s0 = derived(cfg), math.exp(-2 * T)
    return max(_learn_steps(v, cfg.lr, s0, cfg.eps) for v in (d["spec_target"], cfg.sigma_pre_inc, cfg.sigma_inv_min))


def _growth(cfg: TheoryConfig, K1: int, K2: int, K3: int) -> float:
    """Log-growth budget of an absent feature over all stages (C.8 reading)."""
    d = derived(cfg)
    return 4 * cfg.lr * (max(d["m_inc"], 0) * K1 + max(cfg.beta, cfg.sigma_post_inc) * K2
                         + cfg.sigma_ft_inc * K3)


def resolve(cfg: TheoryConfig) -> TheoryConfig:
    """Fill the auto fields (0) as the module docstring describes; explicit values are kept."""
    d = derived(cfg)
    K2 = cfg.steps_post or math.ceil(math.log(100 * d["gamma"] / cfg.eps) / (cfg.lam * d["c_min"]))
    K3 = cfg.steps_ft or math.ceil(math.log(100 * d["gamma"] / cfg.eps) / (4 * cfg.lr * d["c_ft"]))
    T = cfg.init_T
    if not T:  # smallest integer T whose stage-1 window leaves every absent feature below eps
        # exp(-2T) underflows float64 past T ~ 350, so the search stops there.
        for T in range(1, 350):
            K1 = cfg.steps_pre or math.ceil(1.2 * _stage1_time(cfg, T))
            if 2 * T >= math.log(1 / cfg.eps) + _growth(cfg, K1, K2, K3):
                break
        else:  # K1 grows with T as fast as 2T does: no init is small enough (alpha*beta ~ m_inc)
            raise ValueError(
                f"Assumption C.8 cannot be met: no init scale exp(-T), T < 350, keeps absent "
                f"features below eps over the stage budgets (the stage-1 window grows with T as "
                f"fast as the margin); widen the C.6 gap alpha*beta="
                f"{cfg.alpha * cfg.beta:.4g} vs {d['m_inc']:.4g}, or shorten steps_post/steps_ft")
    K1 = cfg.steps_pre or math.ceil(1.2 * _stage1_time(cfg, T))
    return replace(cfg, init_T=float(T), steps_pre=K1, steps_post=K2, steps_ft=K3,
                   gamma=d["gamma"])


def validate(cfg: TheoryConfig) -> TheoryConfig:
    """Resolve auto fields and refuse parameter sets outside the theorems' assumptions."""
    if cfg.k < 1 or cfg.n - 2 * cfg.k < 1:
        raise ValueError(f"need k >= 1 and n - 2k >= 1 invariant features (n={cfg.n}, k={cfg.k})")
    if cfg.mixture not in ("whitened", "population"):
        raise ValueError(f"mixture must be 'whitened' or 'population', got {cfg.mixture!r}")
    if cfg.basis not in ("singular", "random"):
        raise ValueError(f"basis must be 'singular' or 'random', got {cfg.basis!r}")
    if not 0 < cfg.alpha <= 1:
        raise ValueError(f"Early-exposure weight out of range: alpha={cfg.alpha:.4g} must lie in "
                         f"(0, 1] (alpha=0 is the unmixed run, which run() always adds)")
    if cfg.lr <= 0 or cfg.eps <= 0:
        raise ValueError("need lr > 0 and eps > 0")
    vals = [cfg.sigma_inv_max, cfg.sigma_inv_min, cfg.sigma_pre_inc, cfg.sigma_post_inc,
            cfg.sigma_ft_inc, cfg.beta, cfg.c_mis]
    if min(vals) < 0 or cfg.sigma_inv_min > cfg.sigma_inv_max:
        raise ValueError("Assumption C.1 violated: singular values must be >= 0 "
                         "(and sigma_inv_min <= sigma_inv_max)")
    for other in ("pre", "ft"):
        gap = abs(cfg.sigma_post_inc - getattr(cfg, f"sigma_{other}_inc"))
        if gap <= cfg.c_mis:
            raise ValueError(f"Inconsistent-feature assumption violated: |sigma_post_inc - "
                             f"sigma_{other}_inc|={gap:.4g} must exceed c_mis={cfg.c_mis:.4g}")
    if not 0 < cfg.beta < cfg.c_mis / 2:
        raise ValueError(f"Specialized-feature assumption violated: beta={cfg.beta:.4g} must lie "
                         f"in (0, c_mis/2={cfg.c_mis / 2:.4g}); lower beta or raise c_mis")
    d = derived(cfg)
    ab = cfg.alpha * cfg.beta
    others = max(cfg.sigma_pre_inc, cfg.sigma_post_inc, cfg.sigma_ft_inc, cfg.beta, d["m_inc"])
    if cfg.sigma_inv_min <= others:
        raise ValueError(f"Assumption C.5 violated: smallest invariant value {cfg.sigma_inv_min:.4g} "
                         f"must exceed every other feature value (largest {others:.4g})")
    if ab <= d["m_inc"]:
        raise ValueError(f"Assumption C.6 violated: alpha*beta={ab:.4g} must exceed the mixed "
                         f"inconsistent value (1-alpha)*sigma_pre_inc + alpha*sigma_post_inc="
                         f"{d['m_inc']:.4g}; raise alpha or beta")
    if cfg.lam <= 0:
        raise ValueError("Assumption C.13 violated: the proximal strength lam must be > 0")
    top = max(cfg.sigma_inv_max, cfg.sigma_pre_inc, cfg.sigma_post_inc, cfg.sigma_ft_inc, cfg.beta)
    if cfg.gamma and cfg.gamma < top:
        raise ValueError(f"Assumption C.12 violated: Gamma={cfg.gamma:.4g} must bound every target "
                         f"value (largest {top:.4g})")
    r = resolve(cfg)
    step = 4 * cfg.lr * (cfg.lam + 2) * r.gamma
    if step >= 1:
        raise ValueError(f"Assumption C.11 violated: 4*eta*(lam+2)*Gamma={step:.4g} must be < 1; "
                         f"lower lr below {1 / (4 * (cfg.lam + 2) * r.gamma):.4g}")
    k2_min = math.log(100 * r.gamma / cfg.eps) / (cfg.lam * d["c_min"])
    if r.steps_post < k2_min:
        raise ValueError(f"Assumption C.13 violated: steps_post={r.steps_post} must be >= "
                         f"ln(100*Gamma/eps)/(lam*c_min)={k2_min:.1f}")
    k1_min = _stage1_steps(r, r.init_T)
    if r.steps_pre < k1_min:
        raise ValueError(f"Theorem C.9 stopping time violated: steps_pre={r.steps_pre} is below "
                         f"the {k1_min} gradient steps the features stage 1 must learn take")
    need = math.log(1 / cfg.eps) + _growth(r, r.steps_pre, r.steps_post, r.steps_ft)
    if 2 * r.init_T < need:
        raise ValueError(f"Assumption C.8 violated: init exp(-T) with T={r.init_T:.4g} is not small "
                         f"enough; absent features would pass eps (need T >= {need / 2:.1f})")
    return r
