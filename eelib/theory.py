"""The paper's §5 theory, simulated: a two-layer linear network trained through three stages.

Model (§5, App. C). theta = W1 @ W2 (both n x n) is trained by full-batch gradient descent on
population squared losses L_t(theta) = E||theta x - A_t x||^2 = tr((theta - A_t) C_t (theta - A_t)^T),
where C_t = E[x x^T] is task t's input covariance. Every loss is quadratic, so it is kept as
(C, B = A C): the gradient is 2 (theta C - B). Results are exact and deterministic (float64 numpy);
`n_samples > 0` swaps in empirical covariances of sampled inputs instead.

Tasks and feature blocks (Assumption C.1: A_t = U Sigma_t V^T with shared U, V). `basis="singular"`
(default) takes U = V = I: the losses are rotation-invariant, so this is the same problem written in
its own basis, and there float64 keeps every off-diagonal entry exactly zero, as the theorems'
exact arithmetic does. `basis="random"` draws Haar U, V per seed: the same dynamics, but roundoff
(~1e-16) then seeds every absent feature far above C.8's exp(-2T), and a long stage can grow it.
Feature i is the pair (u_i, v_i); its value in theta is u_i^T theta v_i. Blocks, in order:
  invariant    n-2k features, the same in every task, spaced from sigma_inv_max down to sigma_inv_min;
  inconsistent k features with values sigma_pre_inc / sigma_post_inc / sigma_ft_inc;
  specialized  k features, value beta in A_post. D_pre and D_ft have zero input covariance along
               them (x ~ N(0, I_{n-k}) in the V basis); D_post has x ~ N(0, I_n).
Stage 1 (pretraining) trains on D_pre alone ("unmixed") or on the early-exposure mixture (1-a)D_pre
+ aD_post ("mixed"). Stage 2 trains on D_post with the proximal term lam ||theta - theta_0||_F^2
(theta_0 = the stage-2 start; Thm 5.2 / C.15). Stage 3 is plain GD on D_ft (Thm 5.3 / C.17).

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
from dataclasses import asdict, dataclass, replace

import numpy as np

STAGES = ("pretrain", "posttrain", "finetune")
RUNS = ("mixed", "unmixed")


@dataclass(frozen=True)
class TheoryConfig:
    n: int = 8                    # features (matrix size); n - 2k invariant
    k: int = 2                    # inconsistent and specialized features each
    alpha: float = 0.9            # early-exposure weight of D_post in stage 1 (mixed run)
    beta: float = 0.45            # specialized value in A_post
    c_mis: float = 1.0            # inconsistent features differ by more than this
    sigma_inv_max: float = 3.0    # invariant values, evenly spaced max..min
    sigma_inv_min: float = 2.0
    sigma_pre_inc: float = 1.2    # inconsistent values per task
    sigma_post_inc: float = 0.1
    sigma_ft_inc: float = 1.3
    lr: float = 0.02              # eta, every stage
    lam: float = 0.1              # proximal strength in stage 2
    eps: float = 1e-3             # convergence tolerance of Thm 5.3's bound
    init_T: float = 0.0           # init scale exp(-T); 0 = smallest T satisfying C.8
    gamma: float = 0.0            # Gamma of C.11-C.13; 0 = largest target value
    steps_pre: int = 0            # 0 = auto (Thm C.9 window), see module docstring
    steps_post: int = 0           # 0 = auto (C.13 bound)
    steps_ft: int = 0             # 0 = auto
    mixture: str = "whitened"     # "whitened" (paper's Sigma_mixed) or "population"
    basis: str = "singular"       # "singular" (U = V = I, exact) or "random" (Haar U, V per seed)
    n_samples: int = 0            # 0 = population covariances; >0 = empirical ones
    seed: int = 0                 # draws U, V (and samples)
    points_per_stage: int = 100   # trajectory records per stage


# ----------------------------------------------------------------------------- tasks

def task_values(cfg: TheoryConfig) -> dict[str, np.ndarray]:
    """Diagonal of Sigma_t (feature values) and of the input covariance per task, in feature order."""
    ni, k = cfg.n - 2 * cfg.k, cfg.k
    inv = np.linspace(cfg.sigma_inv_max, cfg.sigma_inv_min, ni)
    z, one = np.zeros(k), np.ones(k)
    vals = {
        "pre": np.concatenate([inv, cfg.sigma_pre_inc * one, z]),
        "post": np.concatenate([inv, cfg.sigma_post_inc * one, cfg.beta * one]),
        "ft": np.concatenate([inv, cfg.sigma_ft_inc * one, z]),
    }
    cov = {"pre": np.r_[np.ones(ni + k), z], "post": np.ones(cfg.n), "ft": np.r_[np.ones(ni + k), z]}
    return {**{f"sigma_{t}": v for t, v in vals.items()}, **{f"cov_{t}": c for t, c in cov.items()}}


def blocks(cfg: TheoryConfig) -> list[str]:
    ni = cfg.n - 2 * cfg.k
    return ["invariant"] * ni + ["inconsistent"] * cfg.k + ["specialized"] * cfg.k


def _orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))  # Haar-distributed


class Tasks:
    """U, V and the quadratic form (C, B) of every loss; L(theta) = tr(th C th^T) - 2 tr(th B^T) + c."""

    def __init__(self, cfg: TheoryConfig):
        rng = np.random.default_rng(cfg.seed)
        # Drawn in both bases, so the sampled inputs of a seed do not depend on the basis.
        self.U, self.V = _orthogonal(rng, cfg.n), _orthogonal(rng, cfg.n)
        if cfg.basis == "singular":
            self.U = self.V = np.eye(cfg.n)
        tv = task_values(cfg)
        self.A = {t: self.U @ np.diag(tv[f"sigma_{t}"]) @ self.V.T for t in ("pre", "post", "ft")}
        # Held-out (evaluation) losses always use the exact population covariances.
        self.C_true = {t: self.V @ np.diag(tv[f"cov_{t}"]) @ self.V.T for t in ("pre", "post", "ft")}
        self.C = {t: self._cov(rng, cfg, c) for t, c in self.C_true.items()}
        a = cfg.alpha
        B_mix = (1 - a) * self.A["pre"] @ self.C["pre"] + a * self.A["post"] @ self.C["post"]
        if cfg.mixture == "whitened":  # one task, target = mixed cross-covariance, x ~ N(0, I_n)
            C_mix = self._cov(rng, cfg, np.eye(cfg.n))
            B_mix = (1 - a) * self.A["pre"] @ self.C_true["pre"] + a * self.A["post"]
            B_mix = B_mix @ C_mix
        else:  # literal mixture (1-a) L_pre + a L_post
            C_mix = (1 - a) * self.C["pre"] + a * self.C["post"]
        self.train = {t: (self.C[t], self.A[t] @ self.C[t]) for t in ("pre", "post", "ft")}
        self.train["mix"] = (C_mix, B_mix)

    @staticmethod
    def _cov(rng: np.random.Generator, cfg: TheoryConfig, C: np.ndarray) -> np.ndarray:
        if cfg.n_samples <= 0:
            return C
        w, Q = np.linalg.eigh(C)
        x = rng.standard_normal((cfg.n_samples, cfg.n)) * np.sqrt(np.clip(w, 0, None)) @ Q.T
        return x.T @ x / cfg.n_samples

    def loss(self, theta: np.ndarray, task: str) -> float:
        D = theta - self.A[task]
        return float(np.trace(D @ self.C_true[task] @ D.T))

    def features(self, theta: np.ndarray) -> np.ndarray:
        """Signed feature values u_i^T theta v_i (Thm 5.1's diagonal)."""
        return np.diag(self.U.T @ theta @ self.V).copy()

    def off_diagonal(self, theta: np.ndarray) -> float:
        M = self.U.T @ theta @ self.V
        return float(np.linalg.norm(M - np.diag(np.diag(M))))


# ----------------------------------------------------------------------------- assumptions

def _learn_time(target: float, rate: float, s0: float, eps: float) -> float:
    """Logistic time for a feature to go from s0 to target - eps at initial growth rate `rate`."""
    if target <= eps:
        return 0.0
    return math.log((target / s0 - 1) * (target - eps) / eps) / rate


def _derived(cfg: TheoryConfig) -> dict[str, float]:
    a, b = cfg.alpha, cfg.beta
    post, ft = task_values(cfg)["sigma_post"], task_values(cfg)["sigma_ft"]
    gamma = cfg.gamma or max(cfg.sigma_inv_max, cfg.sigma_pre_inc, cfg.sigma_post_inc,
                             cfg.sigma_ft_inc, cfg.beta)
    return dict(m_inc=(1 - a) * cfg.sigma_pre_inc + a * cfg.sigma_post_inc, gamma=gamma,
                c_min=float(post[post > 0].min()), c_ft=float(ft[ft > 0].min()),
                spec_target=a * b if cfg.mixture == "whitened" else b)


def _stage1_time(cfg: TheoryConfig, T: float) -> float:
    d, eta, s0 = _derived(cfg), cfg.lr, math.exp(-2 * T)
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
    d, s0 = _derived(cfg), math.exp(-2 * T)
    return max(_learn_steps(v, cfg.lr, s0, cfg.eps) for v in (d["spec_target"], cfg.sigma_pre_inc, cfg.sigma_inv_min))


def _growth(cfg: TheoryConfig, K1: int, K2: int, K3: int) -> float:
    """Log-growth budget of an absent feature over all stages (C.8 reading)."""
    d = _derived(cfg)
    return 4 * cfg.lr * (max(d["m_inc"], 0) * K1 + max(cfg.beta, cfg.sigma_post_inc) * K2
                         + cfg.sigma_ft_inc * K3)


def resolve(cfg: TheoryConfig) -> TheoryConfig:
    """Fill the auto fields (0) as the module docstring describes; explicit values are kept."""
    d = _derived(cfg)
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
    d = _derived(cfg)
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


# ----------------------------------------------------------------------------- training

def train_stage(tasks: Tasks, W1: np.ndarray, W2: np.ndarray, task: str, steps: int, lr: float,
                lam: float = 0.0, record_every: int = 1):
    """Full-batch GD on the factors; lam > 0 adds the stage-2 proximal term (Thm 5.2 / C.15)."""
    C, B = tasks.train[task]
    theta0 = W1 @ W2
    traj = [(0, tasks.features(theta0))]
    for t in range(1, steps + 1):
        G = 2 * (W1 @ W2 @ C - B)            # d/dtheta of E||theta x - A x||^2
        if lam:
            G = G + 2 * lam * (W1 @ W2 - theta0)
        W1, W2 = W1 - lr * G @ W2.T, W2 - lr * W1.T @ G
        if t % record_every == 0 or t == steps:
            traj.append((t, tasks.features(W1 @ W2)))
    return W1, W2, traj


def _losses(tasks: Tasks, theta: np.ndarray) -> dict[str, float]:
    return {f"L_{t}": tasks.loss(theta, t) for t in ("pre", "post", "ft")}


def forgetting_bound(cfg: TheoryConfig) -> float:
    """Thm 5.3 / C.17 lower bound on unmixed forgetting: k [c_mis^2 - 4 beta eps - 2 c_mis eps]."""
    return cfg.k * (cfg.c_mis ** 2 - 4 * cfg.beta * cfg.eps - 2 * cfg.c_mis * cfg.eps)


ABSENT = {"mixed": "inconsistent", "unmixed": "specialized"}  # Thm 5.1: what each run lacks


def check_absent(res: dict) -> None:
    """The premise of Thm 5.2-5.3, measured: each run's absent block stays below eps after every
    stage. Raises ValueError naming the first run, block, stage and value that breaks it."""
    eps, bl = res["config"]["eps"], np.array(res["blocks"])
    for name, block in ABSENT.items():
        for stage in STAGES:
            v = float(np.abs(res["runs"][name]["features"][stage][bl == block]).max())
            if not v < eps:
                raise ValueError(
                    f"Assumption C.8 violated numerically: the {name} run's {block} features "
                    f"reached {v:.3g} > eps={eps:.3g} after {stage}; a seed larger than exp(-2T) "
                    f"grew (roundoff in basis='random', or sampled inputs with n_samples > 0); "
                    f"use basis='singular' and population losses, or shorten the stage budgets")


def _check_reached(tasks: Tasks, name: str, stage: str, theta: np.ndarray, target: np.ndarray,
                   which: np.ndarray, eps: float, why: str) -> None:
    """The features `which` of theta are within eps of `target`'s, else ValueError naming them."""
    gap = np.abs(tasks.features(theta) - tasks.features(target))[which]
    if gap.size and not gap.max() < eps:
        raise ValueError(f"{why} violated numerically: after {stage}, the {name} run's features are up "
                         f"to {gap.max():.3g} from their target (eps={eps:.3g}); lengthen the stage "
                         "(steps_pre / steps_post) or raise lr within C.11")


def run(cfg: TheoryConfig, check: bool = True) -> dict:
    """Mixed and unmixed three-stage runs. check=False skips the assumption checks (for sweeps),
    the stated ones (validate) and the measured ones: absent features stay below eps
    (check_absent), stage 1 ends within eps of the features it must learn (Thm C.9), stage 2 ends
    within eps of the proximal optimum on the features present at its start (C.13, Thm 5.2)."""
    cfg = validate(cfg) if check else resolve(cfg)
    tasks = Tasks(cfg)
    s = math.exp(-cfg.init_T)
    steps = dict(zip(STAGES, (cfg.steps_pre, cfg.steps_post, cfg.steps_ft)))
    out = {"config": asdict(cfg), "blocks": blocks(cfg), "bound": forgetting_bound(cfg), "runs": {}}
    for name in RUNS:
        W1, W2 = s * tasks.U, s * tasks.V.T   # C.8: exp(-T) I in the singular basis
        stage_task = {"pretrain": "mix" if name == "mixed" else "pre", "posttrain": "post",
                      "finetune": "ft"}
        rec, offset = {"features": {}, "losses": {}, "trajectory": []}, 0
        for stage in STAGES:
            every = max(1, steps[stage] // cfg.points_per_stage)
            lam = cfg.lam if stage == "posttrain" else 0.0
            theta_start = W1 @ W2
            W1, W2, traj = train_stage(tasks, W1, W2, stage_task[stage], steps[stage], cfg.lr,
                                       lam, every)
            theta = W1 @ W2
            if check and stage != "finetune":
                C, B = tasks.train[stage_task[stage]]
                if stage == "pretrain":  # C.9: what stage 1 must learn, at least the smallest of these
                    target = B @ np.linalg.pinv(C)
                    least = (_derived(cfg)["spec_target"] if name == "mixed" else cfg.sigma_pre_inc) - cfg.eps
                    _check_reached(tasks, name, stage, theta, target, tasks.features(target) >= least,
                                   cfg.eps, "Theorem C.9 (stage 1 stops once these are learned)")
                else:  # the proximal optimum, on the features present at the stage start
                    target = (B + lam * theta_start) @ np.linalg.pinv(C + lam * np.eye(cfg.n))
                    _check_reached(tasks, name, stage, theta, target,
                                   np.abs(tasks.features(theta_start)) >= cfg.eps, cfg.eps,
                                   "Assumption C.13 (stage 2 reaches the proximal optimum)")
            rec["features"][stage] = tasks.features(theta)
            rec["losses"][stage] = _losses(tasks, theta)
            rec["trajectory"] += [(stage, offset + t, v) for t, v in traj]
            offset += steps[stage]
        rec["off_diagonal"] = tasks.off_diagonal(theta)
        L = rec["losses"]
        rec["L_im"] = L["posttrain"]["L_post"]          # immediate post-training loss
        rec["L_ret"] = L["finetune"]["L_post"]          # retained after fine-tuning
        rec["L_ft"] = L["finetune"]["L_ft"]
        rec["L_ft_start"] = L["posttrain"]["L_ft"]      # L_ft before fine-tuning (on theta_post)
        rec["forgetting"] = rec["L_ret"] - rec["L_im"]  # Delta of Thm 5.3
        out["runs"][name] = rec
    if check:
        check_absent(out)
    return out


# ----------------------------------------------------------------------------- tables

def summary(res: dict) -> dict:
    """Scalars of one run() result: forgetting mixed vs unmixed vs bound, and block means."""
    row = {"alpha": res["config"]["alpha"], "bound": res["bound"]}
    bl = np.array(res["blocks"])
    for name, rec in res["runs"].items():
        for key in ("forgetting", "L_im", "L_ret", "L_ft", "L_ft_start"):
            row[f"{key}_{name}"] = rec[key]
        for stage in STAGES:
            for b in ("inconsistent", "specialized"):
                row[f"{b[:4]}_{stage}_{name}"] = float(rec["features"][stage][bl == b].mean())
    return row


def trajectory_records(res: dict) -> list[dict]:
    """Long-format feature trajectories for plotting (one row per run, step, feature)."""
    rows = []
    for name, rec in res["runs"].items():
        for stage, step, vals in rec["trajectory"]:
            rows += [{"run": name, "stage": stage, "step": int(step), "feature": i,
                      "block": res["blocks"][i], "value": float(v)} for i, v in enumerate(vals)]
    return rows


def sweep_alpha(cfg: TheoryConfig, alphas) -> list[dict]:
    """Delta and L_im against alpha, every other setting fixed at cfg's resolved values.

    The stage budgets and T are resolved once, at cfg, so only alpha moves; rows whose alpha breaks
    an assumption (stated, or measured by check_absent) still run and carry assumptions_ok=False
    and the reason.
    """
    base = validate(cfg)
    rows = []
    for a in alphas:
        c = replace(base, alpha=float(a))
        res = run(c, check=False)
        try:
            validate(c)
            check_absent(res)
            ok, why = True, ""
        except ValueError as e:
            ok, why = False, str(e).split(":")[0]
        rows.append({**summary(res), "assumptions_ok": ok, "violated": why})
    return rows


# ----------------------------------------------------------------------------- plots and widgets

def plot_trajectories(res: dict):
    """Altair: feature values over the three stages, one panel per run, colour = block."""
    import altair as alt
    import pandas as pd
    df = pd.DataFrame(trajectory_records(res))
    steps = np.unique(df["step"])  # thin evenly to stay under altair's 5000-row inline limit
    keep = steps[:: max(1, math.ceil(len(df) / 4500))]
    df = df[df["step"].isin(np.union1d(keep, steps[-1:]))]
    return alt.Chart(df).mark_line().encode(
        x=alt.X("step:Q", title="GD step (stages 1 | 2 | 3)"), y=alt.Y("value:Q", title="u_i^T θ v_i"),
        color="block:N", detail="feature:N", tooltip=["stage", "step", "feature", "value"],
    ).properties(width=320, height=200).facet(column="run:N")


def plot_sweep(rows: list[dict]):
    """Altair: forgetting (mixed, unmixed, bound) and immediate loss against alpha."""
    import altair as alt
    import pandas as pd
    long = [{"alpha": r["alpha"], "quantity": q, "value": r[key], "assumptions_ok": r["assumptions_ok"]}
            for r in rows for q, key in (("Δ mixed", "forgetting_mixed"), ("Δ unmixed", "forgetting_unmixed"),
                                         ("Thm 5.3 bound", "bound"), ("L_im mixed", "L_im_mixed"))]
    return alt.Chart(pd.DataFrame(long)).mark_line(point=True).encode(
        x="alpha:Q", y=alt.Y("value:Q", title="loss"), color="quantity:N",
        shape=alt.Shape("assumptions_ok:N"), tooltip=["alpha", "quantity", "value", "assumptions_ok"],
    ).properties(width=360, height=220)


def explore(base: TheoryConfig, alpha: float, beta: float, c_mis: float, k: int) -> dict:
    """Widget callback body: rerun with new (alpha, beta, c_mis, k); returns chart data or the refusal."""
    cfg = replace(base, alpha=alpha, beta=beta, c_mis=c_mis, k=int(k), init_T=0.0,
                  steps_pre=0, steps_post=0, steps_ft=0, points_per_stage=40)
    try:
        res = run(cfg)
    except ValueError as e:
        return {"ok": False, "message": str(e), "records": [], "summary": {}}
    s = summary(res)
    msg = (f"Δ mixed={s['forgetting_mixed']:.3g}  Δ unmixed={s['forgetting_unmixed']:.3g}  "
           f"bound={s['bound']:.3g}")
    return {"ok": True, "message": msg, "records": trajectory_records(res), "summary": s, "result": res}


class Explorer:
    """Sliders for alpha, beta, c_mis, k wired to explore(); needs no front-end to run."""

    def __init__(self, base: TheoryConfig = TheoryConfig()):
        import ipywidgets as w
        self.base = base
        self.sliders = {
            "alpha": w.FloatSlider(value=base.alpha, min=0.05, max=1.0, step=0.05, description="α"),
            "beta": w.FloatSlider(value=base.beta, min=0.05, max=1.0, step=0.05, description="β"),
            "c_mis": w.FloatSlider(value=base.c_mis, min=0.2, max=2.0, step=0.1, description="c_mis"),
            "k": w.IntSlider(value=base.k, min=1, max=max(1, (base.n - 1) // 2), description="k"),
        }
        self.label, self.out = w.HTML(), w.Output()
        self.last: dict = {}
        for sl in self.sliders.values():
            sl.observe(self.update, names="value")
        self.widget = w.VBox([w.HBox(list(self.sliders.values())), self.label, self.out])
        self.update()

    def update(self, change=None) -> dict:
        self.last = explore(self.base, **{k: s.value for k, s in self.sliders.items()})
        self.label.value = self.last["message"]
        if self.last["ok"]:
            # Set the Output widget's outputs directly: capturing with `with self.out:` hangs
            # under papermill/nbclient, and this form needs no front-end at all.
            bundle = plot_trajectories(self.last["result"])._repr_mimebundle_()
            data = bundle[0] if isinstance(bundle, tuple) else bundle
            self.out.outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)
        else:  # a refused setting has no chart: do not leave the last one up beside its message
            self.out.outputs = ()
        return self.last
