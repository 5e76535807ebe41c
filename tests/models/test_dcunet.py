"""Tests of the Deep Complex U-Net (custom_modules/models/dcunet.py) and the wSDR loss/metric."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from custom_modules.evaluation.metrics import si_snr
from custom_modules.evaluation.wsdr import WeightedSDRLoss, WSDRMetricMixin, wsdr_loss, wsdr_score
from custom_modules.models import dcunet as dcunet_module
from custom_modules.models.dcunet import (
    DCUNET_ARCHITECTURES,
    ComplexBatchNorm2d,
    ComplexConv2d,
    DCUNet,
    NaiveComplexBatchNorm2d,
    bounded_tanh_mask,
    from_stacked,
    to_stacked,
)

SR = 16000
TINY_LAYERS = [(4, (7, 5), (2, 2)), (8, (5, 3), (2, 2))]


def synthetic_voice(rng, num_samples):
    """A voiced, speech-like signal: harmonics of a gliding f0 under a syllabic envelope."""
    t = np.arange(num_samples) / SR
    f0 = rng.uniform(100, 220) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(1, 3) * t), 0, None)
    return (0.1 * voiced * envelope + 0.003 * rng.normal(size=num_samples)).astype(np.float32)


def complex_reference_conv(layer, x, transposed=False, output_size=None):
    """The complex convolution computed by torch on complex tensors, from the layer's weights."""
    conv = layer.conv
    c = layer.out_channels
    if transposed:  # ConvTranspose2d weights: (in, out, kH, kW)
        weight = torch.complex(conv.weight[:, :c], conv.weight[:, c:])
        out_padding = [
            output_size[d] - ((x.shape[2 + d] - 1) * conv.stride[d] - 2 * conv.padding[d]
                              + conv.kernel_size[d])
            for d in range(2)
        ]  # fmt: skip
        y = F.conv_transpose2d(
            x, weight, stride=conv.stride, padding=conv.padding, output_padding=out_padding
        )
    else:
        weight = torch.complex(conv.weight[:c], conv.weight[c:])
        y = F.conv2d(x, weight, stride=conv.stride, padding=conv.padding)
    b_r, b_i = conv.bias[:c], conv.bias[c:]
    bias = torch.complex(b_r - b_i, b_r + b_i)  # what the stacked real bias amounts to
    return y + bias.view(1, -1, 1, 1)


# ---- architecture ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DCUNET_ARCHITECTURES))
def test_paper_architectures_encoder_and_mirrored_decoder(name):
    expected = [tuple(layer) for layer in DCUNET_ARCHITECTURES[name]]
    # DCUNet-N has N convolution layers: N/2 encoders and N/2 mirrored decoders.
    assert 2 * len(expected) == int(name.split("-")[1])
    model = DCUNet(name)
    encoders = [
        (e.conv.out_channels // 2, e.conv.kernel_size, e.conv.stride) for e in model.encoders
    ]
    assert encoders == expected
    # Decoder j mirrors encoder L-1-j; channels: the mirrored encoder's input (1 for the mask).
    in_channels = [1] + [c for c, _, _ in expected[:-1]]
    depth = len(expected)
    for j, decoder in enumerate(model.decoders):
        index = depth - 1 - j
        assert isinstance(decoder.conv, torch.nn.ConvTranspose2d)
        assert decoder.conv.kernel_size == expected[index][1]
        assert decoder.conv.stride == expected[index][2]
        assert decoder.conv.out_channels == 2 * in_channels[index]
        skip_channels = 0 if j == 0 else expected[index][0]
        assert decoder.conv.in_channels == expected[index][0] + skip_channels
    assert len(model.decoder_norms) == depth - 1  # no norm on the mask layer
    assert all(isinstance(n, ComplexBatchNorm2d) for n in model.encoder_norms)


def test_parameter_counts_are_those_of_the_tables():
    # 2 real weights per complex weight plus 2 real biases per complex output channel.
    def count(layers):
        channels = [1] + [c for c, _, _ in layers]
        total = 0
        for c_in, (c_out, (kf, kt), _) in zip(channels[:-1], layers, strict=True):
            total += 2 * (c_in * c_out * kf * kt + c_out) + 5 * c_out  # conv + whitening BN
        for j in range(len(layers)):
            index = len(layers) - 1 - j
            c_enc, (kf, kt), _ = layers[index]
            c_in = c_enc if j == 0 else 2 * c_enc
            c_out = channels[index]
            total += 2 * (c_in * c_out * kf * kt + c_out) + (
                5 * c_out if j < len(layers) - 1 else 0
            )
        return total

    for name, layers in DCUNET_ARCHITECTURES.items():
        assert DCUNet(name).num_parameters() == count(layers), name


# ---- complex layers -------------------------------------------------------------


def test_stacked_layout_round_trip():
    x = torch.randn(3, 2, 5, 4, dtype=torch.complex64)
    stacked = to_stacked(x)
    assert stacked.dtype == torch.float32 and stacked.shape == (6, 2, 5, 4)
    assert torch.equal(from_stacked(stacked), x)


def test_complex_conv_is_complex_multiplication():
    torch.manual_seed(0)
    layer = ComplexConv2d(3, 5, (5, 3), (2, 1), (2, 1))
    x = torch.randn(2, 3, 17, 9, dtype=torch.complex64)
    expected = complex_reference_conv(layer, x)
    got = from_stacked(layer(to_stacked(x)))
    assert got.shape == expected.shape == (2, 5, 9, 9)
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("size", [(17, 9), (18, 10), (33, 7)])
def test_complex_transposed_conv_is_complex_and_reaches_the_asked_size(size):
    torch.manual_seed(1)
    layer = ComplexConv2d(4, 2, (7, 5), (2, 2), (3, 2), transposed=True)
    x = torch.randn(2, 4, math.ceil(size[0] / 2), math.ceil(size[1] / 2), dtype=torch.complex64)
    got = from_stacked(layer(to_stacked(x), output_size=size))
    assert got.shape == (2, 2, *size)
    assert torch.allclose(got, complex_reference_conv(layer, x, True, size), atol=1e-5)


def _channel_covariances(y):
    """(C, 2, 2) covariance of (real, imag) per channel of a stacked tensor."""
    real, imag = y.chunk(2, dim=0)
    covs = []
    for c in range(real.shape[1]):
        pair = torch.stack([real[:, c].flatten(), imag[:, c].flatten()]).double()
        covs.append(torch.cov(pair, correction=0))
    return torch.stack(covs)


def test_complex_batch_norm_whitens_correlated_input():
    torch.manual_seed(0)
    real = torch.randn(8, 3, 20, 10) * 4 + 3
    imag = 0.9 * real + 0.3 * torch.randn(8, 3, 20, 10) - 1  # strongly correlated with real
    x = torch.cat([real, imag])
    norm = ComplexBatchNorm2d(3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 0.0, 1.0]).unsqueeze(1).repeat(1, 3))  # Γ = I
        y = norm(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    covs = _channel_covariances(y)
    assert torch.allclose(covs, torch.eye(2, dtype=torch.float64).expand(3, 2, 2), atol=1e-3)
    # The naive substitute normalizes each part but leaves them correlated.
    naive_covs = _channel_covariances(NaiveComplexBatchNorm2d(3)(x).detach())
    assert torch.allclose(naive_covs[:, 0, 0], torch.ones(3, dtype=torch.float64), atol=1e-3)
    assert bool((naive_covs[:, 0, 1] > 0.9).all())


def test_complex_batch_norm_default_gamma_gives_unit_complex_variance_and_eval_uses_running_stats():
    torch.manual_seed(2)
    norm = ComplexBatchNorm2d(2, momentum=0.5)
    make = lambda: to_stacked(torch.randn(16, 2, 12, 6, dtype=torch.complex64) * 3 + 1)  # noqa: E731
    for _ in range(20):  # running statistics converge to the data's
        y = norm(make())
    covs = _channel_covariances(y.detach())
    assert torch.allclose(
        covs[:, 0, 0] + covs[:, 1, 1], torch.ones(2, dtype=torch.float64), atol=1e-3
    )
    norm.eval()
    x = make()
    y_eval = norm(x).detach()
    norm.train()
    y_train = norm(x).detach()
    assert float((y_eval - y_train).abs().mean()) < 0.05  # running ≈ batch statistics
    assert not torch.equal(y_eval, y_train)  # eval did use the running statistics


def test_bounded_tanh_mask_magnitude_phase_and_gradient():
    out = torch.tensor([0.1 + 0.2j, -3.0 + 0.5j, 40.0 - 30.0j, 0.0j], requires_grad=True)
    mask = bounded_tanh_mask(out)
    assert bool((mask.abs() < 1).all())
    assert torch.allclose(mask.abs()[:3], torch.tanh(out.detach().abs()[:3]), atol=1e-6)
    assert torch.allclose(mask.angle()[:3], out.detach().angle()[:3], atol=1e-6)
    assert float(mask[3].detach().abs()) == 0.0
    mask.abs().sum().backward()
    assert torch.isfinite(torch.view_as_real(out.grad)).all()


# ---- the model ----------------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [1, 100, 255, 257, 4001, 16037])
def test_output_length_equals_input_length(num_samples):
    torch.manual_seed(0)
    model = DCUNet(encoder_layers=TINY_LAYERS, n_fft=256, hop_length=64).eval()
    with torch.no_grad():
        out = model(torch.randn(2, num_samples))
    assert out.shape == (2, num_samples)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["DCUNet-10", "DCUNet-16"])
def test_paper_models_keep_odd_lengths(name):
    torch.manual_seed(0)
    model = DCUNet(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 5003))
    assert out.shape == (1, 5003) and torch.isfinite(out).all()


def test_stft_istft_round_trip_and_mask_scaling():
    model = DCUNet(encoder_layers=TINY_LAYERS, n_fft=256, hop_length=64)
    x = torch.randn(2, 3333, dtype=torch.float64)
    assert torch.allclose(model.istft(model.stft(x), x.shape[-1]), x, atol=1e-9)


def test_the_model_is_a_mask_on_the_input_spectrogram():
    """A zero input gives a zero output whatever the weights (the mask multiplies X)."""
    model = DCUNet(encoder_layers=TINY_LAYERS, n_fft=256, hop_length=64).eval()
    with torch.no_grad():
        assert torch.equal(model(torch.zeros(1, 2000)), torch.zeros(1, 2000))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = DCUNet(encoder_layers=TINY_LAYERS, n_fft=256, hop_length=64, norm="naive")
    x = torch.randn(2, 3000)
    wsdr_loss(model(x), x, x + 0.1 * torch.randn(2, 3000)).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="unknown architecture"):
        DCUNet("DCUNet-99")
    with pytest.raises(ValueError, match="unknown norm"):
        DCUNet(norm="layer")
    with pytest.raises(ValueError, match="bad encoder layer"):
        DCUNet(encoder_layers=[(0, (3, 3), (1, 1))])
    with pytest.raises(ValueError, match="hop_length"):
        DCUNet(n_fft=256, hop_length=512)
    with pytest.raises(ValueError, match="batch, samples"):
        DCUNet(encoder_layers=TINY_LAYERS)(torch.randn(100))


@pytest.mark.parametrize("norm", ["complex", "naive"])
def test_identity_is_learned_on_clean_input(norm):
    """Sanity: on clean input the model learns the identity (wSDR < -0.99) within 60 steps."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    clean = torch.from_numpy(np.stack([synthetic_voice(rng, 8000) for _ in range(4)]))
    model = DCUNet(encoder_layers=TINY_LAYERS, n_fft=256, hop_length=64, norm=norm)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(60):
        loss = wsdr_loss(model(clean), clean, clean)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if losses[-1] < -0.99:
            break
    assert losses[0] > -0.9, f"the untrained model is already near the identity: {losses[0]}"
    assert losses[-1] < -0.99, f"identity not learned in 60 steps: {losses[-10:]}"
    with torch.no_grad():
        estimate = model(clean)
    scores = [si_snr(e.numpy(), c.numpy()) for e, c in zip(estimate, clean, strict=True)]
    assert min(scores) > 15.0, scores


# ---- wSDR ----------------------------------------------------------------------------


def _wsdr_reference(estimate, target, mixture):
    """The paper's formula, in float64 numpy."""

    def neg_cos(a, b):
        return -np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))

    noise, noise_est = mixture - target, mixture - estimate
    alpha = np.dot(target, target) / (np.dot(target, target) + np.dot(noise, noise))
    return alpha * neg_cos(target, estimate) + (1 - alpha) * neg_cos(noise, noise_est)


def test_wsdr_loss_matches_the_formula_and_bounds():
    rng = np.random.default_rng(3)
    target = rng.normal(size=(3, 2000))
    mixture = target + rng.normal(size=(3, 2000)) * np.array([[0.3], [1.0], [3.0]])
    estimate = target + 0.5 * rng.normal(size=(3, 2000))
    got = wsdr_loss(*(torch.from_numpy(a) for a in (estimate, target, mixture)), reduction="none")
    expected = [_wsdr_reference(e, t, m) for e, t, m in zip(estimate, target, mixture, strict=True)]
    assert np.allclose(got.numpy(), expected, atol=1e-9)
    assert float(wsdr_loss(*(torch.from_numpy(a) for a in (target, target, mixture)))) == (
        pytest.approx(-1.0, abs=1e-9)
    )
    # Worst case: with a zero mixture, estimate -y makes both terms +1.
    worst = (-target, target, np.zeros_like(target))
    assert float(wsdr_loss(*(torch.from_numpy(a) for a in worst))) == pytest.approx(1.0, abs=1e-9)
    assert wsdr_score(estimate[0], target[0], mixture[0]) == pytest.approx(-expected[0])


def test_wsdr_loss_ignores_padding_beyond_lengths():
    rng = np.random.default_rng(4)
    signals = [torch.from_numpy(rng.normal(size=(2, 3000))) for _ in range(3)]
    short = [s[1:, :1800] for s in signals]
    padded = [s.clone() for s in signals]
    for p in padded:
        p[1, 1800:] = torch.from_numpy(rng.normal(size=1200))  # garbage in the padding
    lengths = torch.tensor([1.0, 0.6])
    per_signal = wsdr_loss(*padded, lengths=lengths, reduction="none")
    assert float(per_signal[1]) == pytest.approx(float(wsdr_loss(*short)), abs=1e-12)
    assert float(per_signal[0]) == pytest.approx(float(wsdr_loss(*(s[:1] for s in signals))))
    assert float(WeightedSDRLoss()(*padded, lengths)) == pytest.approx(float(per_signal.mean()))


def test_wsdr_of_the_unprocessed_input_and_of_silence_is_finite():
    rng = np.random.default_rng(5)
    target = rng.normal(size=4000)
    mixture = target + rng.normal(size=4000)
    alpha = np.dot(target, target) / (
        np.dot(target, target) + np.dot(mixture - target, mixture - target)
    )
    cosine = np.dot(target, mixture) / (np.linalg.norm(target) * np.linalg.norm(mixture))
    assert wsdr_score(mixture, target, mixture) == pytest.approx(alpha * cosine, rel=1e-6)
    zero = wsdr_score(np.zeros(4000), target, mixture)
    assert math.isfinite(zero)
    with pytest.raises(ValueError, match="equal length"):
        wsdr_score(target[:10], target, mixture)
    with pytest.raises(ValueError, match="batch, samples"):
        wsdr_loss(torch.zeros(5), torch.zeros(5), torch.zeros(5))


def test_wsdr_local_metric_of_the_shared_brain():
    rng = np.random.default_rng(6)
    target = [rng.normal(size=1000), rng.normal(size=1200)]
    mixtures = [t + rng.normal(size=t.size) for t in target]
    estimates = [t + 0.1 * rng.normal(size=t.size) for t in target]
    scores = WSDRMetricMixin().local_metrics(mixtures, target, estimates)
    assert WSDRMetricMixin.LOCAL_METRICS == ("wsdr",)
    for score, mix, tgt, est in zip(scores, mixtures, target, estimates, strict=True):
        assert score["wsdr"] == (wsdr_score(est, tgt, mix), wsdr_score(mix, tgt, mix))
        assert score["wsdr"][0] > score["wsdr"][1]  # the cleaner estimate scores higher


def test_the_docstring_table_is_the_architectures():
    """The module docstring's table (what a reader checks against the paper) is the code's."""
    doc = dcunet_module.__doc__
    for name, layers in DCUNET_ARCHITECTURES.items():
        row = doc[doc.index(name) + len(name) :].split("DCUNet-")[0].split("====")[0]
        cells = re.findall(r"\((\d+), (\d+)×(\d+), (\d+)×(\d+)\)", row)
        assert [
            (int(c), (int(kf), int(kt)), (int(sf), int(st))) for c, kf, kt, sf, st in cells
        ] == [tuple(layer) for layer in layers], name
