"""Weighted SDR (wSDR): the DCUNet training loss and a test metric.

Choi et al., "Phase-aware Speech Enhancement with Deep Complex U-Net", ICLR
2019, section 3.3. With ``x`` the noisy input, ``y`` the clean target, ``ŷ``
the estimate, ``z = x - y`` the noise and ``ẑ = x - ŷ`` the estimated noise::

    loss_SDR(a, â) = -<a, â> / (‖a‖ ‖â‖)                     (a negative cosine)
    α = ‖y‖² / (‖y‖² + ‖z‖²)
    loss_wSDR(x, y, ŷ) = α loss_SDR(y, ŷ) + (1 - α) loss_SDR(z, ẑ)

``loss_wSDR`` lies in [-1, 1], -1 for a perfect estimate. It is invariant to
the scale of ``ŷ`` only through the first term: the noise term ties the
estimate's level to the input's. Norms get ``eps`` (a zero estimate or a
zero noise gives a term of 0, not NaN).

* ``wsdr_loss`` / ``WeightedSDRLoss``: torch, on padded batches (samples past
  each signal's length are ignored).
* ``wsdr_score``: the metric, numpy, one utterance, reported as
  ``-loss_wSDR`` so that, like the other metrics, **higher is better** (1 =
  perfect). For the unprocessed input (``ŷ = x``) the estimated noise is
  zero and its term counts 0: the input scores ``α cos(y, x)``.
* ``WSDRMetricMixin``: adds "wsdr" to the validation/test metrics of an
  ``EnhancementBrain`` (one of its ``LOCAL_METRICS``: it needs the mixture,
  which the shared metric workers do not get).

This lives apart from ``custom_modules/training/losses.py`` and ``metrics.py`` while
those are being written; it can move there unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

WSDR_METRIC = "wsdr"


def _length_mask(lengths: torch.Tensor, num_samples: int, like: torch.Tensor) -> torch.Tensor:
    """(batch, samples) mask of the samples inside each signal (relative lengths)."""
    absolute = torch.round(lengths.to(torch.float64) * num_samples).long()
    positions = torch.arange(num_samples, device=like.device)
    return (positions.unsqueeze(0) < absolute.to(like.device).unsqueeze(1)).to(like.dtype)


def _negative_cosine(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    return -(a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


def wsdr_loss(estimate, target, mixture, lengths=None, eps=1e-8, reduction="mean"):
    """Weighted SDR loss of (batch, samples) waveforms (see the module docstring).

    Arguments
    ---------
    estimate, target, mixture : torch.Tensor
        ``(batch, samples)``: network output, clean target, network input.
    lengths : torch.Tensor, optional
        ``(batch,)`` relative lengths (SpeechBrain style); samples past a
        signal's length are zeroed in all three before the loss.
    eps : float
        Added to the norm products.
    reduction : str
        "mean" over the batch, or "none" for one value per signal.

    Example
    -------
    >>> clean = torch.randn(2, 1000)
    >>> mixture = clean + 0.5 * torch.randn(2, 1000)
    >>> float(wsdr_loss(clean, clean, mixture)) < -0.999
    True
    >>> wsdr_loss(mixture, clean, mixture, reduction="none").shape
    torch.Size([2])
    """
    if not (estimate.shape == target.shape == mixture.shape) or estimate.dim() != 2:
        raise ValueError(
            "estimate, target and mixture must all be (batch, samples); got "
            f"{tuple(estimate.shape)}, {tuple(target.shape)}, {tuple(mixture.shape)}"
        )
    if lengths is not None:
        mask = _length_mask(lengths, estimate.shape[-1], estimate)
        estimate, target, mixture = estimate * mask, target * mask, mixture * mask
    noise, noise_estimate = mixture - target, mixture - estimate
    target_energy = (target * target).sum(-1)
    alpha = target_energy / (target_energy + (noise * noise).sum(-1) + eps)
    loss = alpha * _negative_cosine(target, estimate, eps) + (1 - alpha) * _negative_cosine(
        noise, noise_estimate, eps
    )
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


class WeightedSDRLoss(nn.Module):
    """``wsdr_loss`` as a module (for the recipe YAML).

    Example
    -------
    >>> loss_fn = WeightedSDRLoss()
    >>> x = torch.randn(3, 800)
    >>> loss_fn(x, x, x + 0.1 * torch.randn(3, 800), torch.ones(3)).shape
    torch.Size([])
    """

    def __init__(self, eps=1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, estimate, target, mixture, lengths=None):
        """Mean wSDR loss of the batch (see ``wsdr_loss``)."""
        return wsdr_loss(estimate, target, mixture, lengths, eps=self.eps)


def wsdr_score(estimate, target, mixture, eps=1e-8) -> float:
    """``-loss_wSDR`` of one utterance (1-D arrays of equal length): higher is better.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> clean = rng.normal(size=4000)
    >>> mixture = clean + rng.normal(size=4000)
    >>> wsdr_score(clean, clean, mixture) > 0.999
    True
    >>> round(wsdr_score(mixture, clean, mixture), 2)  # α cos(y, x) with α ≈ 0.5
    0.35
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (estimate, target, mixture)]
    if any(a.ndim != 1 for a in arrays) or len({a.size for a in arrays}) != 1:
        raise ValueError(
            "estimate, target and mixture must be 1-D and of equal length; got shapes "
            f"{[a.shape for a in arrays]}"
        )
    tensors = [torch.from_numpy(a).unsqueeze(0) for a in arrays]
    return -float(wsdr_loss(*tensors, eps=eps))


class WSDRMetricMixin:
    """Adds the "wsdr" metric to an ``EnhancementBrain``'s validation/test metrics.

    Use as ``class MyBrain(WSDRMetricMixin, EnhancementBrain)`` and list
    "wsdr" in ``valid_metrics`` / ``test_metrics``. It is one of the Brain's
    ``LOCAL_METRICS``: scored in the main process (it needs the mixture, which
    the metric workers do not get; it is cheap), with the usual
    ``wsdr_mixture`` / ``_estimate`` / ``_delta`` test columns.

    Example
    -------
    >>> class Scorer(WSDRMetricMixin):
    ...     pass
    >>> x = np.sin(np.arange(1000) / 9.0)
    >>> scores = Scorer().local_metrics([x + 0.1], [x], [x])
    >>> round(scores[0]["wsdr"][0], 3)
    1.0
    """

    LOCAL_METRICS = (WSDR_METRIC,)

    def local_metrics(self, mixtures, targets, estimates):
        """``[{"wsdr": (score of the estimate, score of the mixture)}, ...]``."""
        return [
            {WSDR_METRIC: (wsdr_score(est, tgt, mix), wsdr_score(mix, tgt, mix))}
            for mix, tgt, est in zip(mixtures, targets, estimates, strict=True)
        ]
