"""Tests of the causal UNet-TCM complex spectral mapping model (tiny sizes, CPU)."""

import pytest
import torch
from torch import nn

from custom_modules.evaluation.complexity import (
    count_macs,
    count_parameters,
    macs_per_second,
    main,
)
from custom_modules.models.unet_tcm import (
    CausalConv1d,
    ComplexSpectralMapping,
    DoubleModifiedGatedTCM,
    FrameLayerNorm,
    ResizeConvTranspose2d,
    UNetEngine,
    encoder_freq_sizes,
)

NORMS = ("frame_layer_norm", "batch_norm")


def tiny_engine_kwargs(n_fft=160, num_layers=2, norm="frame_layer_norm", **options):
    return dict(
        num_freqs=n_fft // 2 + 1,
        num_layers=num_layers,
        channels=4,
        bottleneck_dim=8,
        tcm_hidden=4,
        tcm_kernel=3,
        tcm_dilations=(1, 2),
        tcm_repeats=1,
        norm=norm,
        **options,
    )


def tiny_model(
    n_fft=160,
    num_layers=2,
    norm="frame_layer_norm",
    delay_output=False,
    seed=None,
    upsampling="transposed",
    **wrapper,
):
    """Tiny waveform model; ``seed`` makes its initialisation reproducible."""
    kwargs = tiny_engine_kwargs(n_fft, num_layers, norm, decoder_upsampling=upsampling)
    if seed is None:
        engine = UNetEngine(**kwargs)
    else:
        with torch.random.fork_rng():  # modules initialise from the global RNG; restore it
            torch.manual_seed(seed)
            engine = UNetEngine(**kwargs)
    return ComplexSpectralMapping(engine, n_fft=n_fft, delay_output=delay_output, **wrapper)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# Causality tests run in float64 and call outputs "unchanged" within ROUNDING: the
# optimised convolution kernels may let later inputs move earlier outputs by float
# rounding (about 1e-17 in float64), while true dependences are above 1e-12 here.
ROUNDING = 1e-15


def changed(a, b):
    """Boolean mask of the elements of ``a`` and ``b`` that differ beyond rounding."""
    return (a - b).abs() > ROUNDING


def test_causal_conv1d_matches_explicit_left_padded_sum():
    conv = CausalConv1d(2, 3, kernel_size=3, dilation=2)
    assert conv.left_padding == 4
    x = randn(1, 2, 9)
    with torch.no_grad():
        y = conv(x)
    weight, bias = conv.conv.weight, conv.conv.bias
    for t in range(9):
        expected = bias.clone()
        for tap in range(3):
            source = t - (2 - tap) * 2  # the last tap reads the current sample
            if source >= 0:
                expected += weight[:, :, tap] @ x[0, :, source]
        torch.testing.assert_close(y[0, :, t], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", NORMS)
def test_tcm_block_is_causal_with_receptive_field_of_its_dilation(norm):
    kernel, dilation, length, t0 = 5, 3, 40, 20
    tcm = DoubleModifiedGatedTCM(
        in_channels=6, hidden_channels=4, kernel_size=kernel, dilation=dilation, norm=norm
    )
    tcm = tcm.eval().double()
    x = randn(2, 6, length).double()
    x_perturbed = x.clone()
    x_perturbed[:, :, t0] += 5.0
    with torch.no_grad():
        moved = changed(tcm(x), tcm(x_perturbed)).any(dim=0).any(dim=0).nonzero().flatten()
    # One dilated layer: the taps reach t0, t0 + d, ..., t0 + (kernel - 1) * d.
    assert moved.tolist() == [t0 + tap * dilation for tap in range(kernel)]


def test_frame_layer_norm_normalises_each_frame_independently():
    norm = FrameLayerNorm(num_channels=3)
    x = randn(2, 3, 5, 7) * 4 + 2
    y = norm(x)
    torch.testing.assert_close(y.mean(dim=(1, 3)), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        y.var(dim=(1, 3), unbiased=False), torch.ones(2, 5), atol=1e-3, rtol=0
    )
    x2 = x.clone()
    x2[:, :, 3:] *= 10  # later frames must not affect earlier ones
    assert torch.equal(norm(x2)[:, :, :3], y[:, :, :3])


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (2, 3, 5)])
def test_frame_layer_norm_equals_the_per_frame_formula_with_its_affine(shape):
    norm = FrameLayerNorm(num_channels=3).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
        norm.bias.copy_(torch.tensor([0.1, -0.3, 1.0]))
    x = (randn(*shape) * 3 + 1).double().requires_grad_()
    dims = (1,) + tuple(range(3, x.dim()))
    mean, var = x.mean(dim=dims, keepdim=True), x.var(dim=dims, unbiased=False, keepdim=True)
    affine = (1, 3) + (1,) * (x.dim() - 2)
    expected = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.view(affine)
    expected = expected + norm.bias.view(affine)
    torch.testing.assert_close(norm(x), expected)
    # Gradients too (the fused kernel's backward), against the formula's.
    grads = torch.autograd.grad(norm(x).pow(3).sum(), [x, norm.weight])
    expected_grads = torch.autograd.grad(expected.pow(3).sum(), [x, norm.weight])
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="expected"):
        norm(randn(2, 3).double())


def test_encoder_freq_sizes_and_too_few_bins():
    assert encoder_freq_sizes(161, 5, 4, 2) == [161, 79, 38, 18, 8, 3]
    assert encoder_freq_sizes(81, 3, 4, 2) == [81, 39, 18, 8]
    with pytest.raises(ValueError, match="too few"):
        encoder_freq_sizes(81, 6, 4, 2)


@pytest.mark.parametrize("n_fft,num_layers", [(160, 3), (320, 5), (512, 4), (64, 2)])
@pytest.mark.parametrize("norm", NORMS)
def test_engine_output_shape_equals_input_shape(n_fft, num_layers, norm):
    engine = UNetEngine(**tiny_engine_kwargs(n_fft, num_layers, norm)).eval()
    spec = randn(2, 2, 6, n_fft // 2 + 1)
    with torch.no_grad():
        assert engine(spec).shape == spec.shape


@pytest.mark.parametrize("n_fft", [160, 320])
@pytest.mark.parametrize("length", [1, 7, 79, 159, 161, 321, 1001])
def test_output_length_equals_input_length(n_fft, length):
    model = tiny_model(n_fft=n_fft).eval()
    with torch.no_grad():
        assert model(randn(2, length)).shape == (2, length)


@pytest.mark.parametrize(
    "n_fft,hop,win", [(160, 80, 160), (320, 160, 320), (256, 64, 256), (320, 80, 240)]
)
@pytest.mark.parametrize("length", [1, 97, 1000])
def test_identity_engine_reconstructs_the_waveform(n_fft, hop, win, length):
    model = ComplexSpectralMapping(nn.Identity(), n_fft=n_fft, win_length=win, hop_length=hop)
    x = randn(2, length)
    torch.testing.assert_close(model(x), x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel,stride", [(4, 2), (5, 3), (3, 3)])
def test_resize_upsampling_is_nearest_neighbour_then_convolution(kernel, stride):
    layer = ResizeConvTranspose2d(3, 2, (1, kernel), (1, stride), output_padding=(0, 1)).double()
    reference = nn.ConvTranspose2d(3, 2, (1, kernel), (1, stride), output_padding=(0, 1))
    x = randn(2, 3, 4, 9).double()
    with torch.no_grad():
        y = layer(x)
        assert y.shape == reference(x.float()).shape  # the geometry of the transposed layer
        # Explicitly: repeat each bin ``stride`` times, pad ``taps - 1`` zeros before, convolve.
        taps = kernel - stride + 1
        upsampled = x.repeat_interleave(stride, dim=3)
        padded = nn.functional.pad(upsampled, (taps - 1, kernel))
        weight = layer.conv_weight.flip(-1).transpose(0, 1)  # correlation kernel (out, in, 1, taps)
        explicit = nn.functional.conv2d(padded, weight, layer.bias)[..., : y.shape[-1]]
    torch.testing.assert_close(y, explicit)


@pytest.mark.parametrize("upsampling", ["transposed", "resize"])
@pytest.mark.parametrize("compress_exponent", [1.0, 0.3])
@pytest.mark.parametrize("estimate", ["mapping", "mask"])
def test_options_keep_shapes_gradients_and_state_dict(upsampling, compress_exponent, estimate):
    options = dict(compress_exponent=compress_exponent, level_normalization=True, estimate=estimate)
    model = tiny_model(upsampling=upsampling, **options).train()
    x = randn(3, 800)
    x[1] = 0.0  # digital silence: the compression must stay finite
    estimate = model(x)
    assert estimate.shape == x.shape and torch.isfinite(estimate).all()
    (estimate - randn(3, 800, seed=1)).pow(2).mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    fresh = tiny_model(upsampling=upsampling, **options)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model.eval()(x), fresh.eval()(x))


def test_a_unit_mask_lets_the_input_through():
    class UnitMask(nn.Module):
        def forward(self, spec):
            return torch.cat([torch.ones_like(spec[:, :1]), torch.zeros_like(spec[:, 1:])], dim=1)

    model = ComplexSpectralMapping(
        UnitMask(), n_fft=160, level_normalization=True, compress_exponent=0.5, estimate="mask"
    ).double()
    x = randn(2, 1600).double()
    torch.testing.assert_close(model(x), x, atol=1e-7, rtol=1e-6)
    with pytest.raises(ValueError, match="estimate"):
        ComplexSpectralMapping(nn.Identity(), n_fft=160, estimate="ratio")


def test_compression_then_expansion_is_the_identity():
    model = ComplexSpectralMapping(
        nn.Identity(), n_fft=160, level_normalization=True, compress_exponent=0.3
    )
    x = randn(2, 1600).double()
    model = model.double()
    torch.testing.assert_close(model(x), x, atol=1e-7, rtol=1e-6)  # expand(compress(X)) == X
    with pytest.raises(ValueError, match="compress_exponent"):
        ComplexSpectralMapping(nn.Identity(), n_fft=160, compress_exponent=0.0)


@pytest.mark.parametrize("norm", NORMS)
def test_backward_gives_finite_nonzero_gradients_for_all_parameters(norm):
    model = tiny_model(norm=norm).train()
    estimate = model(randn(3, 800))
    loss = (estimate - randn(3, 800, seed=1)).pow(2).mean()
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("norm", NORMS)
def test_state_dict_round_trip_gives_identical_outputs(norm):
    model = tiny_model(norm=norm)
    with torch.no_grad():  # make batch-norm running statistics non-trivial
        model.train()(randn(2, 640))
    model.eval()
    fresh = tiny_model(norm=norm).eval()
    x = randn(2, 900, seed=3)
    with torch.no_grad():
        assert not torch.allclose(model(x), fresh(x))
        fresh.load_state_dict(model.state_dict())
        assert torch.equal(model(x), fresh(x))


@pytest.mark.parametrize(
    "norm,train", [("frame_layer_norm", True), ("frame_layer_norm", False), ("batch_norm", False)]
)
def test_engine_is_causal_over_frames(norm, train):
    engine = UNetEngine(**tiny_engine_kwargs(160, 3, norm)).train(train).double()
    spec = randn(1, 2, 12, 81).double()
    k = 7
    perturbed = spec.clone()
    perturbed[:, :, k:] += randn(1, 2, 12 - k, 81, seed=1).double() * 3
    with torch.no_grad():
        out, out_perturbed = engine(spec), engine(perturbed)
    assert not changed(out[:, :, :k], out_perturbed[:, :, :k]).any()
    # Every bin of frame k moves, except the Nyquist bin the encoder never reads (always 0).
    assert changed(out[:, :, k, :-1], out_perturbed[:, :, k, :-1]).all()
    assert not out[:, :, :, -1].any()


def perturb_after(x, starts):
    """Row 0: ``x`` (1, n) itself; row i > 0: ``x`` with every sample >= starts[i - 1] changed.

    The unperturbed reference is part of the same batch (a different batch size
    may change float rounding).
    """
    noise = randn(1, x.shape[1], seed=7) * 3
    batch = x.repeat(len(starts) + 1, 1)
    for row, start in enumerate(starts, start=1):
        batch[row, start:] += noise[0, start:]
    return batch


@pytest.mark.parametrize("n_fft", [160, 320])
@pytest.mark.parametrize("norm", NORMS)
def test_waveform_lookahead_is_exactly_win_length_minus_two(n_fft, norm):
    # float64: at the extreme lookahead the dependence is weighted by
    # w[1] * w[win - 1] (about 1e-7 of the signal), below float32 resolution.
    model = tiny_model(n_fft=n_fft, norm=norm, seed=0).eval().double()
    x = randn(1, 8 * n_fft).double()
    starts = list(range(4 * n_fft, 4 * n_fft + model.hop_length))  # every phase within a hop
    with torch.no_grad():
        outputs = model(perturb_after(x, starts))
    reference, lookahead = outputs[0], model.lookahead
    assert lookahead == n_fft - 2
    first_changes = []
    for row, start in enumerate(starts, start=1):
        moved = changed(outputs[row], reference).nonzero().flatten()
        first_changes.append(int(moved[0]) - start)
    # Nothing before start - lookahead moves, and the bound is attained.
    assert min(first_changes) == -lookahead


@pytest.mark.parametrize("n_fft", [160, 320])
def test_frame_k_finalises_output_up_to_k_hops(n_fft):
    # The streaming contract of the module docstring (win_length == n_fft): frame k
    # needs input up to k*hop + hop - 1 and completes output up to k*hop.
    model = tiny_model(n_fft=n_fft, seed=0).eval().double()
    hop, k = model.hop_length, 6
    x = randn(1, 12 * hop).double()
    with torch.no_grad():
        outputs = model(perturb_after(x, [k * hop + hop]))
    moved = changed(outputs[1], outputs[0]).nonzero().flatten()
    assert int(moved[0]) == k * hop + 1


@pytest.mark.parametrize("norm", NORMS)
def test_delayed_output_is_strictly_causal(norm):
    model = tiny_model(n_fft=160, norm=norm, seed=0).eval().double()
    delayed = tiny_model(n_fft=160, norm=norm, delay_output=True).eval().double()
    delayed.load_state_dict(model.state_dict())
    x = randn(1, 1200).double()
    starts = list(range(600, 760))
    with torch.no_grad():
        aligned = model(x)
        outputs = delayed(perturb_after(x, starts))
    reference, lookahead = outputs[0], model.lookahead
    torch.testing.assert_close(reference[lookahead:], aligned[0, :-lookahead], atol=1e-12, rtol=0)
    assert torch.equal(reference[:lookahead], torch.zeros(lookahead, dtype=torch.float64))
    delays = []
    for row, start in enumerate(starts, start=1):
        delays.append(int(changed(outputs[row], reference).nonzero()[0]) - start)
    # Nothing before start moves; the change shows up within one hop (the
    # lookahead varies with the phase) and right at start for some phase.
    assert min(delays) == 0 and max(delays) < model.hop_length


def test_prefix_output_matches_full_output_up_to_lookahead():
    # What a streaming engine relies on: a prefix gives the same samples, bar the tail.
    model = tiny_model(n_fft=160).eval()
    x = randn(2, 2000)
    with torch.no_grad():
        full = model(x)
        for length in (333, 1000, 1517):
            prefix = model(x[:, :length])
            stable = length - model.lookahead
            torch.testing.assert_close(prefix[:, :stable], full[:, :stable], atol=1e-6, rtol=1e-5)


def test_full_default_size_parameter_count_and_shape():
    model = ComplexSpectralMapping(UNetEngine()).eval()
    num_params = sum(p.numel() for p in model.parameters())
    assert 1_500_000 < num_params < 2_500_000
    assert model.engine.freq_sizes == [161, 79, 38, 18, 8, 3]
    assert len(model.engine.tcms) == 12
    with torch.no_grad():
        assert model(randn(1, 4000)).shape == (1, 4000)


def test_bad_configuration_and_input_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown norm"):
        UNetEngine(**tiny_engine_kwargs(norm="instance_norm"))
    with pytest.raises(ValueError, match="frequency bins"):
        ComplexSpectralMapping(UNetEngine(**tiny_engine_kwargs(160)), n_fft=320)
    with pytest.raises(ValueError, match="hop_length"):
        ComplexSpectralMapping(nn.Identity(), n_fft=160, hop_length=200)
    model = tiny_model()
    with pytest.raises(ValueError, match="expected input"):
        model.engine(randn(1, 2, 5, 80))
    with pytest.raises(ValueError, match="batch, samples"):
        model(randn(100))
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(1, 0))


# --- complexity counter (custom_modules/evaluation/complexity.py) ---


def test_count_macs_of_single_layers_by_hand():
    assert count_macs(
        nn.Conv2d(3, 8, kernel_size=(1, 4), stride=(1, 2)), torch.zeros(1, 3, 5, 11)
    ) == (
        8 * 5 * 4 * 3 * 4  # out channels x frames x out freqs x in channels x kernel
    )
    assert count_macs(
        nn.ConvTranspose2d(4, 2, kernel_size=(1, 4), stride=(1, 2)), torch.zeros(1, 4, 5, 6)
    ) == (
        4 * 5 * 6 * 2 * 4  # input elements x out channels x kernel
    )
    assert (
        count_macs(nn.Conv1d(4, 6, kernel_size=3, groups=2), torch.zeros(2, 4, 10))
        == 2 * 6 * 8 * 2 * 3
    )
    assert count_macs(nn.Linear(7, 5), torch.zeros(3, 4, 7)) == 3 * 4 * 5 * 7


def test_count_macs_of_tiny_unet_matches_hand_count():
    engine = UNetEngine(**tiny_engine_kwargs(n_fft=160, num_layers=2))
    # Per frame, freq sizes 81 -> 39 -> 18, 4 channels, bottleneck 8, TCM hidden 4, kernel 3.
    encoder = 4 * 39 * 2 * 4 + 4 * 18 * 4 * 4
    projections = 2 * (4 * 18) * 8
    tcm = 8 * 4 + 2 * 2 * (4 * 4 * 3) + 8 * 8  # in 1x1, two gated branches, out 1x1
    decoder = 4 * 18 * 4 + 4 * 39 * 4 + 4 * 18 * 4 * 4 + 4 * 39 * 1 * 4  # skips + deconvs
    per_frame = encoder + projections + 2 * tcm + 2 * decoder
    assert count_macs(engine, torch.zeros(1, 2, 9, 81)) == 9 * per_frame
    by_module = count_macs(engine, torch.zeros(1, 2, 9, 81), by_module=True)
    assert by_module["project_in"] == 9 * 72 * 8
    model = ComplexSpectralMapping(engine, n_fft=160)
    assert macs_per_second(model, sr=16000) == 16000 / 80 * per_frame  # 200 frames per second


def test_complexity_cli_reads_the_recipe_yaml(tmp_path, capsys):
    yaml_file = tmp_path / "tiny.yaml"
    yaml_file.write_text(
        "data_folder: !PLACEHOLDER\n"
        "sample_rate: 16000\n"
        "model: !new:custom_modules.models.unet_tcm.ComplexSpectralMapping\n"
        "    n_fft: 160\n"
        "    engine: !new:custom_modules.models.unet_tcm.UNetEngine\n"
        "        num_freqs: 81\n        num_layers: 2\n        channels: 4\n"
        "        bottleneck_dim: 8\n        tcm_hidden: 4\n        tcm_kernel: 3\n"
        "        tcm_dilations: [1, 2]\n        tcm_repeats: 1\n"
    )
    results = main([str(yaml_file)])
    direct = ComplexSpectralMapping(
        UNetEngine(**tiny_engine_kwargs(n_fft=160, num_layers=2)), n_fft=160
    )
    assert results[str(yaml_file)]["parameters"] == count_parameters(direct)
    assert results[str(yaml_file)]["macs_per_second"] == macs_per_second(direct)
    assert "parameters" in capsys.readouterr().out


def test_level_normalization_makes_the_model_scale_equivariant():
    model = tiny_model(n_fft=160, seed=0, level_normalization=True).eval().double()
    plain = tiny_model(n_fft=160, seed=0).eval().double()
    x = randn(2, 1600).double() * 0.1
    with torch.no_grad():
        out, out_quiet, out_loud = model(x), model(x * 1e-2), model(x * 10)
        plain_out, plain_quiet = plain(x), plain(x * 1e-2)
    torch.testing.assert_close(out_quiet * 1e2, out, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(out_loud / 10, out, rtol=1e-6, atol=1e-8)
    # Without it the mapping is not equivariant (biases and norms see the level).
    assert not torch.allclose(plain_quiet * 1e2, plain_out, rtol=1e-3, atol=1e-6)


def test_level_normalization_keeps_the_lookahead():
    model = tiny_model(n_fft=160, seed=0, level_normalization=True).eval().double()
    x = randn(1, 1600).double()
    starts = list(range(800, 880))
    with torch.no_grad():
        outputs = model(perturb_after(x, starts))
    first = [int(changed(outputs[r], outputs[0]).nonzero()[0]) - s for r, s in enumerate(starts, 1)]
    assert min(first) >= -model.lookahead


def test_frame_scale_is_the_bias_corrected_running_level():
    model = tiny_model(n_fft=160, seed=0, level_normalization=True, norm_time_constant_frames=3.0)
    spec = randn(1, 2, 6, 81).double()
    scale = model.frame_scale(spec)[0, 0, :, 0]
    power = spec.pow(2).mean(dim=(1, 3))[0]
    decay, average, weight = model.norm_decay, 0.0, 0.0
    for k in range(6):  # the recursion a streaming implementation runs
        average = decay * average + (1 - decay) * power[k]
        weight = decay * weight + (1 - decay)
        assert abs(float(scale[k]) - float(torch.sqrt(average / weight))) < 1e-9
