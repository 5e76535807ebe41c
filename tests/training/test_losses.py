"""Tests of the spectral loss against an independent numpy STFT."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from custom_modules.training.losses import (
    EnergyConservingLoss,
    MultiResolutionSpectralLoss,
    NegativeSISDR,
    SpectralLoss,
    WeightedLoss,
)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def numpy_stft(x, n_fft, hop):
    """Centred STFT with zero padding and a periodic Hann window (window = n_fft)."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    padded = np.pad(x, (n_fft // 2, n_fft // 2))
    num_frames = 1 + len(x) // hop
    frames = np.stack([padded[k * hop : k * hop + n_fft] * window for k in range(num_frames)])
    return np.fft.rfft(frames, axis=1)  # (frames, freqs)


def numpy_losses(estimate, target, n_fft, hop):
    spec_est, spec_ref = numpy_stft(estimate, n_fft, hop), numpy_stft(target, n_fft, hop)
    diff = spec_est - spec_ref
    complex_mse = np.mean(np.concatenate([diff.real, diff.imag]) ** 2)
    magnitude_mse = np.mean((np.abs(spec_est) - np.abs(spec_ref)) ** 2)
    return complex_mse, magnitude_mse, spec_ref


@pytest.mark.parametrize("num_samples", [37, 1000, 2048])
def test_terms_match_a_numpy_stft(num_samples):
    n_fft, hop = 128, 32
    loss_fn = SpectralLoss(n_fft=n_fft, mult_complex=0.25)
    estimate, target = randn(1, num_samples), randn(1, num_samples, seed=1)
    total, complex_term, magnitude_term = loss_fn(estimate, target)
    expected_complex, expected_magnitude, _ = numpy_losses(
        estimate[0].numpy(), target[0].numpy(), n_fft, hop
    )
    assert complex_term.item() == pytest.approx(expected_complex, rel=1e-9)
    assert magnitude_term.item() == pytest.approx(expected_magnitude, rel=1e-9)
    assert total.item() == pytest.approx(
        0.25 * expected_complex + 0.75 * expected_magnitude, rel=1e-9
    )


def test_sign_flip_is_free_for_magnitude_and_costly_for_complex():
    loss_fn = SpectralLoss(n_fft=64)
    target = randn(2, 500)
    total, complex_term, magnitude_term = loss_fn(-target, target)
    assert magnitude_term.item() == pytest.approx(0.0, abs=1e-20)
    spec = loss_fn.spectrogram(target)
    # ΔS = -2S: mean over re/im of (2 Re S)², (2 Im S)² = 2 mean |S|².
    assert complex_term.item() == pytest.approx(2 * spec.abs().pow(2).mean().item(), rel=1e-9)
    assert total.item() == pytest.approx(0.3 * complex_term.item(), rel=1e-12)


def test_identical_signals_give_zero_and_weights_select_terms():
    target = randn(2, 700)
    assert SpectralLoss(n_fft=64)(target, target)[0].item() == 0.0
    estimate = target + 0.1 * randn(2, 700, seed=5)
    _, complex_term, magnitude_term = SpectralLoss(n_fft=64)(estimate, target)
    assert SpectralLoss(n_fft=64, mult_complex=1.0)(estimate, target)[0] == complex_term
    assert SpectralLoss(n_fft=64, mult_complex=0.0)(estimate, target)[0] == magnitude_term


def test_lengths_give_the_frame_weighted_mean_of_unpadded_losses():
    n_fft, hop = 64, 16
    loss_fn = SpectralLoss(n_fft=n_fft)
    long_est, long_ref = randn(800, seed=1), randn(800, seed=2)
    short_est, short_ref = randn(450, seed=3), randn(450, seed=4)
    estimate = torch.stack([long_est, F.pad(short_est, (0, 350))])
    target = torch.stack([long_ref, F.pad(short_ref, (0, 350))])
    lengths = torch.tensor([1.0, 450 / 800])
    _, complex_term, magnitude_term = loss_fn(estimate, target, lengths=lengths)

    frames = np.array([1 + 800 // hop, 1 + 450 // hop])
    singles = [
        loss_fn(long_est[None], long_ref[None]),
        loss_fn(short_est[None], short_ref[None]),
    ]
    for index, value in ((1, complex_term), (2, magnitude_term)):
        per_utterance = np.array([single[index].item() for single in singles])
        expected = np.sum(per_utterance * frames) / frames.sum()
        assert value.item() == pytest.approx(expected, rel=1e-9)

    # Without lengths the zero padding counts (and lowers the loss here).
    assert loss_fn(estimate, target)[1].item() < complex_term.item()


def test_lengths_ignore_content_past_the_valid_frames():
    n_fft = 64
    loss_fn = SpectralLoss(n_fft=n_fft)
    estimate, target = randn(2, 1000), randn(2, 1000, seed=1)
    lengths = torch.tensor([1.0, 0.5])
    reference = loss_fn(estimate, target, lengths=lengths)
    garbage_est, garbage_ref = estimate.clone(), target.clone()
    garbage_est[1, 500 + n_fft // 2 :] = 100.0  # beyond the last valid frame's span
    garbage_ref[1, 500 + n_fft // 2 :] = -3.0
    for kept, changed in zip(
        reference, loss_fn(garbage_est, garbage_ref, lengths=lengths), strict=True
    ):
        assert changed.item() == pytest.approx(kept.item(), rel=1e-12)


def test_gradients_are_finite_on_silence_and_custom_criterion_works():
    estimate = torch.zeros(2, 300, requires_grad=True)
    total, _, _ = SpectralLoss(n_fft=64)(estimate, torch.randn(2, 300))
    total.backward()
    assert torch.isfinite(estimate.grad).all() and estimate.grad.abs().sum() > 0

    l1 = SpectralLoss(n_fft=64, criterion=F.l1_loss)
    est, ref = randn(1, 300), randn(1, 300, seed=2)
    expected_magnitude = np.mean(
        np.abs(
            np.abs(numpy_stft(est[0].numpy(), 64, 16)) - np.abs(numpy_stft(ref[0].numpy(), 64, 16))
        )
    )
    assert l1(est, ref)[2].item() == pytest.approx(expected_magnitude, rel=1e-9)
    with_lengths = l1(est, ref, lengths=torch.tensor([1.0]))
    assert with_lengths[2].item() == pytest.approx(expected_magnitude, rel=1e-9)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="mult_complex"):
        SpectralLoss(mult_complex=1.5)
    with pytest.raises(ValueError, match="hop_length"):
        SpectralLoss(n_fft=64, win_length=128)
    loss_fn = SpectralLoss(n_fft=64)
    with pytest.raises(ValueError, match="batch, samples"):
        loss_fn(torch.zeros(2, 100), torch.zeros(2, 101))
    with pytest.raises(ValueError, match="batch, samples"):
        loss_fn(torch.zeros(100), torch.zeros(100))
    with pytest.raises(ValueError, match="lengths"):
        loss_fn(torch.zeros(2, 100), torch.zeros(2, 100), lengths=torch.ones(3))


def test_normalize_level_makes_the_loss_level_invariant():
    gen = torch.Generator().manual_seed(3)
    target = torch.randn(3, 4000, generator=gen)
    estimate = target + 0.3 * torch.randn(3, 4000, generator=gen)
    gains = torch.tensor([[1.0], [1e-3], [30.0]])  # per-utterance levels 60 dB apart
    lengths = torch.tensor([1.0, 0.75, 0.5])
    loss = SpectralLoss(n_fft=256, normalize_level=True)
    for a, b in zip(
        loss(estimate, target, lengths),
        loss(estimate * gains, target * gains, lengths),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=0)
    plain = SpectralLoss(n_fft=256)
    assert not torch.isclose(
        plain(estimate, target)[0], plain(estimate * gains, target * gains)[0], rtol=0.1
    )


def test_compressed_loss_matches_a_hand_computation():
    gen = torch.Generator().manual_seed(5)
    target = torch.randn(2, 3000, generator=gen)
    estimate = target + 0.5 * torch.randn(2, 3000, generator=gen)
    loss = SpectralLoss(n_fft=256, compress_exponent=0.5, mult_complex=0.4)
    total, complex_term, magnitude_term = loss(estimate, target)
    s_est, s_ref = loss.spectrogram(estimate), loss.spectrogram(target)

    def squash(spec):
        magnitude = spec.abs().clamp(min=1e-8)
        return spec / magnitude * magnitude.sqrt()

    c_est, c_ref = squash(s_est), squash(s_ref)
    expected_complex = F.mse_loss(torch.view_as_real(c_est), torch.view_as_real(c_ref))
    expected_magnitude = F.mse_loss(c_est.abs(), c_ref.abs())
    torch.testing.assert_close(complex_term, expected_complex)
    torch.testing.assert_close(magnitude_term, expected_magnitude)
    torch.testing.assert_close(total, 0.4 * expected_complex + 0.6 * expected_magnitude)
    assert torch.isfinite(
        torch.autograd.functional.jacobian(lambda e: loss(e, target)[0], torch.zeros(2, 3000))
    ).all()  # finite at |S| = 0
    with pytest.raises(ValueError, match="compress_exponent"):
        SpectralLoss(compress_exponent=0.0)


def _numpy_si_sdr(estimate, target):
    estimate = estimate - estimate.mean()
    target = target - target.mean()
    projection = np.dot(estimate, target) / np.dot(target, target) * target
    return 10 * np.log10(np.sum(projection**2) / np.sum((estimate - projection) ** 2))


def test_negative_si_sdr_matches_numpy_and_respects_lengths():
    rng = np.random.default_rng(4)
    target = rng.normal(size=(2, 3000))
    estimate = target + 0.3 * rng.normal(size=(2, 3000))
    loss, _ = NegativeSISDR()(torch.from_numpy(estimate), torch.from_numpy(target))
    expected = -np.mean([_numpy_si_sdr(estimate[i], target[i]) for i in range(2)])
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    # Samples past each length do not count: garbage there changes nothing.
    padded_est, padded_tgt = estimate.copy(), target.copy()
    padded_est[1, 2000:] = 100.0
    padded_tgt[1, 2000:] = 0.0
    lengths = torch.tensor([1.0, 2000 / 3000])
    loss, _ = NegativeSISDR()(torch.from_numpy(padded_est), torch.from_numpy(padded_tgt), lengths)
    expected = -np.mean(
        [_numpy_si_sdr(estimate[0], target[0]), _numpy_si_sdr(estimate[1, :2000], target[1, :2000])]
    )
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_weighted_loss_sums_terms_and_skips_zero_weights():
    estimate, target = torch.randn(2, 4000), torch.randn(2, 4000)
    spectral = SpectralLoss(n_fft=256)
    total, parts = WeightedLoss(
        {"spectral": spectral, "si_sdr": NegativeSISDR()}, {"spectral": 2.0, "si_sdr": 0.0}
    )(estimate, target)
    assert list(parts) == ["spectral"]
    assert torch.isclose(total, 2.0 * spectral(estimate, target)[0])
    with pytest.raises(ValueError, match="same losses"):
        WeightedLoss({"a": spectral}, {"b": 1.0})


# ---- energy-conserving loss (Denoising WaveNet) ---------------------------------


def numpy_energy_conserving(estimate, target, mixture, valid):
    """Direct computation: mean |s - ŝ| + mean |(m - s) - (m - ŝ)| over the valid samples."""
    rows = list(zip(estimate, target, mixture, valid, strict=True))
    speech = np.concatenate([np.abs(t[:n] - e[:n]) for e, t, _, n in rows])
    noise = np.concatenate([np.abs((m[:n] - t[:n]) - (m[:n] - e[:n])) for e, t, m, n in rows])
    return speech.mean() + noise.mean(), speech.mean(), noise.mean()


@pytest.mark.parametrize("lengths", [None, [1.0, 0.5, 0.25]])
def test_energy_conserving_loss_matches_numpy(lengths):
    estimate, target, noise = randn(3, 400), randn(3, 400, seed=1), randn(3, 400, seed=2)
    mixture = target + 0.5 * noise
    rel = None if lengths is None else torch.tensor(lengths, dtype=torch.float64)
    total, terms = EnergyConservingLoss()(estimate, target, mixture, rel)
    valid = [400] * 3 if lengths is None else [round(v * 400) for v in lengths]
    expected = numpy_energy_conserving(estimate.numpy(), target.numpy(), mixture.numpy(), valid)
    assert total.item() == pytest.approx(expected[0], rel=1e-12)
    assert terms["speech_l1"].item() == pytest.approx(expected[1], rel=1e-12)
    assert terms["noise_l1"].item() == pytest.approx(expected[2], rel=1e-12)


def test_energy_conserving_loss_ignores_padding_and_is_twice_l1():
    estimate, target, mixture = randn(2, 300), randn(2, 300, seed=1), randn(2, 300, seed=2)
    lengths = torch.tensor([1.0, 0.5], dtype=torch.float64)
    total, _ = EnergyConservingLoss()(estimate, target, mixture, lengths)
    garbage = estimate.clone()
    garbage[1, 150:] = 1e6  # beyond the valid samples
    assert EnergyConservingLoss()(garbage, target, mixture, lengths)[0].item() == total.item()
    # With the noise taken as mixture - target, b - b̂ = ŝ - s: the loss is 2 x L1 (docstring).
    l1 = torch.cat([(estimate - target)[0], (estimate - target)[1, :150]]).abs().mean()
    assert total.item() == pytest.approx(2 * l1.item(), rel=1e-12)
    with pytest.raises(ValueError, match="must all be"):
        EnergyConservingLoss()(estimate, target, mixture[:, :10])


@pytest.mark.parametrize("use_lengths", [False, True])
def test_over_suppression_weight_penalises_estimates_below_the_target(use_lengths):
    gen = torch.Generator().manual_seed(7)
    target = torch.randn(2, 4000, generator=gen)
    lengths = torch.tensor([1.0, 0.6]) if use_lengths else None
    symmetric = SpectralLoss(n_fft=256, mult_complex=0.0)
    weighted = SpectralLoss(n_fft=256, mult_complex=0.0, over_suppression_weight=3.0)
    # Scaling the target by 0.5 leaves every magnitude below it, by 1.5 above it, by
    # the same amount: only the estimate below the target pays three times more.
    under, over = 0.5 * target, 1.5 * target
    for loss in (symmetric, weighted):
        assert torch.isclose(
            loss(under, target, lengths)[0], symmetric(over, target, lengths)[0]
        ) == (loss is symmetric)
    torch.testing.assert_close(
        weighted(under, target, lengths)[0], 3.0 * symmetric(under, target, lengths)[0]
    )
    torch.testing.assert_close(
        weighted(over, target, lengths)[0], symmetric(over, target, lengths)[0]
    )
    # Weight 1 is the plain loss; a non-positive weight is refused.
    torch.testing.assert_close(
        SpectralLoss(n_fft=256, over_suppression_weight=1.0)(under, target)[0],
        SpectralLoss(n_fft=256)(under, target)[0],
    )
    with pytest.raises(ValueError, match="over_suppression_weight"):
        SpectralLoss(over_suppression_weight=0.0)


def test_multi_resolution_loss_is_the_scaled_mean_of_each_size_against_numpy():
    estimate, target = randn(1, 3000, seed=5)[0].numpy(), randn(1, 3000, seed=6)[0].numpy()
    sizes = [64, 128, 256]
    loss_fn = MultiResolutionSpectralLoss(sizes, mult_complex=0.25)
    total, complex_term, magnitude_term = loss_fn(
        torch.from_numpy(estimate)[None], torch.from_numpy(target)[None]
    )
    expected = np.zeros(2)
    for n_fft in sizes:
        expected_complex, expected_magnitude, _ = numpy_losses(estimate, target, n_fft, n_fft // 4)
        expected += (256 / n_fft) * np.array([expected_complex, expected_magnitude]) / len(sizes)
    assert complex_term.item() == pytest.approx(expected[0], rel=1e-9)
    assert magnitude_term.item() == pytest.approx(expected[1], rel=1e-9)
    assert total.item() == pytest.approx(0.25 * expected[0] + 0.75 * expected[1], rel=1e-9)


def test_multi_resolution_loss_passes_options_and_lengths_to_every_size():
    estimate, target = randn(2, 2000, seed=7), randn(2, 2000, seed=8)
    lengths = torch.tensor([1.0, 0.6], dtype=torch.float64)
    options = {"normalize_level": True, "over_suppression_weight": 3.0}
    loss_fn = MultiResolutionSpectralLoss([128, 512], **options)
    parts = [SpectralLoss(n_fft=n, **options)(estimate, target, lengths)[0] for n in (128, 512)]
    expected = (4.0 * parts[0] + parts[1]) / 2
    assert torch.isclose(loss_fn(estimate, target, lengths)[0], expected)
    single = MultiResolutionSpectralLoss([512], **options)(estimate, target, lengths)
    assert torch.equal(single[0], parts[1])
    estimate.requires_grad_(True)
    loss_fn(estimate, target, lengths)[0].backward()
    assert torch.isfinite(estimate.grad).all() and estimate.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "n_ffts, options, message",
    [([], {}, "non-empty"), ([1], {}, ">= 2"), ([256], {"n_fft": 256}, "n_ffts")],
)
def test_multi_resolution_loss_rejects_bad_sizes(n_ffts, options, message):
    with pytest.raises(ValueError, match=message):
        MultiResolutionSpectralLoss(n_ffts, **options)
