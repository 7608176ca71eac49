"""Adversarial training on the input embeddings: FGM (one gradient step) and PGD (K projected steps).

The perturbation is added to the OUTPUT of the input embedding module through a forward hook, so it
works the same for every strategy: for frozen and LoRA the embedding weights take no gradient, yet the
loss still has a gradient with respect to their output. The hook lives only inside one training loss
computation, so evaluation and inference never see it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ADVERSARIAL_METHODS = ("fgm", "pgd")
# Madry et al.'s PGD step size: 2.5 * epsilon / K reaches the ball's surface and can still move along it.
_PGD_STEP_FACTOR = 2.5


class _EmbeddingPerturbation:
    """Forward hook: adds `delta` to the embedding output and keeps that output to differentiate against."""

    def __init__(self) -> None:
        self.delta: Any = None
        self.output: Any = None

    def __call__(self, module: Any, args: Any, output: Any) -> Any:
        if self.delta is not None:
            output = output + self.delta
        if not output.requires_grad:
            # Frozen embeddings: a leaf that requires grad, so d(loss)/d(output) exists.
            output = output.detach().requires_grad_(True)
        self.output = output
        return output


def _unit_rows(grad: Any) -> Any:
    """The gradient scaled to L2 norm 1 per row (over tokens and hidden units), as in Miyato et al."""
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad / norms.view(-1, *([1] * (grad.dim() - 1)))


def _project(delta: Any, epsilon: float) -> Any:
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    scale = (epsilon / norms).clamp(max=1.0)
    return delta * scale.view(-1, *([1] * (delta.dim() - 1)))


def adversarial_loss(
    loss_fn: Callable[[], Any], model: Any, method: str, epsilon: float, pgd_steps: int = 3
) -> Any:
    """0.5 * clean loss + 0.5 * loss under the worst-case embedding perturbation of L2 radius epsilon.

    loss_fn runs the model forward on the batch and returns a scalar loss; it is called 2 (fgm) or
    pgd_steps + 1 (pgd) times. The returned loss carries the graph of both the clean and the
    adversarial pass, so the caller's single backward trains on both.
    """
    import torch

    if method not in ADVERSARIAL_METHODS:
        raise ValueError(f"unknown adversarial method {method!r}: choose one of {list(ADVERSARIAL_METHODS)}")
    if not epsilon > 0:
        raise ValueError(f"adversarial epsilon must be > 0, got {epsilon}")
    hook = _EmbeddingPerturbation()
    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        clean = loss_fn()
        (grad,) = torch.autograd.grad(clean, hook.output, retain_graph=True)
        if method == "fgm":
            delta = epsilon * _unit_rows(grad.detach())
        else:
            step = _PGD_STEP_FACTOR * epsilon / pgd_steps
            delta = _project(step * _unit_rows(grad.detach()), epsilon)
            for _ in range(pgd_steps - 1):
                hook.delta = delta
                ascent = loss_fn()
                (grad,) = torch.autograd.grad(ascent, hook.output)
                delta = _project(delta + step * _unit_rows(grad.detach()), epsilon)
        hook.delta = delta.detach()
        adversarial = loss_fn()
    finally:
        handle.remove()
    return 0.5 * clean + 0.5 * adversarial
