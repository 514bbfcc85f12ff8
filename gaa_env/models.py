"""The paper's four benchmark models (Table 2) and a flat-parameter functional view of them.

Parameter counts equal Table 2 exactly: MNIST MLP 784-32-10 = 25,450; Yelp MLP 1024-10-2 =
10,272; Healthcare MLP 1024-32-10 = 33,130; CIFAR-10 ResNet-18 = 11,173,962.

The server holds θ as one flat vector; :class:`FunctionalModel` maps it back onto the module's
parameters, so per-worker gradients are a single ``vmap(grad(loss))`` call and the GAA policy can
differentiate through ``θ_{t+1} = θ_t − λ Σ α_i g_i``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap


def mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Module:
    """One hidden ReLU layer, as in the paper's MNIST, Yelp and Healthcare benchmarks."""
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_out))


def mnist_mlp() -> nn.Module:
    """784-32-10 MLP (25,450 parameters)."""
    return mlp(784, 32, 10)


def yelp_mlp() -> nn.Module:
    """1024-10-2 MLP over 1024-d review features (10,272 parameters)."""
    return mlp(1024, 10, 2)


def healthcare_mlp() -> nn.Module:
    """1024-32-10 MLP over 1024-d record features (33,130 parameters)."""
    return mlp(1024, 32, 10)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        # Same parameter count as BatchNorm (a weight and a bias per channel) but no running
        # statistics, so it is a pure function of θ — what vmap over workers needs.
        return nn.GroupNorm(min(32, channels), channels)
    raise ValueError(f"unknown norm {kind!r}; allowed: ['batch', 'group']")


class BasicBlock(nn.Module):
    """The two-convolution residual block of ResNet-18 (He et al., 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(norm, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-10 ResNet-18 (3×3 stem, no max-pool; 11,173,962 parameters with either norm)."""

    def __init__(self, n_classes: int = 10, norm: str = "batch") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = _norm(norm, 64)
        layers, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(c_in, c_out, stride, norm), BasicBlock(c_out, c_out, 1, norm)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(512, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 3, 32, 32)
        out = self.layers(torch.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def resnet18_cifar(norm: str = "group") -> nn.Module:
    """ResNet-18 for CIFAR-10; ``norm='group'`` (default) keeps per-worker vmap exact."""
    return ResNet18(norm=norm)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "mnist_mlp": mnist_mlp,
    "yelp_mlp": yelp_mlp,
    "healthcare_mlp": healthcare_mlp,
    "resnet18": resnet18_cifar,
}


def make_model(name: str) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {sorted(MODELS)}")
    return MODELS[name]()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class FunctionalModel:
    """A module seen as ``loss(θ_flat, x, y)``: flatten/unflatten plus vectorized per-worker gradients."""

    def __init__(self, module: nn.Module, worker_chunk: int | None = None) -> None:
        if any(True for _ in module.buffers()):
            raise ValueError(
                f"{type(module).__name__} has buffers (e.g. BatchNorm running statistics), which per-worker "
                "vmap cannot update; build it with norm='group'")
        self.module = module
        self.names = [name for name, _ in module.named_parameters()]
        self.shapes = [p.shape for _, p in module.named_parameters()]
        self.numels = [p.numel() for _, p in module.named_parameters()]
        self.dim = sum(self.numels)
        self._worker_grads = vmap(grad(self.loss), in_dims=(None, 0, 0))
        self.worker_chunk = worker_chunk

    def initial_theta(self) -> torch.Tensor:
        """θ_0: the module's own (PyTorch default) initialisation, flattened."""
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()]).clone()

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, torch.split(theta, self.numels), self.shapes)}

    def logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self.unflatten(theta), (x,))

    def loss(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the model at ``θ`` on ``(x, y)``; differentiable in ``θ``."""
        return nn.functional.cross_entropy(self.logits(theta, x), y)

    def worker_gradients(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                         worker_chunk: int | None = None) -> torch.Tensor:
        """All workers' mini-batch gradients at θ in one call: ``x[n, b, ...], y[n, b] → G[n, d]``.

        ``worker_chunk`` (else the model's default, None = all at once) vmaps over at most that many
        workers at a time, writing into one preallocated ``[n, d]``: same result, but activation
        memory scales with ``chunk·b`` instead of ``n·b`` (ResNet-18, see docs/benchmarks.md).
        """
        chunk = self.worker_chunk if worker_chunk is None else worker_chunk
        n = x.shape[0]
        if not chunk or chunk >= n:
            return self._worker_grads(theta, x, y)
        out = theta.new_empty((n, self.dim))
        for start in range(0, n, chunk):
            out[start:start + chunk] = self._worker_grads(theta, x[start:start + chunk], y[start:start + chunk])
        return out

    def losses_after_steps(self, theta: torch.Tensor, updates: torch.Tensor, lr: float,
                           x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``loss(θ − lr·U[k], x, y)`` for every row of ``U[m, d]`` at once: ``[m]``."""
        return vmap(self.loss, in_dims=(0, None, None))(theta.unsqueeze(0) - lr * updates, x, y)

    @torch.no_grad()
    def accuracy(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, batch: int | None = None) -> float:
        """Top-1 accuracy, in batches small enough that a ResNet-18's activations stay within a few GB."""
        batch = batch or (10_000 if self.dim < 1_000_000 else 256)
        correct = 0
        for start in range(0, len(x), batch):
            correct += int((self.logits(theta, x[start:start + batch]).argmax(1) == y[start:start + batch]).sum())
        return correct / max(len(x), 1)
