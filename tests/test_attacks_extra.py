"""Omniscient, fault, poisoning and adaptive tamperings: hand-checked small cases + one env run each.

Every expected value below is worked out by hand in the comments (or, for AF, from plain autograd on
the model's loss), never taken from the code under test.
"""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import gaa_env  # noqa: F401  (registers the env ids)
from gaa_env.attacks import TAMPERINGS, TamperContext, make_tampering
from gaa_env.attacks.omniscient import alie_z_max
from gaa_env.models import FunctionalModel, mlp

torch.set_num_threads(1)


def _ctx(**kwargs):
    base = dict(theta=torch.zeros(2), generator=torch.Generator().manual_seed(0), lr=0.05, round_index=0)
    return TamperContext(**{**base, **kwargs})


def _mask(*bits):
    return torch.tensor([bool(b) for b in bits])


# ----------------------------------------------------------------------------------------- ALIE
def test_alie_with_given_z_is_mean_minus_z_std_of_the_non_active_rows():
    honest = torch.tensor([[1.0, 4.0], [2.0, 4.0], [3.0, 4.0], [100.0, -100.0], [50.0, 50.0]])
    active = _mask(0, 0, 0, 1, 1)
    out = make_tampering("alie", z=1.0)(honest, active, _ctx())
    # honest rows 1, 2, 3: mean 2, unbiased std sqrt((1 + 0 + 1)/2) = 1 → 2 − 1·1 = 1
    # second coordinate 4, 4, 4: mean 4, std 0 → 4
    assert torch.allclose(out[3:], torch.tensor([[1.0, 4.0], [1.0, 4.0]]))
    assert torch.equal(out[:3], honest[:3])


def test_alie_all_active_falls_back_on_all_rows():
    honest = torch.tensor([[1.0], [2.0], [3.0]])
    out = make_tampering("alie", z=2.0)(honest, _mask(1, 1, 1), _ctx())
    # all rows: mean 2, std 1 → 2 − 2·1 = 0 for everyone
    assert torch.allclose(out, torch.zeros(3, 1))


def test_alie_default_z_is_z_max():
    # n = 6, f = 3: s = ⌊6/2 + 1⌋ − 3 = 1, p = (6 − 3 − 1)/(6 − 3) = 2/3, Φ⁻¹(2/3) = 0.4307273 (tables)
    assert alie_z_max(6, 3) == pytest.approx(0.4307273, abs=1e-6)
    # n = 4, f = 1: s = 3 − 1 = 2, p = (4 − 1 − 2)/3 = 1/3, Φ⁻¹(1/3) = −0.4307273
    assert alie_z_max(4, 1) == pytest.approx(-0.4307273, abs=1e-6)
    # n = 6, f = 5: s = 4 − 5 = −1, p = (1 + 1)/1 = 2 leaves (0, 1) → clipped to 1 − 1e-6: Φ⁻¹ = 4.753424
    assert alie_z_max(6, 5) == pytest.approx(4.753424, abs=1e-4)
    honest = torch.tensor([[1.0], [2.0], [3.0], [7.0]])
    out = make_tampering("alie")(honest, _mask(0, 0, 0, 1), _ctx())
    # n = 4, f = 1 → z = −0.4307273; mean 2, std 1 → 2 + 0.4307273
    assert float(out[3, 0]) == pytest.approx(2.4307273, abs=1e-5)


# ------------------------------------------------------------------------------------------ IPM
def test_ipm_sends_minus_epsilon_times_honest_mean():
    honest = torch.tensor([[2.0, -4.0], [4.0, 0.0], [9.0, 9.0]])
    active = _mask(0, 0, 1)
    # honest mean ((2 + 4)/2, (−4 + 0)/2) = (3, −2)
    assert torch.allclose(make_tampering("ipm", epsilon=0.5)(honest, active, _ctx())[2], torch.tensor([-1.5, 1.0]))
    assert torch.allclose(make_tampering("ipm")(honest, active, _ctx())[2], torch.tensor([-0.3, 0.2]))  # ε = 0.1


# ------------------------------------------------------------------------------ min-max / min-sum
# Honest rows g1 = (0, 0), g2 = (2, 0), g3 = (0, 2): μ = (2/3, 2/3), p = μ/‖μ‖ = (1, 1)/√2, so
# m = μ − γp = t·(1, 1) with t = 2/3 − γ/√2. ‖m − g1‖² = 2t², ‖m − g2‖² = ‖m − g3‖² = 2t² − 4t + 4.
TRIANGLE = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
LAST = _mask(0, 0, 0, 1)


def test_min_max_unit_vec_hand_case():
    out = make_tampering("min_max", perturbation="unit_vec")(TRIANGLE, LAST, _ctx())[3]
    # max pairwise distance² = ‖g2 − g3‖² = 8; binding row g2: 2t² − 4t + 4 ≤ 8 ⇔ t² − 2t − 2 ≤ 0
    # ⇔ t ≥ 1 − √3 (γ grows ⇒ t falls), so m = (1 − √3)(1, 1)
    t = 1 - math.sqrt(3)
    assert torch.allclose(out, torch.tensor([t, t]), atol=1e-4)


def test_min_sum_unit_vec_hand_case():
    out = make_tampering("min_sum", perturbation="unit_vec")(TRIANGLE, LAST, _ctx())[3]
    # Σ_i ‖m − g_i‖² = 2t² + 2(2t² − 4t + 4) = 6t² − 8t + 8
    # Σ_j ‖g_i − g_j‖²: g1: 4 + 4 = 8, g2: 4 + 8 = 12, g3: 12 → bound 12
    # 6t² − 8t − 4 ≤ 0 ⇔ 3t² − 4t − 2 ≤ 0 ⇔ t ≥ (4 − √40)/6 = (2 − √10)/3
    t = (2 - math.sqrt(10)) / 3
    assert torch.allclose(out, torch.tensor([t, t]), atol=1e-4)


def test_min_max_and_min_sum_sign_and_std_hand_cases():
    honest = torch.tensor([[0.0], [1.0], [5.0], [40.0]])  # honest rows 0, 1, 5: μ = 2
    # std: σ = sqrt((4 + 1 + 9)/2) = √7; max_i |2 − γ√7 − g_i| = 3 + γ√7 ≤ max |g_i − g_j| = 5 → γ√7 = 2, m = 0
    assert float(make_tampering("min_max")(honest, LAST, _ctx())[3, 0]) == pytest.approx(0.0, abs=1e-4)
    # sign: p = 1; Σ_i (2 − γ − g_i)² = 14 + 3γ² (the cross term Σ(2 − g_i) vanishes)
    # ≤ max(0+1+25, 1+0+16, 25+16+0) = 41 → γ = 3, m = −1
    out = make_tampering("min_sum", perturbation="sign")(honest, LAST, _ctx())[3, 0]
    assert float(out) == pytest.approx(-1.0, abs=1e-4)


@pytest.mark.parametrize("gamma_init", [1e-3, 10.0, 1e3])
def test_min_max_gamma_is_admissible_and_maximal_within_tol(gamma_init):
    tol = 1e-5
    torch.manual_seed(0)
    rows = torch.randn(5, 7, dtype=torch.float64)
    honest = torch.cat([rows, torch.zeros(2, 7, dtype=torch.float64)])
    active = _mask(0, 0, 0, 0, 0, 1, 1)
    attack = make_tampering("min_max", perturbation="std", gamma_init=gamma_init, tol=tol)
    m = attack(honest, active, _ctx())[5]
    mean, std = rows.mean(0), rows.std(0)
    gamma = float(((mean - m) / std).mean())
    assert torch.allclose(m, mean - gamma * std, atol=1e-9)  # m lies on the line μ − γσ
    bound = max(float((rows[i] - rows[j]).norm()) for i in range(5) for j in range(5))

    def worst(g):
        return max(float((mean - g * std - rows[i]).norm()) for i in range(5))

    assert worst(gamma) <= bound + 1e-9  # admissible
    assert worst(gamma + tol) > bound  # γ + tol is not: maximal within tol
    assert torch.equal(attack(honest, active, _ctx())[6], m)  # all attackers send the same vector


def test_min_max_with_identical_honest_rows_sends_the_mean():
    honest = torch.tensor([[1.0, 2.0]] * 3 + [[9.0, 9.0]])
    # σ = 0 → p = 0 → m = μ for any γ
    assert torch.allclose(make_tampering("min_max")(honest, LAST, _ctx())[3], torch.tensor([1.0, 2.0]))


# ---------------------------------------------------------------------------------------- mimic
def test_mimic_copies_one_honest_worker():
    honest = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    active = _mask(1, 0, 1, 0)
    assert make_tampering("mimic")(honest, active, _ctx()).flatten().tolist() == [2.0, 2.0, 2.0, 4.0]  # first honest
    assert make_tampering("mimic", target=3)(honest, active, _ctx()).flatten().tolist() == [4.0, 2.0, 4.0, 4.0]
    with pytest.raises(ValueError, match="target 10"):
        make_tampering("mimic", target=10)(honest, active, _ctx())
    with pytest.raises(ValueError, match="-1"):
        make_tampering("mimic", target=-1)


# --------------------------------------------------------------------------------------- faults
def test_inf_and_nan_rows_only_for_active_workers():
    honest = torch.ones(3, 4)
    active = _mask(0, 1, 0)
    inf = make_tampering("inf")(honest, active, _ctx())
    nan = make_tampering("nan")(honest, active, _ctx())
    assert torch.isposinf(inf[1]).all() and torch.isnan(nan[1]).all()
    assert torch.equal(inf[[0, 2]], honest[[0, 2]]) and torch.equal(nan[[0, 2]], honest[[0, 2]])


# ----------------------------------------------------------------------------------- label flip
def test_label_flip_reverses_only_active_labels_and_forwards_their_rows():
    y = torch.tensor([[0, 3, 9], [1, 5, 7], [2, 2, 8]])
    x = torch.randn(3, 3, 4)
    attack = make_tampering("label_flip")
    ctx = _ctx(n_classes=10)
    x2, y2 = attack.poison_batch(x, y, _mask(0, 1, 1), ctx)
    # y → 9 − y for workers 1 and 2 only
    assert y2.tolist() == [[0, 3, 9], [8, 4, 2], [7, 7, 1]]
    assert torch.equal(x2, x) and y.tolist()[1] == [1, 5, 7]  # inputs and the caller's labels untouched
    honest = torch.randn(3, 5)
    assert torch.equal(attack(honest, _mask(0, 1, 1), ctx), honest)  # rows already computed on poisoned data


def test_label_flip_permutation_is_a_derangement_fixed_per_seed():
    attack = make_tampering("label_flip", mapping="permutation")
    y = torch.arange(10).repeat(2, 1)
    ctx0 = _ctx(n_classes=10, generator=torch.Generator().manual_seed(7))
    _, y0 = attack.poison_batch(torch.zeros(2, 10, 1), y, _mask(1, 0), ctx0)
    assert sorted(y0[0].tolist()) == list(range(10)) and not (y0[0] == y[0]).any()  # bijective, no fixed point
    assert torch.equal(y0[1], y[1])
    _, again = attack.poison_batch(torch.zeros(2, 10, 1), y, _mask(1, 0), ctx0)
    assert torch.equal(again, y0)  # same run → same permutation
    fresh = make_tampering("label_flip", mapping="permutation")
    _, same_seed = fresh.poison_batch(torch.zeros(2, 10, 1), y, _mask(1, 0),
                                      _ctx(n_classes=10, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(same_seed, y0)
    others = {tuple(attack.label_map(_ctx(n_classes=10, generator=torch.Generator().manual_seed(s))).tolist())
              for s in range(5)}
    assert len(others) > 1  # a reset with another seed redraws


# ------------------------------------------------------------------------------------------- AF
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = FunctionalModel(mlp(3, 4, 2))
    theta = model.initial_theta()
    bx, by = torch.randn(3, 6, 3), torch.randint(0, 2, (3, 6))
    qx, qy = torch.randn(2, 3), torch.tensor([0, 1])

    def autograd(x, y):  # plain autograd on the model's loss, independent of the attack code
        t = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model.loss(t, x, y), t)
        return g

    honest = torch.stack([autograd(bx[i], by[i]) for i in range(3)])
    ctx = TamperContext(theta=theta, generator=torch.Generator(), lr=0.05, round_index=5, model=model,
                        batch_x=bx, batch_y=by, quasi_x=qx, quasi_y=qy, n_classes=2)
    return dict(model=model, theta=theta, honest=honest, qv=autograd(qx, qy), ctx=ctx, grad=autograd, bx=bx, by=by)


ACTIVE3 = _mask(1, 1, 0)


def test_af_points_against_training_gradient_and_along_qv_gradient(tiny):
    honest, qv, ctx = tiny["honest"], tiny["qv"], tiny["ctx"]
    against = make_tampering("af", c_qv=0.0)(honest, ACTIVE3, ctx)
    along = make_tampering("af", c_train=0.0)(honest, ACTIVE3, ctx)
    for i in (0, 1):
        assert float(against[i] @ honest[i]) < 0  # = −‖∇L_train‖²
        assert float(along[i] @ qv) > 0  # = 10‖∇L_QV‖²
    sent = make_tampering("af")(honest, ACTIVE3, ctx)
    # defaults c_train = 1, c_qv = 10: −∇L_train + 10 ∇L_QV
    assert torch.allclose(sent[:2], -honest[:2] + 10 * qv, atol=1e-6)
    assert torch.equal(sent[2], honest[2])
    # effect of a small step θ − η·sent: the leaked QV loss drops
    model, theta = tiny["model"], tiny["theta"]
    before = float(model.loss(theta, ctx.quasi_x, ctx.quasi_y))
    assert float(model.loss(theta - 1e-3 * sent[0], ctx.quasi_x, ctx.quasi_y)) < before


def test_af_distribution_leak_uses_a_surrogate_split_of_the_own_batch(tiny):
    ctx, grad_of, bx, by = tiny["ctx"], tiny["grad"], tiny["bx"], tiny["by"]
    sent = make_tampering("af", leak="distribution", surrogate_size=2)(tiny["honest"], ACTIVE3, ctx)
    for i in (0, 1):  # first 2 samples stand in for the QV set, the other 4 are the training batch
        expected = 10 * grad_of(bx[i, :2], by[i, :2]) - grad_of(bx[i, 2:], by[i, 2:])
        assert torch.allclose(sent[i], expected, atol=1e-5)


def test_af_warmup_sends_pure_qv_gradient_and_match_norm_rescales(tiny):
    honest, qv, ctx = tiny["honest"], tiny["qv"], tiny["ctx"]
    warm = make_tampering("af", warmup_rounds=6)(honest, ACTIVE3, ctx)  # round 5 < 6
    assert torch.allclose(warm[:2], qv.expand(2, -1), atol=1e-6)
    after = make_tampering("af", warmup_rounds=5)(honest, ACTIVE3, ctx)  # round 5 ≥ 5: the attack proper
    assert torch.allclose(after[:2], -honest[:2] + 10 * qv, atol=1e-6)
    scaled = make_tampering("af", match_norm=True)(honest, ACTIVE3, ctx)
    target = float(honest[2].norm())  # the only non-active row is the honest mean
    assert scaled[:2].norm(dim=1).tolist() == pytest.approx([target, target], rel=1e-5)
    assert float(torch.cosine_similarity(scaled[0], -honest[0] + 10 * qv, dim=0)) == pytest.approx(1.0, abs=1e-5)


def test_af_needs_model_and_quasi_set():
    with pytest.raises(ValueError, match="ctx.model"):
        make_tampering("af")(torch.zeros(2, 2), _mask(1, 0), _ctx())


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(("name", "params", "needle"), [
    ("alie", {"z": float("nan")}, "nan"),
    ("ipm", {"epsilon": 0.0}, "got 0.0"),
    ("ipm", {"epsilon": -2.5}, "-2.5"),
    ("min_max", {"perturbation": "l2"}, "'l2'"),
    ("min_sum", {"tol": 0.0}, "tol must be > 0, got 0.0"),
    ("min_max", {"gamma_init": -1.0}, "gamma_init must be > 0, got -1.0"),
    ("mimic", {"target": 1.5}, "1.5"),
    ("label_flip", {"mapping": "shuffle"}, "'shuffle'"),
    ("af", {"leak": "full"}, "'full'"),
    ("af", {"c_qv": -3.0}, "-3.0"),
    ("af", {"warmup_rounds": -4}, "-4"),
    ("af", {"surrogate_size": 0}, "surrogate_size"),
    ("af", {"c_train": 0.0, "c_qv": 0.0}, "both 0"),
    ("min_sum", {"gamma": 3.0}, "bad parameters"),
])
def test_bad_parameters_name_the_bad_value(name, params, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        make_tampering(name, **params)


# ---------------------------------------------------------------------------------- integration
NEW = ["alie", "ipm", "min_max", "min_sum", "mimic", "inf", "nan", "label_flip", "af"]


def test_all_new_attacks_are_registered():
    assert set(NEW) <= set(TAMPERINGS)


@pytest.mark.parametrize("name", NEW)
def test_env_runs_two_rounds_with_each_attack(name):
    env = gym.make("GAA-MNIST-v0", n_workers=6, beta=0.5, test_size=200, tampering=name)
    obs, _ = env.reset(seed=0)
    assert np.isfinite(obs).all()
    for _ in range(2):
        obs, reward, _, _, info = env.step(np.zeros(6, np.float32))
        assert np.isfinite(obs).all() and math.isfinite(reward)
        if name in ("inf", "nan") and "nonfinite_workers" in info:
            assert info["nonfinite_workers"] == 3  # ⌊0.5·6⌋ static Byzantine workers, all absent
    env.close()
