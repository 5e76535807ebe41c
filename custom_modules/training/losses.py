"""Training losses on waveforms.

* :func:`si_sdr`: the differentiable, batched, length-aware SI-SDR (dB) every
  SI-SDR loss here is built on (:class:`NegativeSISDR`, :class:`SpexPlusLoss`).
* :class:`SpexPlusLoss`: SpEx+'s multi-scale negative SI-SDR plus speaker cross-entropy.
* :class:`EnergyConservingLoss`: the Denoising WaveNet's L1 on the speech
  estimate plus L1 on the implied noise estimate ``mixture - speech``.

``SpectralLoss`` compares short-time Fourier transforms of an estimate and a
reference: a loss on the complex spectrogram (its real and imaginary parts) and
a loss on the magnitude spectrogram, mixed as
``mult_complex * complex + (1 - mult_complex) * magnitude``;
``MultiResolutionSpectralLoss`` averages it over several FFT sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Power floor of the per-utterance level normalisation (digital silence).
LEVEL_FLOOR = 1e-10
# Magnitude floor of the compression (its derivative is infinite at 0).
COMPRESS_FLOOR = 1e-8


class SpectralLoss(nn.Module):
    """Weighted complex + magnitude spectrogram loss between two waveforms.

    The STFT is ``torch.stft`` with a periodic Hann window of ``win_length``,
    ``center=True`` and zero padding at the edges (so any length works, even
    shorter than the window).

    * complex term: ``criterion`` on the stacked real and imaginary parts, i.e.
      for MSE ``mean((Re ΔS)² and (Im ΔS)²)`` = ``mean(|ΔS|²) / 2``;
    * magnitude term: ``criterion`` on ``|S_est|`` and ``|S_ref|``.

    Arguments
    ---------
    n_fft : int
        FFT size.
    win_length : int, optional
        Window length (default ``n_fft``).
    hop_length : int, optional
        Frame shift (default ``win_length // 4``).
    mult_complex : float
        Weight of the complex term, in [0, 1].
    criterion : callable
        ``criterion(input, target, reduction=...)`` like the functions of
        ``torch.nn.functional`` (default ``mse_loss``). With ``lengths`` it is
        called with ``reduction="none"`` and must return elementwise losses.
    compress_exponent : float
        Both terms on power-law compressed spectra ``|S|**c`` (phase kept) when
        below 1 (0.3 is common): the loss then follows the quieter
        high-frequency bins too instead of the loudest low-frequency ones.
        Default 1.0 (no compression).
    normalize_level : bool
        Divide estimate and target by the target's RMS, per utterance, before
        the STFT, so quiet and loud utterances weigh the same (mixtures drawn
        with a 30 dB range of levels would otherwise train on the loud ones
        only). Default False.
    over_suppression_weight : float
        Weight of the magnitude errors where the estimate is *below* the
        target (speech removed), relative to 1 for those above it (noise
        left): an asymmetric loss as in VoiceFilter-Lite (Wang et al.,
        Interspeech 2020). MSE alone trades speech energy for noise removal
        (the real-speech models sit 1.6-3.6 dB below the target in 0-4 kHz);
        values above 1 push against that. Default 1.0 (symmetric).

    Example
    -------
    >>> loss_fn = SpectralLoss(n_fft=256)
    >>> estimate, target = torch.randn(2, 4000), torch.randn(2, 4000)
    >>> total, complex_term, magnitude_term = loss_fn(estimate, target)
    >>> total.shape
    torch.Size([])
    >>> bool(torch.isclose(total, 0.3 * complex_term + 0.7 * magnitude_term))
    True
    """

    def __init__(
        self,
        n_fft=1024,
        win_length=None,
        hop_length=None,
        mult_complex=0.3,
        criterion=F.mse_loss,
        normalize_level=False,
        compress_exponent=1.0,
        over_suppression_weight=1.0,
    ):
        super().__init__()
        if over_suppression_weight <= 0:
            raise ValueError(f"over_suppression_weight must be > 0, got {over_suppression_weight}")
        self.over_suppression_weight = float(over_suppression_weight)
        if not 0.0 < compress_exponent <= 1.0:
            raise ValueError(f"compress_exponent must be in (0, 1], got {compress_exponent}")
        self.normalize_level = normalize_level
        self.compress_exponent = compress_exponent
        if not 0.0 <= mult_complex <= 1.0:
            raise ValueError(f"mult_complex must be in [0, 1], got {mult_complex}")
        self.n_fft = n_fft
        self.win_length = n_fft if win_length is None else win_length
        self.hop_length = self.win_length // 4 if hop_length is None else hop_length
        if not 0 < self.hop_length <= self.win_length <= n_fft:
            raise ValueError(
                f"need 0 < hop_length ({self.hop_length}) <= win_length ({self.win_length}) "
                f"<= n_fft ({n_fft})"
            )
        self.mult_complex = mult_complex
        self.criterion = criterion

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> complex (batch, n_fft // 2 + 1, frames)."""
        return torch.stft(
            waveform,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            # Made per call in the input's dtype/device (float64 input gets a float64 window).
            window=torch.hann_window(self.win_length, dtype=waveform.dtype, device=waveform.device),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )

    def compress(self, spec: torch.Tensor) -> torch.Tensor:
        """Power-law compressed spectrum ``|S|**c * exp(j angle(S))`` (phase kept)."""
        magnitude = spec.abs().clamp(min=COMPRESS_FLOOR)
        return spec / magnitude * magnitude**self.compress_exponent

    def frame_mask(self, lengths: torch.Tensor, num_samples: int, num_frames: int) -> torch.Tensor:
        """(batch, frames) float mask of frames centred inside each signal.

        ``lengths`` are relative (SpeechBrain style: 1.0 = ``num_samples``). A
        signal of ``n`` samples has ``1 + n // hop_length`` centred frames,
        which is all of them for the longest signal of the batch.
        """
        abs_lengths = torch.round(lengths.to(torch.float64) * num_samples).long()
        valid = 1 + torch.div(abs_lengths, self.hop_length, rounding_mode="floor")
        frames = torch.arange(num_frames, device=lengths.device)
        return (frames.unsqueeze(0) < valid.unsqueeze(1)).float()

    def _reduce(self, estimate, target, mask, weight=None):
        """Criterion (times ``weight``), averaged over the frames ``mask`` keeps (all if None)."""
        if mask is None and weight is None:
            return self.criterion(estimate, target)
        elementwise = self.criterion(estimate, target, reduction="none")
        if weight is not None:
            elementwise = elementwise * weight
        if mask is None:
            return elementwise.mean()
        # elementwise: (batch, freqs, frames[, 2]); the mask spreads over freqs (and re/im).
        trailing = (1,) * (elementwise.dim() - 3)
        mask = mask.reshape(mask.shape[0], 1, mask.shape[1], *trailing).expand_as(elementwise)
        return (elementwise * mask).sum() / mask.sum().clamp(min=1.0)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor, lengths=None):
        """Loss of ``estimate`` against ``target``, both (batch, samples).

        Arguments
        ---------
        estimate, target : torch.Tensor
            Waveforms of identical shape (batch, samples).
        lengths : torch.Tensor, optional
            Relative lengths (batch,) in (0, 1]; frames centred beyond a
            signal's length are left out of the averages.

        Returns
        -------
        (torch.Tensor, torch.Tensor, torch.Tensor)
            Scalars ``(total, complex, magnitude)``.
        """
        if estimate.shape != target.shape or estimate.dim() != 2:
            raise ValueError(
                "estimate and target must both be (batch, samples); got "
                f"{tuple(estimate.shape)} and {tuple(target.shape)}"
            )
        if self.normalize_level:
            # Every utterance weighs the same whatever its level: both signals are
            # divided by the target's RMS (over its true length).
            if lengths is None:
                power = target.pow(2).mean(dim=1)
            else:
                abs_lengths = torch.round(lengths * target.shape[1]).clamp(min=1)
                keep = (
                    torch.arange(target.shape[1], device=target.device)[None] < abs_lengths[:, None]
                )
                power = (target.pow(2) * keep).sum(dim=1) / abs_lengths
            rms = torch.sqrt(power + LEVEL_FLOOR).detach()[:, None]
            estimate, target = estimate / rms, target / rms
        spec_est, spec_ref = self.spectrogram(estimate), self.spectrogram(target)
        if self.compress_exponent != 1.0:
            spec_est, spec_ref = self.compress(spec_est), self.compress(spec_ref)
        mask = None
        if lengths is not None:
            if lengths.shape != (estimate.shape[0],):
                raise ValueError(
                    f"lengths must have shape ({estimate.shape[0]},), got {tuple(lengths.shape)}"
                )
            mask = self.frame_mask(lengths, estimate.shape[1], spec_est.shape[-1])
        complex_term = self._reduce(
            torch.view_as_real(spec_est), torch.view_as_real(spec_ref), mask
        )
        mag_est, mag_ref = spec_est.abs(), spec_ref.abs()
        weight = None
        if self.over_suppression_weight != 1.0:
            below = (mag_est < mag_ref).to(mag_est.dtype)
            weight = 1.0 + (self.over_suppression_weight - 1.0) * below
        magnitude_term = self._reduce(mag_est, mag_ref, mask, weight)
        total = self.mult_complex * complex_term + (1.0 - self.mult_complex) * magnitude_term
        return total, complex_term, magnitude_term


class MultiResolutionSpectralLoss(nn.Module):
    """:class:`SpectralLoss` at several FFT sizes, averaged (a multi-resolution STFT loss).

    One long window (e.g. 1024 points, 64 ms at 16 kHz) resolves frequency
    but smears time: residual noise in the short gaps between syllables and
    smearing around onsets hardly change its frames. Shorter windows see them.
    The squared magnitude of a window's STFT grows with its length, so each
    size's terms are scaled by ``max(n_ffts) / n_fft`` before the average:
    every size weighs about the same, and ``n_ffts=[N]`` is exactly
    ``SpectralLoss(n_fft=N)``. Each size uses ``win_length = n_fft`` and
    ``hop_length = n_fft // 4``.

    Arguments
    ---------
    n_ffts : sequence of int
        FFT sizes, e.g. ``[256, 512, 1024]``.
    **spectral_options
        Every other :class:`SpectralLoss` argument (``mult_complex``,
        ``normalize_level``, ``over_suppression_weight``...), shared by all sizes.

    Example
    -------
    >>> estimate, target = torch.randn(2, 4000), torch.randn(2, 4000)
    >>> single = SpectralLoss(n_fft=256)(estimate, target)
    >>> same = MultiResolutionSpectralLoss([256])(estimate, target)
    >>> all(bool(torch.isclose(a, b)) for a, b in zip(single, same))
    True
    >>> total, complex_term, magnitude_term = MultiResolutionSpectralLoss([64, 256])(estimate, target)
    >>> total.shape, bool(torch.isclose(total, 0.3 * complex_term + 0.7 * magnitude_term))
    (torch.Size([]), True)
    """

    def __init__(self, n_ffts=(1024,), **spectral_options):
        super().__init__()
        n_ffts = [int(n) for n in n_ffts]
        if not n_ffts or min(n_ffts) < 2:
            raise ValueError(f"n_ffts must be a non-empty list of FFT sizes >= 2, got {n_ffts}")
        if "n_fft" in spectral_options:
            raise ValueError("give the FFT sizes as n_ffts (a list), not n_fft")
        self.resolutions = nn.ModuleList(SpectralLoss(n_fft=n, **spectral_options) for n in n_ffts)
        self.scales = [max(n_ffts) / n for n in n_ffts]

    def forward(self, estimate: torch.Tensor, target: torch.Tensor, lengths=None):
        """Scalars ``(total, complex, magnitude)``, each the scaled mean over the sizes."""
        sums = [estimate.new_zeros(()) for _ in range(3)]
        for scale, loss_fn in zip(self.scales, self.resolutions, strict=True):
            for index, term in enumerate(loss_fn(estimate, target, lengths)):
                sums[index] = sums[index] + scale * term
        count = len(self.resolutions)
        return tuple(value / count for value in sums)


def length_mask(lengths, like: torch.Tensor) -> torch.Tensor:
    """1 on the valid samples of a padded ``(batch, samples)`` batch, 0 beyond.

    ``lengths`` are relative (SpeechBrain convention), ``None`` meaning all
    valid; the mask has the dtype and device of ``like``.

    Example
    -------
    >>> length_mask(torch.tensor([1.0, 0.5]), torch.zeros(2, 4))
    tensor([[1., 1., 1., 1.],
            [1., 1., 0., 0.]])
    """
    if lengths is None:
        return torch.ones_like(like)
    total = like.shape[-1]
    valid = torch.round(lengths.to(torch.float64) * total).long().to(like.device)
    positions = torch.arange(total, device=like.device)
    return (positions < valid.unsqueeze(1)).to(like.dtype)


def si_sdr_ratio(estimate, target, lengths=None, eps=1e-8):
    """The energy ratio ``|a s|^2 / |a s - x|^2`` of SI-SDR per utterance (see :func:`si_sdr`).

    Returns
    -------
    torch.Tensor
        (batch,); ``10 log10`` of it (plus ``eps``) is the SI-SDR in dB.
    """
    if estimate.shape != target.shape or estimate.dim() != 2:
        raise ValueError(
            "estimate and target must both be (batch, samples); got "
            f"{tuple(estimate.shape)} and {tuple(target.shape)}"
        )
    mask = length_mask(lengths, estimate)
    count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    estimate = (estimate - (estimate * mask).sum(1, keepdim=True) / count) * mask
    target = (target - (target * mask).sum(1, keepdim=True) / count) * mask
    gain = (estimate * target).sum(1, keepdim=True) / (target.pow(2).sum(1, keepdim=True) + eps)
    projection = gain * target
    residual = estimate - projection
    ratio = projection.pow(2).sum(1) / (residual.pow(2).sum(1) + eps)
    return ratio


def si_sdr(estimate, target, lengths=None, eps=1e-8):
    """Scale-invariant SDR in dB per utterance, over the valid samples only.

    Both signals are made zero-mean over their valid part; the target is
    scaled by the least-squares gain; ``eps`` keeps silent inputs finite.

    Arguments
    ---------
    estimate, target : torch.Tensor
        (batch, samples).
    lengths : torch.Tensor, optional
        (batch,) relative lengths in (0, 1]; samples beyond are ignored.

    Returns
    -------
    torch.Tensor
        (batch,).

    Example
    -------
    >>> t = torch.sin(torch.arange(400.0) / 5).repeat(2, 1)
    >>> scores = si_sdr(3 * t + 0.01 * torch.cos(torch.arange(400.0)), t)
    >>> scores.shape, bool((scores > 35).all())
    (torch.Size([2]), True)
    """
    return 10 * torch.log10(si_sdr_ratio(estimate, target, lengths, eps) + eps)


class NegativeSISDR(nn.Module):
    """Minus the scale-invariant SDR (dB) of each estimate, averaged over the batch.

    ``SI-SDR = 10 log10(|a s|^2 / |a s - x|^2)`` with ``a = <x, s> / |s|^2``
    (``x`` the estimate, ``s`` the target), both made zero-mean first; only
    the first ``lengths * samples`` samples of each signal count. ``eps``
    keeps silent signals finite.

    Example
    -------
    >>> target = torch.randn(2, 8000)
    >>> loss = NegativeSISDR()
    >>> bool(loss(target * 3.0, target)[0] < -60)
    True
    >>> round(float(loss(target + target.flip(1), target)[0]), 1) < 1.0
    True
    """

    def __init__(self, eps=1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, estimate: torch.Tensor, target: torch.Tensor, lengths=None):
        """Returns ``(loss, loss)``: the scalar loss and itself as the only component."""
        if estimate.shape != target.shape or estimate.dim() != 2:
            raise ValueError(
                f"estimate and target must both be (batch, samples); got {tuple(estimate.shape)} "
                f"and {tuple(target.shape)}"
            )
        ratio = si_sdr_ratio(estimate, target, lengths, self.eps)
        loss = -10.0 * torch.log10(ratio + self.eps).mean()
        return loss, loss


class WeightedLoss(nn.Module):
    """Weighted sum of named losses, each ``loss(estimate, target, lengths)``.

    Every term may return a scalar or a tuple whose first item is the
    scalar (as :class:`SpectralLoss` and :class:`NegativeSISDR` do). The
    result is ``(total, {name: term})``, so a recipe logs every component.

    Arguments
    ---------
    terms : dict
        ``{name: loss module}``.
    weights : dict
        ``{name: weight}``; a term with weight 0 is not computed.

    Example
    -------
    >>> loss = WeightedLoss({"spec": SpectralLoss(n_fft=256), "sisdr": NegativeSISDR()},
    ...                     {"spec": 1.0, "sisdr": 0.1})
    >>> total, parts = loss(torch.randn(2, 4000), torch.randn(2, 4000))
    >>> sorted(parts), bool(torch.isclose(total, parts["spec"] + 0.1 * parts["sisdr"]))
    (['sisdr', 'spec'], True)
    """

    def __init__(self, terms: dict, weights: dict):
        super().__init__()
        if set(terms) != set(weights):
            raise ValueError(
                f"terms {sorted(terms)} and weights {sorted(weights)} must name the same losses"
            )
        self.terms = nn.ModuleDict(terms)
        self.weights = {name: float(weight) for name, weight in weights.items()}

    def forward(self, estimate, target, lengths=None):
        """``(total, {name: value})`` of ``estimate`` against ``target``, both (batch, samples)."""
        total = estimate.new_zeros(())
        parts = {}
        for name, term in self.terms.items():
            if self.weights[name] == 0.0:
                continue
            value = term(estimate, target, lengths)
            value = value[0] if isinstance(value, tuple) else value
            parts[name] = value
            total = total + self.weights[name] * value
        return total, parts


class SpexPlusLoss(nn.Module):
    """Multi-scale negative SI-SDR plus weighted speaker cross-entropy.

    ``loss = -sum_i w_i mean(SI-SDR(s_i, target)) + ce_weight * CE(logits, speaker)``
    (paper: ``w = (0.8, 0.1, 0.1)``, ``ce_weight = 0.5``). The CE term is
    skipped (zero) when no logits or labels are given, e.g. on validation
    speakers unseen in training; items labelled ``-1`` (a speaker the head
    does not know) are left out of it.

    Example
    -------
    >>> loss_fn = SpexPlusLoss()
    >>> target = torch.randn(2, 800)
    >>> estimates = target.unsqueeze(1).repeat(1, 3, 1) + 0.1 * torch.randn(2, 3, 800)
    >>> total, sdr, ce = loss_fn(estimates, target, logits=torch.randn(2, 4),
    ...                          speaker_index=torch.tensor([0, 3]))
    >>> bool(torch.isclose(total, -sdr + 0.5 * ce)), bool(sdr > 15)
    (True, True)
    """

    def __init__(self, scale_weights=(0.8, 0.1, 0.1), ce_weight=0.5):
        super().__init__()
        if len(scale_weights) != 3 or min(scale_weights) < 0:
            raise ValueError(f"scale_weights must be 3 non-negative numbers, got {scale_weights}")
        if ce_weight < 0:
            raise ValueError(f"ce_weight must be >= 0, got {ce_weight}")
        self.scale_weights = tuple(float(w) for w in scale_weights)
        self.ce_weight = float(ce_weight)

    def forward(self, estimates, target, lengths=None, logits=None, speaker_index=None):
        """Return ``(total, weighted SI-SDR in dB, cross-entropy)``, all scalars.

        Arguments
        ---------
        estimates : torch.Tensor
            (batch, 3, samples) from :meth:`SpexPlus.extract`.
        target : torch.Tensor
            (batch, samples).
        lengths : torch.Tensor, optional
            (batch,) relative lengths of the (padded) signals.
        logits : torch.Tensor, optional
            (batch, num_speakers).
        speaker_index : torch.Tensor, optional
            (batch,) class indices of the target speakers.
        """
        if estimates.dim() != 3 or estimates.shape[1] != 3:
            raise ValueError(f"estimates must be (batch, 3, samples), got {tuple(estimates.shape)}")
        weighted = sum(
            w * si_sdr(estimates[:, i], target, lengths).mean()
            for i, w in enumerate(self.scale_weights)
        )
        ce = weighted.new_zeros(())
        if logits is not None and speaker_index is not None and self.ce_weight > 0:
            labels = torch.as_tensor(speaker_index, device=logits.device).long()
            known = labels >= 0  # -1: a speaker the head does not know
            if known.any():
                ce = F.cross_entropy(logits[known], labels[known])
        return -weighted + self.ce_weight * ce, weighted, ce


class EnergyConservingLoss(nn.Module):
    """Energy-conserving loss of the Denoising WaveNet (Rethage et al., ICASSP 2018).

    ``L = mean|s - ŝ| + mean|b - b̂|`` with the noise ``b = m - s`` and the
    implied noise estimate ``b̂ = m - ŝ`` (``m`` the mixture, ``s`` the target,
    ``ŝ`` the estimate), means over the valid samples of the batch.

    Note: ``b - b̂ = ŝ - s`` sample by sample, so when the noise is taken as
    ``m - s`` (all our datasets: no separate noise signal exists) both terms
    are equal and the loss is twice the L1 loss, in value and gradient. Both
    terms are computed and returned as the paper defines them.

    ``forward(estimate, target, mixture, lengths=None)``: ``(batch, samples)``
    tensors, optional ``(batch,)`` relative lengths; returns
    ``(total, {"speech_l1": ..., "noise_l1": ...})`` (scalars).

    Example
    -------
    >>> s, m = torch.zeros(2, 100), torch.ones(2, 100)
    >>> total, terms = EnergyConservingLoss()(s + 0.5, s, m)
    >>> float(total), float(terms["speech_l1"]), float(terms["noise_l1"])
    (1.0, 0.5, 0.5)
    """

    def forward(self, estimate, target, mixture, lengths=None):
        """``(total, {"speech_l1", "noise_l1"})``, see the class docstring."""
        if not (estimate.shape == target.shape == mixture.shape) or estimate.dim() != 2:
            raise ValueError(
                "estimate, target and mixture must all be (batch, samples); got "
                f"{tuple(estimate.shape)}, {tuple(target.shape)} and {tuple(mixture.shape)}"
            )
        mask = length_mask(lengths, estimate)
        count = mask.sum().clamp(min=1.0)
        speech = ((target - estimate).abs() * mask).sum() / count
        noise = (((mixture - target) - (mixture - estimate)).abs() * mask).sum() / count
        return speech + noise, {"speech_l1": speech, "noise_l1": noise}
