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

The assumptions, how we read them, and the auto fields they fix: eelib/theory_assumptions.py.
Charts and the slider explorer: eelib/theory_explorer.py.
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
    from eelib.theory_assumptions import derived, resolve, validate  # here: it imports this module
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
                    least = (derived(cfg)["spec_target"] if name == "mixed" else cfg.sigma_pre_inc) - cfg.eps
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
    from eelib.theory_assumptions import validate  # here: it imports this module
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
