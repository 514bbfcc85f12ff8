"""Data poisoning: Byzantine workers compute honest gradients on corrupted data.

These attacks act through :meth:`Tampering.poison_batch`, which the simulator calls on the round's
mini-batches ``x[n, b, ...], y[n, b]`` *before* the gradients are computed; :meth:`forge` then
returns the active rows unchanged, because they already are gradients of the poisoned data.
"""

from __future__ import annotations

import torch

from gaa_env.attacks.tampering import TamperContext, Tampering, register_tampering

LABEL_MAPPINGS = ("reverse", "permutation")


@register_tampering("label_flip")
class LabelFlip(Tampering):
    """Label flipping (ByzFL ``LabelFlipping``, Blades, Karimireddy et al.'s ``LF``): active workers train
    on relabelled data.

    ``mapping="reverse"`` (default): ``y → C − 1 − y`` with C = ``ctx.n_classes``.
    ``mapping="permutation"``: ``y → π(y)`` for a random derangement π of the C classes (no class keeps
    its label), drawn from a generator seeded by the run's seed (``ctx.generator.initial_seed()``): it is
    fixed for the whole learning process, redrawn when the simulator is reset with another seed, the same
    for the same seed, and it does not consume the simulator's random stream.

    Only the active workers' labels change; their rows are then honest gradients of poisoned data, so
    :meth:`forge` returns ``honest[active]`` unchanged.

    >>> import torch
    >>> ctx = TamperContext(theta=torch.zeros(1), generator=torch.Generator(), lr=0.05, round_index=0, n_classes=10)
    >>> LabelFlip().poison_batch(torch.zeros(2, 3, 1), torch.tensor([[0, 3, 9], [0, 3, 9]]),
    ...                          torch.tensor([False, True]), ctx)[1]
    tensor([[0, 3, 9],
            [9, 6, 0]])
    """

    def __init__(self, *, mapping: str = "reverse") -> None:
        if mapping not in LABEL_MAPPINGS:
            raise ValueError(f"label_flip mapping must be one of {list(LABEL_MAPPINGS)}, got {mapping!r}")
        self.mapping = mapping
        self._key: tuple[int, int] | None = None
        self._permutation: torch.Tensor | None = None

    def label_map(self, ctx: TamperContext) -> torch.Tensor:
        """The ``[C]`` lookup table ``new_label = table[old_label]`` used in this run."""
        n_classes = ctx.n_classes
        if n_classes < 2:
            raise ValueError(f"label_flip needs at least 2 classes, got n_classes={n_classes}")
        if self.mapping == "reverse":
            return torch.arange(n_classes - 1, -1, -1)
        key = (ctx.generator.initial_seed(), n_classes)
        if self._key != key or self._permutation is None:
            generator = torch.Generator().manual_seed((key[0] * 1_000_003 + 0x1AB) % 2**63)
            classes = torch.arange(n_classes)
            while True:
                permutation = torch.randperm(n_classes, generator=generator)
                if not bool((permutation == classes).any()):
                    break
            self._key, self._permutation = key, permutation
        return self._permutation

    def poison_batch(self, x: torch.Tensor, y: torch.Tensor, active: torch.Tensor,
                     ctx: TamperContext) -> tuple[torch.Tensor, torch.Tensor]:
        table = self.label_map(ctx).to(y.device)
        poisoned = y.clone()
        poisoned[active] = table[y[active]]
        return x, poisoned

    def forge(self, honest: torch.Tensor, active: torch.Tensor, ctx: TamperContext) -> torch.Tensor:
        return honest[active]
