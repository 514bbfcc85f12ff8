"""The simulator: one vectorized round, the credit update rule, and NaN/Inf never reaching θ."""

import pytest
import torch

from gaa_env.aggregators import AggregationResult, Aggregator, make_aggregator
from gaa_env.attacks import Tampering, make_pattern, make_tampering, register_tampering
from gaa_env.models import FunctionalModel, mnist_mlp
from gaa_env.simulator import DistributedSGD


def _sim(mnist, **kw):
    args = dict(pattern=make_pattern("static"), tampering=make_tampering("rf"), n_workers=10, beta=0.3,
                eval_interval=0, test_size=500, seed=0)
    args.update(kw)
    return DistributedSGD(mnist, FunctionalModel(mnist_mlp()), **args)


@register_tampering("test_nan")
class _NaNTampering(Tampering):
    def forge(self, honest, active, ctx):
        rows = torch.full((int(active.sum()), honest.shape[1]), float("nan"))
        rows[:, 0] = float("inf")
        return rows


def test_round_marks_exactly_the_compromised_workers_as_byzantine(mnist):
    sim = _sim(mnist)
    rnd = sim.gather()
    assert rnd.received.shape == (10, sim.dim) and int(rnd.byzantine.sum()) == 3
    assert torch.equal(rnd.byzantine, sim.compromised)
    assert torch.allclose(rnd.received[rnd.byzantine], torch.full((3, sim.dim), 0.5), atol=1e-4)


def test_step_applies_theta_minus_lr_times_credit_weighted_sum(mnist):
    sim = _sim(mnist)
    theta0, rnd = sim.theta.clone(), sim.gather()
    credit = torch.rand(10)
    credit /= credit.sum()
    outcome = sim.step(credit)
    torch.testing.assert_close(sim.theta, theta0 - 0.05 * (credit @ rnd.received))
    assert outcome.quasi_loss_after == pytest.approx(float(sim.quasi_loss()))
    assert sim.round_index == 1


def test_mean_rule_equals_uniform_credit(mnist):
    a, b = _sim(mnist), _sim(mnist)
    a.gather(), b.gather()
    a.step(torch.full((10,), 0.1))
    b.step_with(make_aggregator("mean"))
    torch.testing.assert_close(a.theta, b.theta)


def test_nan_and_inf_gradients_never_reach_theta(mnist):
    sim = _sim(mnist, tampering=make_tampering("test_nan"))
    for _ in range(3):
        rnd = sim.gather()
        assert int((~rnd.finite).sum()) == 3 and torch.isfinite(rnd.received).all()
        outcome = sim.step(torch.full((10,), 0.1))  # uniform credit: Byzantine share is dropped
        assert float(outcome.credit[rnd.byzantine].sum()) == 0.0
        assert outcome.credit.sum() == pytest.approx(1.0)
        assert torch.isfinite(sim.theta).all() and not outcome.rejected


def test_all_credit_on_absent_workers_skips_the_update(mnist):
    sim = _sim(mnist, tampering=make_tampering("test_nan"))
    theta0, rnd = sim.theta.clone(), sim.gather()
    outcome = sim.step(rnd.byzantine.float())
    assert torch.equal(sim.theta, theta0) and float(outcome.credit.sum()) == 0.0


def test_a_non_finite_update_is_rejected_and_theta_kept(mnist):
    class Overflowing(Aggregator):  # a broken rule whose update overflows float32
        def aggregate(self, gradients, ctx):
            return AggregationResult(update=torch.full((gradients.shape[1],), float("inf")))

    sim = _sim(mnist)
    theta0 = sim.theta.clone()
    sim.gather()
    outcome = sim.step_with(Overflowing())
    assert outcome.rejected and torch.equal(sim.theta, theta0) and sim.round_index == 1


def test_quasi_norm_clipping_bounds_every_row(mnist):
    sim = _sim(mnist, grad_clip="quasi_norm", beta=0.5)
    rnd = sim.gather()
    assert float(rnd.received.norm(dim=1).max()) <= float(rnd.quasi_grad.norm()) * (1 + 1e-5)


def test_same_seed_same_trajectory_and_other_seed_differs(mnist):
    def run(seed):
        sim = _sim(mnist, pattern=make_pattern("randomized", period=2), seed=seed)
        for _ in range(6):
            rnd = sim.gather()
            sim.step(torch.softmax(rnd.received[:, :10].sum(1), 0))
        return sim.theta

    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


def test_bad_simulator_arguments(mnist):
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\), got 1.0"):
        _sim(mnist, beta=1.0)
    with pytest.raises(ValueError, match="n_workers must be >= 1"):
        _sim(mnist, n_workers=0)
    with pytest.raises(ValueError, match="allowed"):
        _sim(mnist, grad_clip="sometimes")
