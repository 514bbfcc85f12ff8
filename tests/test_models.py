"""The benchmark models match Table 2 of the paper, and per-worker gradients are exact."""

import pytest
import torch

from gaa_env.models import MODELS, FunctionalModel, ResNet18, count_parameters, make_model, mnist_mlp

TABLE_2 = {"mnist_mlp": 25_450, "yelp_mlp": 10_272, "healthcare_mlp": 33_130, "resnet18": 11_173_962}


@pytest.mark.parametrize("name", sorted(TABLE_2))
def test_parameter_counts_equal_table_2(name):
    assert count_parameters(make_model(name)) == TABLE_2[name]


def test_resnet18_with_batchnorm_has_the_same_count_but_is_refused_by_vmap():
    model = ResNet18(norm="batch")
    assert count_parameters(model) == TABLE_2["resnet18"]
    with pytest.raises(ValueError, match="norm='group'"):
        FunctionalModel(model)


def test_unknown_model_lists_allowed():
    with pytest.raises(ValueError, match="allowed"):
        make_model("vgg")
    assert set(MODELS) == set(TABLE_2)


def test_vectorized_worker_gradients_equal_a_loop_of_backward_passes():
    torch.manual_seed(0)
    fm = FunctionalModel(mnist_mlp())
    theta = fm.initial_theta()
    x, y = torch.randn(5, 16, 784), torch.randint(0, 10, (5, 16))
    batched = fm.worker_gradients(theta, x, y)
    for i in range(5):
        t = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fm.loss(t, x[i], y[i]), t)
        torch.testing.assert_close(batched[i], g, rtol=1e-5, atol=1e-6)


def test_losses_after_steps_match_individual_evaluations():
    torch.manual_seed(1)
    fm = FunctionalModel(mnist_mlp())
    theta, updates = fm.initial_theta(), torch.randn(3, fm.dim)
    x, y = torch.randn(4, 784), torch.randint(0, 10, (4,))
    got = fm.losses_after_steps(theta, updates, 0.05, x, y)
    want = torch.stack([fm.loss(theta - 0.05 * u, x, y) for u in updates])
    torch.testing.assert_close(got, want)
