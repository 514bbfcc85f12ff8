"""Who trains on what: per-worker sample pools and vectorized mini-batch sampling.

* ``shared`` — the paper's MNIST/CIFAR-10 setting: every worker holds a copy of the whole training
  set and draws its own mini-batches from it.
* ``dirichlet`` — label-skewed non-IID: for each class, its samples are split over the workers by
  proportions drawn from Dirichlet(``alpha``) (small alpha → each worker sees few classes).
* ``by_group`` — local data by a natural group (a US state in the paper's Yelp/Healthcare): groups
  are dealt to workers round-robin, so with as many groups as workers each worker owns one group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PARTITIONS = ("shared", "dirichlet", "by_group")


@dataclass(frozen=True)
class Partition:
    """Worker ``i`` owns the sample indices ``pool[offsets[i] : offsets[i] + sizes[i]]``."""

    pool: torch.Tensor
    offsets: torch.Tensor
    sizes: torch.Tensor

    @property
    def n_workers(self) -> int:
        return int(self.sizes.numel())

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Draw ``[n_workers, batch_size]`` sample indices (with replacement) in one vectorized call."""
        u = torch.rand(self.n_workers, batch_size, generator=generator, dtype=torch.float64)
        local = (u * self.sizes.unsqueeze(1)).long().clamp_max_(self.sizes.unsqueeze(1) - 1)
        return self.pool[self.offsets.unsqueeze(1) + local]


def _from_lists(index_lists: list[torch.Tensor]) -> Partition:
    sizes = torch.tensor([len(ix) for ix in index_lists], dtype=torch.long)
    if (sizes == 0).any():
        empty = torch.nonzero(sizes == 0).flatten().tolist()
        raise ValueError(f"partition left workers {empty} without data; use fewer workers or a larger alpha")
    offsets = torch.cumsum(sizes, 0) - sizes
    return Partition(pool=torch.cat(index_lists), offsets=offsets, sizes=sizes)


def shared_partition(n_samples: int, n_workers: int) -> Partition:
    """Every worker draws from all ``n_samples`` training samples."""
    return Partition(pool=torch.arange(n_samples), offsets=torch.zeros(n_workers, dtype=torch.long),
                     sizes=torch.full((n_workers,), n_samples, dtype=torch.long))


def dirichlet_partition(labels: torch.Tensor, n_workers: int, alpha: float, generator: torch.Generator) -> Partition:
    """Split each class over workers with Dirichlet(``alpha``) proportions (Hsu et al., 2019)."""
    if not alpha > 0:
        raise ValueError(f"dirichlet_alpha must be > 0, got {alpha}")
    concentration = torch.full((n_workers,), float(alpha), dtype=torch.float64)
    per_worker: list[list[torch.Tensor]] = [[] for _ in range(n_workers)]
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        # torch's Dirichlet sampler takes no generator: draw it from Gamma samples made with ours.
        gammas = _gamma(concentration, generator)
        cuts = (torch.cumsum(gammas / gammas.sum(), 0) * len(members)).round().long()[:-1]
        for worker, chunk in enumerate(torch.tensor_split(members, cuts.tolist())):
            per_worker[worker].append(chunk)
    return _from_lists([torch.cat(chunks) for chunks in per_worker])


def _gamma(concentration: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gamma(k, 1) samples via Marsaglia–Tsang, driven by ``generator`` so partitions are seeded."""
    k = concentration.clone()
    boost = k < 1
    k = torch.where(boost, k + 1, k)
    d = k - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(k)
    todo = torch.ones_like(k, dtype=torch.bool)
    while todo.any():
        x = torch.randn(k.shape, generator=generator, dtype=torch.float64)
        u = torch.rand(k.shape, generator=generator, dtype=torch.float64)
        v = (1 + c * x) ** 3
        ok = (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * x**2 + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        take = todo & ok
        out[take] = (d * v)[take]
        todo &= ~ok
    u = torch.rand(k.shape, generator=generator, dtype=torch.float64)
    return torch.where(boost, out * u ** (1.0 / concentration), out)


def group_partition(groups: torch.Tensor, n_workers: int) -> Partition:
    """Deal the distinct values of ``groups`` to workers round-robin (sorted group ids)."""
    ids = torch.unique(groups)
    if len(ids) < n_workers:
        raise ValueError(f"by_group partition needs at least n_workers={n_workers} groups, got {len(ids)}")
    lists: list[list[torch.Tensor]] = [[] for _ in range(n_workers)]
    for rank, gid in enumerate(ids):
        lists[rank % n_workers].append(torch.nonzero(groups == gid).flatten())
    return _from_lists([torch.cat(x) for x in lists])


def make_partition(kind: str, labels: torch.Tensor, n_workers: int, *, generator: torch.Generator,
                   dirichlet_alpha: float = 0.5, groups: torch.Tensor | None = None) -> Partition:
    """Build the partition named ``kind`` (one of :data:`PARTITIONS`)."""
    if kind == "shared":
        return shared_partition(len(labels), n_workers)
    if kind == "dirichlet":
        return dirichlet_partition(labels, n_workers, dirichlet_alpha, generator)
    if kind == "by_group":
        if groups is None:
            raise ValueError("partition='by_group' needs a dataset with groups (e.g. Yelp/Healthcare); "
                             "this dataset has none — use 'shared' or 'dirichlet'")
        return group_partition(groups, n_workers)
    raise ValueError(f"unknown partition {kind!r}; allowed: {list(PARTITIONS)}")


def sample_quasi_set(n_samples: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of the quasi-validation set B: ``size`` distinct training samples (paper Sec 5.1)."""
    if not 1 <= size <= n_samples:
        raise ValueError(f"quasi_size must be in [1, {n_samples}], got {size}")
    return torch.randperm(n_samples, generator=generator)[:size]
