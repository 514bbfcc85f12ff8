"""Omniscient tamperings: Byzantine workers that read the honest gradients of the round.

All attacks here craft their vector from *honest statistics* of the round. Convention: the honest
reference rows are those of the workers that are **not** active this round (``honest[~active]``,
what the benign workers really send); when every worker is active, the attacker falls back on all
rows of ``honest`` (which are still honestly computed gradients — the ones the Byzantine workers
would have sent). μ is their mean and σ their coordinate-wise standard deviation (unbiased, as in
the reference implementations; σ = 0 when there is a single reference row).

Statistics are computed in float64 and the forged rows cast back to the dtype of ``honest``.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

from gaa_env.attacks.tampering import TamperContext, Tampering, register_tampering


def reference_rows(honest: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """The honest rows an omniscient attacker uses: the non-active workers', or all rows if none."""
    benign = honest[~active]
    return benign if benign.shape[0] > 0 else honest


def _mean_std(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = rows.double()
    mean = rows.mean(dim=0)
    std = rows.std(dim=0) if rows.shape[0] > 1 else torch.zeros_like(mean)
    return mean, std


def _check_finite(label: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{label} must be finite, got {value}")


def alie_z_max(n: int, f: int) -> float:
    """Baruch et al.'s ``z_max = Φ⁻¹((n − f − s)/(n − f))`` with ``s = ⌊n/2 + 1⌋ − f``.

    The probability is clipped into ``[1e-6, 1 − 1e-6]`` (|z| ≤ 4.75): outside the paper's regime
    (``f ≥ n/2``, where ``s ≤ 0``, or ``n − f ≤ 1``) the formula leaves (0, 1).

    >>> round(alie_z_max(50, 24), 4)  # s = 26 - 24 = 2, Φ⁻¹(24/26)
    1.4261
    """
    if n < 1 or not 0 <= f < n:
        raise ValueError(f"alie needs 0 <= f < n, got n={n}, f={f}")
    s = math.floor(n / 2 + 1) - f
    p = (n - f - s) / (n - f)
    return NormalDist().inv_cdf(min(max(p, 1e-6), 1.0 - 1e-6))


@register_tampering("alie")
class ALittleIsEnough(Tampering):
    """"A little is enough" (Baruch, Baruch & Goldberg, NeurIPS 2019): send ``μ − z·σ`` coordinate-wise.

    μ, σ: mean and coordinate-wise std of the honest rows (module convention). ``z=None`` (default)
    uses the paper's ``z_max = Φ⁻¹((n − f − s)/(n − f))``, ``s = ⌊n/2 + 1⌋ − f``, with n the number
    of workers and f the number of active Byzantine workers this round (see :func:`alie_z_max`);
    a float ``z`` overrides it. All active workers send the same vector.

    >>> import torch
    >>> ctx = TamperContext(theta=torch.zeros(1), generator=torch.Generator(), lr=0.05, round_index=0)
    >>> honest = torch.tensor([[1.0], [2.0], [3.0], [9.0]])
    >>> ALittleIsEnough(z=1.0)(honest, torch.tensor([False, False, False, True]), ctx)[3]  # 2 − 1·1
    tensor([1.])
    """

    def __init__(self, *, z: float | None = None) -> None:
        if z is not None:
            _check_finite("alie z", z)
        self.z = z

    def forge(self, honest: torch.Tensor, active: torch.Tensor, ctx: TamperContext) -> torch.Tensor:
        n_active = int(active.sum())
        mean, std = _mean_std(reference_rows(honest, active))
        z = alie_z_max(honest.shape[0], n_active) if self.z is None else self.z
        return (mean - z * std).expand(n_active, -1)


@register_tampering("ipm")
class InnerProductManipulation(Tampering):
    """Inner-product manipulation (Xie, Koyejo & Gupta, UAI 2019, "Fall of empires"): send ``−ε·μ``.

    A small ``epsilon`` (default 0.1) stays close to the honest cluster (passes Krum/median); a large one
    (≈ 100) overwhelms the plain mean. μ: mean of the honest rows (module convention).

    >>> import torch
    >>> ctx = TamperContext(theta=torch.zeros(2), generator=torch.Generator(), lr=0.05, round_index=0)
    >>> honest = torch.tensor([[1.0, 2.0], [3.0, -2.0], [0.0, 0.0]])
    >>> InnerProductManipulation(epsilon=0.5)(honest, torch.tensor([False, False, True]), ctx)[2]
    tensor([-1., -0.])
    """

    def __init__(self, *, epsilon: float = 0.1) -> None:
        _check_finite("ipm epsilon", epsilon)
        if not epsilon > 0:
            raise ValueError(f"ipm epsilon must be > 0, got {epsilon}")
        self.epsilon = epsilon

    def forge(self, honest: torch.Tensor, active: torch.Tensor, ctx: TamperContext) -> torch.Tensor:
        mean = reference_rows(honest, active).double().mean(dim=0)
        return (-self.epsilon * mean).expand(int(active.sum()), -1)


PERTURBATIONS = ("unit_vec", "sign", "std")


class _ShejwalkarAttack(Tampering):
    """Shared part of min-max and min-sum: ``m = μ − γ·p`` with the largest admissible γ (bisection)."""

    def __init__(self, *, perturbation: str = "std", gamma_init: float = 10.0, tol: float = 1e-5) -> None:
        if perturbation not in PERTURBATIONS:
            raise ValueError(f"{self.name} perturbation must be one of {list(PERTURBATIONS)}, got {perturbation!r}")
        _check_finite(f"{self.name} gamma_init", gamma_init)
        _check_finite(f"{self.name} tol", tol)
        if not gamma_init > 0:
            raise ValueError(f"{self.name} gamma_init must be > 0, got {gamma_init}")
        if not tol > 0:
            raise ValueError(f"{self.name} tol must be > 0, got {tol}")
        self.perturbation, self.gamma_init, self.tol = perturbation, gamma_init, tol

    def direction(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """The perturbation p: ``μ/‖μ‖`` (unit_vec), ``sign(μ)`` (sign) or ``σ`` (std)."""
        if self.perturbation == "unit_vec":
            norm = mean.norm()
            return mean / norm if float(norm) > 0 else torch.zeros_like(mean)
        if self.perturbation == "sign":
            return torch.sign(mean)
        return std

    def admissible(self, gamma: float, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                   bound: torch.Tensor) -> bool:
        """Whether ``m(γ)`` satisfies the attack's constraint, given ``‖m(γ) − g_i‖² = a_i − 2γ b_i + γ² c``."""
        raise NotImplementedError

    def bound(self, sq_dist: torch.Tensor) -> torch.Tensor:
        """Right-hand side of the constraint from the squared pairwise distances of the honest rows."""
        raise NotImplementedError

    def gamma(self, rows: torch.Tensor, mean: torch.Tensor, p: torch.Tensor) -> float:
        """Largest admissible γ ≥ 0 up to ``tol``: doubling from ``gamma_init``, then bisection.

        The constraint is convex in γ and holds at γ = 0 (the mean is admissible), so the admissible
        set is an interval ``[0, γ*]`` and bisection finds γ* within ``tol`` (absolute).
        """
        c = p.square().sum()
        if float(c) == 0.0:
            return 0.0  # p = 0: every γ yields μ
        diff = mean.unsqueeze(0) - rows  # [m, d]
        a = diff.square().sum(dim=1)  # ‖μ − g_i‖²
        b = diff @ p  # ⟨μ − g_i, p⟩
        sq_dist = torch.cdist(rows, rows, compute_mode="donot_use_mm_for_euclid_dist").square()
        bound = self.bound(sq_dist)
        low, high = 0.0, self.gamma_init
        while self.admissible(high, a, b, c, bound):
            low, high = high, 2.0 * high
            if not math.isfinite(high):  # unreachable unless p is negligibly small
                return low
        while high - low > self.tol:
            mid = 0.5 * (low + high)
            if self.admissible(mid, a, b, c, bound):
                low = mid
            else:
                high = mid
        return low

    def forge(self, honest: torch.Tensor, active: torch.Tensor, ctx: TamperContext) -> torch.Tensor:
        rows = reference_rows(honest, active).double()
        mean, std = _mean_std(rows)
        p = self.direction(mean, std)
        gamma = self.gamma(rows, mean, p)
        return (mean - gamma * p).expand(int(active.sum()), -1)


@register_tampering("min_max")
class MinMax(_ShejwalkarAttack):
    """Min-Max (Shejwalkar & Houmansadr, NDSS 2021, "Manipulating the Byzantine"): send ``m = μ − γ·p``
    with the largest γ such that ``max_i ‖m − g_i‖ ≤ max_{i,j} ‖g_i − g_j‖`` (g: honest rows).

    ``perturbation``: ``"unit_vec"`` (p = μ/‖μ‖), ``"sign"`` (p = sign μ) or ``"std"`` (p = σ, default).
    γ is found by doubling from ``gamma_init`` (10, as in the authors' code) and bisection down to the
    absolute tolerance ``tol`` (1e-5). All active workers send the same vector.

    >>> import torch
    >>> ctx = TamperContext(theta=torch.zeros(1), generator=torch.Generator(), lr=0.05, round_index=0)
    >>> honest = torch.tensor([[0.0], [1.0], [5.0], [7.0]])  # honest rows 0, 1, 5: μ = 2, p = sign μ = 1
    >>> # max_i |2 − γ − g_i| = 3 + γ ≤ max_ij |g_i − g_j| = 5  →  γ = 2, m = 0
    >>> MinMax(perturbation="sign")(honest, torch.tensor([False, False, False, True]), ctx)[3].round(decimals=4)
    tensor([0.])
    """

    def bound(self, sq_dist: torch.Tensor) -> torch.Tensor:
        return sq_dist.max()

    def admissible(self, gamma: float, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                   bound: torch.Tensor) -> bool:
        return bool((a - 2.0 * gamma * b + gamma * gamma * c).max() <= bound)


@register_tampering("min_sum")
class MinSum(_ShejwalkarAttack):
    """Min-Sum (Shejwalkar & Houmansadr, NDSS 2021): send ``m = μ − γ·p`` with the largest γ such that
    ``Σ_i ‖m − g_i‖² ≤ max_i Σ_j ‖g_i − g_j‖²`` (g: honest rows).

    Parameters as :class:`MinMax` (``perturbation`` default ``"std"``, ``gamma_init`` 10, ``tol`` 1e-5).

    >>> import torch
    >>> ctx = TamperContext(theta=torch.zeros(1), generator=torch.Generator(), lr=0.05, round_index=0)
    >>> honest = torch.tensor([[0.0], [1.0], [5.0], [7.0]])  # honest rows 0, 1, 5: μ = 2, p = 1
    >>> # Σ_i (2 − γ − g_i)² = 14 + 3γ² ≤ max(26, 17, 41) = 41  →  γ = 3, m = −1
    >>> MinSum(perturbation="sign")(honest, torch.tensor([False, False, False, True]), ctx)[3].round(decimals=4)
    tensor([-1.])
    """

    def bound(self, sq_dist: torch.Tensor) -> torch.Tensor:
        return sq_dist.sum(dim=1).max()

    def admissible(self, gamma: float, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                   bound: torch.Tensor) -> bool:
        return bool((a - 2.0 * gamma * b + gamma * gamma * c).sum() <= bound)


@register_tampering("mimic")
class Mimic(Tampering):
    """Mimic (Karimireddy, He & Jaggi, ICLR 2022, "Byzantine-robust learning on heterogeneous datasets
    via bucketing"): every active worker sends a copy of one honest worker's gradient, over-weighting
    that worker's data (harmful under non-iid partitions, invisible to distance-based rules).

    ``target``: the worker index to copy; ``None`` (default) copies the first non-active worker (worker 0
    when all are active). A target that is itself active this round still contributes its honest
    gradient (the one it would have sent).

    >>> import torch
    >>> ctx = TamperContext(theta=torch.zeros(1), generator=torch.Generator(), lr=0.05, round_index=0)
    >>> Mimic()(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([True, False, True]), ctx).flatten()
    tensor([2., 2., 2.])
    """

    def __init__(self, *, target: int | None = None) -> None:
        if target is not None and (not isinstance(target, int) or isinstance(target, bool) or target < 0):
            raise ValueError(f"mimic target must be None or an integer >= 0, got {target!r}")
        self.target = target

    def forge(self, honest: torch.Tensor, active: torch.Tensor, ctx: TamperContext) -> torch.Tensor:
        n = honest.shape[0]
        if self.target is None:
            benign = torch.nonzero(~active).flatten()
            target = int(benign[0]) if benign.numel() else 0
        elif self.target >= n:
            raise ValueError(f"mimic target {self.target} is not a worker index (n_workers={n})")
        else:
            target = self.target
        return honest[target].expand(int(active.sum()), -1)
