"""Gradient reversal layer (Ganin & Lempitsky, DANN), as used by TA3N's discriminators."""

from __future__ import annotations

import torch


class GradReverse(torch.autograd.Function):
    """Identity in the forward pass; multiplies the gradient by ``-beta`` in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, beta: float) -> torch.Tensor:  # noqa: D102
        ctx.beta = float(beta)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return grad_output.neg() * ctx.beta, None


def grad_reverse(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Apply the gradient reversal layer with coefficient ``beta`` (any tensor shape)."""
    return GradReverse.apply(x, beta)
