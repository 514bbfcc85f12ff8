"""Attack patterns (who/when) and tamperings (what), composed by the simulator."""

import pytest
import torch

from gaa_env.attacks import TamperContext, make_pattern, make_tampering

COMPROMISED = torch.tensor([True, True, False, True, False, False])


def _ctx(seed=0):
    return TamperContext(theta=torch.zeros(4), generator=torch.Generator().manual_seed(seed), lr=0.05, round_index=0)


def _roles(pattern, rounds, seed=0):
    pattern.reset(COMPROMISED, torch.Generator().manual_seed(seed))
    return torch.stack([pattern.active(t) for t in range(rounds)])


def test_static_attacks_every_round_and_none_never():
    assert torch.equal(_roles(make_pattern("static"), 5), COMPROMISED.expand(5, 6))
    assert not _roles(make_pattern("none"), 5).any()


def test_pretense_is_benign_for_L_rounds_then_attacks():
    roles = _roles(make_pattern("pretense", pretense_rounds=3), 6)
    assert not roles[:3].any() and torch.equal(roles[3:], COMPROMISED.expand(3, 6))


def test_randomized_roles_change_only_at_period_boundaries_and_only_for_compromised():
    roles = _roles(make_pattern("randomized", period=4, flip_prob=0.5), 40, seed=2)
    assert not roles[:, ~COMPROMISED].any()
    for t in range(1, 40):
        if t % 4:
            assert torch.equal(roles[t], roles[t - 1])
    assert len({tuple(r.tolist()) for r in roles}) > 1  # roles do change over 10 periods


def test_randomized_is_reproducible_per_seed():
    first = _roles(make_pattern("randomized", period=2), 20, 5)
    assert torch.equal(first, _roles(make_pattern("randomized", period=2), 20, 5))


def test_periodic_alternates_windows():
    roles = _roles(make_pattern("periodic", period=2), 8)
    assert [bool(r.any()) for r in roles] == [True, True, False, False, True, True, False, False]


def test_rf_sends_the_papers_constant_vector_only_from_active_workers():
    honest = torch.ones(6, 4)
    out = make_tampering("rf")(honest, COMPROMISED, _ctx())
    assert torch.equal(out[~COMPROMISED], honest[~COMPROMISED])
    assert torch.allclose(out[COMPROMISED], torch.full((3, 4), 0.5), atol=2e-5)  # N(0.5, (2e-6)^2)


def test_gaussian_and_sign_flip():
    honest = torch.tensor([[1.0, -2.0, 0.0, 4.0]] * 6)
    flipped = make_tampering("sign_flip", scale=2.0)(honest, COMPROMISED, _ctx())
    assert flipped[0].tolist() == [-2.0, 4.0, 0.0, -8.0] and flipped[2].tolist() == [1.0, -2.0, 0.0, 4.0]
    noisy = make_tampering("gaussian", std=100.0)(honest, COMPROMISED, _ctx())
    assert float(noisy[COMPROMISED].std()) > 10 and torch.equal(noisy[~COMPROMISED], honest[~COMPROMISED])


def test_bad_names_and_parameters_are_explained():
    with pytest.raises(ValueError, match="allowed"):
        make_pattern("sometimes")
    with pytest.raises(ValueError, match="allowed"):
        make_tampering("nuke")
    with pytest.raises(ValueError, match="pretense_rounds must be >= 0"):
        make_pattern("pretense", pretense_rounds=-1)
    with pytest.raises(ValueError, match="flip_prob"):
        make_pattern("randomized", flip_prob=2.0)
    with pytest.raises(ValueError, match="bad parameters"):
        make_tampering("rf", sigma=1.0)
