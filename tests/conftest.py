import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mnist():
    from gaa_env.data import load_mnist

    return load_mnist()
