"""Tests of the Denoising WaveNet (custom_modules/models/denoising_wavenet.py)."""

import re
from pathlib import Path

import pytest
import torch

from custom_modules.evaluation.complexity import count_macs, count_parameters, load_recipe_model
from custom_modules.evaluation.complexity import main as complexity_main
from custom_modules.models.denoising_wavenet import DenoisingWaveNet
from custom_modules.training.losses import si_sdr

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "denoising_wavenet" / "hparams"

# Tiny configurations over the model's options: stacks, dilations, tap counts, channel sizes.
TINY = {
    "paper_layout": dict(num_stacks=3, dilations=[1, 2, 4], residual_channels=4,
                         skip_channels=4, output_channels=[8, 4]),
    "one_stack": dict(num_stacks=1, dilations=[1, 2, 4, 8], residual_channels=3,
                      skip_channels=5, output_channels=[6, 2]),
    "wide_taps": dict(num_stacks=2, dilations=[1, 3], residual_channels=4, skip_channels=4,
                      output_channels=[4, 4], kernel_size=5, input_kernel_size=1,
                      output_kernel_size=5),
}  # fmt: skip


def make(name, **extra):
    torch.manual_seed(0)
    return DenoisingWaveNet(**TINY[name], **extra).double()


def expected_receptive_field(cfg):
    k = cfg.get("kernel_size", 3)
    return (
        1
        + (cfg.get("input_kernel_size", 3) - 1)
        + cfg["num_stacks"] * sum(cfg["dilations"]) * (k - 1)
        + 2 * (cfg.get("output_kernel_size", 3) - 1)
    )


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", list(TINY))
def test_forward_backward_and_shapes(name):
    net = make(name)
    rf = net.receptive_field
    assert rf == expected_receptive_field(TINY[name])
    assert net.lookahead == (rf - 1) // 2
    x = randn(2, rf + 30).requires_grad_()
    out = net(x, mode="valid")
    assert out.shape == (2, 31)
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    whole = net(randn(3, 257, seed=1))
    assert whole.shape == (3, 257)


@pytest.mark.parametrize("name", list(TINY))
def test_receptive_field_by_perturbation(name):
    """Output t changes with input t +- lookahead and never with input beyond."""
    net = make(name)
    # A ReLU that is off where the single path to an edge sample passes would hide that
    # dependency: biases before both ReLUs keep them on for this check.
    with torch.no_grad():
        for layer in net.layers:
            layer.skip.bias.fill_(10.0 / len(net.layers))
        net.output[1].bias.fill_(10.0)
    rf, half = net.receptive_field, net.lookahead
    x = randn(1, 3 * rf, seed=2)
    t = rf  # an output index of the valid pass; its centre is input t + half
    centre = t + half

    def output_t(signal):
        with torch.no_grad():
            return float(net(signal, mode="valid")[0, t])

    # Convolutions compute each output from its own inputs only, so an input outside the
    # field leaves it bitwise equal and any change proves a dependency (the edge samples
    # reach it through one chain of every layer: a change of ~1e-14 is still a real one).
    base = output_t(x)
    for offset in (-half, half, 0, 1 - half, half - 1):  # inside: the extremes and the centre
        y = x.clone()
        y[0, centre + offset] += 1.0
        assert output_t(y) != base, offset
    for offset in (-half - 1, half + 1, -2 * half, 2 * half):  # outside
        y = x.clone()
        y[0, centre + offset] += 100.0
        assert output_t(y) == base, offset


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize(("target_field", "max_fragments"), [(7, 1), (50, 3), (1000, 2)])
def test_same_mode_equals_one_valid_pass_over_the_padded_signal(name, target_field, max_fragments):
    net = make(name, target_field=target_field, max_fragments=max_fragments)
    x = randn(2, 333, seed=3)
    padded = torch.nn.functional.pad(x, (net.lookahead, net.lookahead))
    expected = net(padded, mode="valid")
    got = net(x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_same_mode_runs_at_most_max_fragments_of_fragment_length(monkeypatch):
    net = make("one_stack", target_field=40, max_fragments=3)
    seen = []
    original = net.target_fields

    def spy(fragments):
        seen.append(tuple(fragments.shape))
        return original(fragments)

    monkeypatch.setattr(net, "target_fields", spy)
    net(randn(2, 1000, seed=4))
    assert len(seen) == -(-2 * 25 // 3)  # 25 fragments per signal, 3 per pass
    assert all(b <= 3 and n == net.fragment_length for b, n in seen), seen


def test_center_cuts_to_the_target_field_and_recomputes_lengths():
    net = make("one_stack")
    rf, half = net.receptive_field, net.lookahead
    x = torch.arange(100.0, dtype=torch.float64).repeat(2, 1)
    cut, lengths = net.center(x, torch.tensor([1.0, 0.6]))
    assert cut.shape == (2, 100 - rf + 1)
    assert cut[0, 0] == half
    assert lengths[0] == 1.0
    assert lengths[1] == pytest.approx((60 - half) / (100 - rf + 1))


@pytest.mark.parametrize("name", list(TINY))
def test_state_dict_round_trip(name):
    net = make(name)
    x = randn(1, 200, seed=5)
    other = DenoisingWaveNet(**TINY[name]).double()
    other.load_state_dict(net.state_dict())
    torch.testing.assert_close(other(x), net(x), rtol=0, atol=0)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="kernel_size must be a positive odd"):
        DenoisingWaveNet(kernel_size=2)
    with pytest.raises(ValueError, match="output_channels needs two"):
        DenoisingWaveNet(output_channels=[8])
    net = make("one_stack")
    with pytest.raises(ValueError, match="shorter than the receptive field"):
        net(randn(1, net.receptive_field - 1), mode="valid")
    with pytest.raises(ValueError, match="mode must be"):
        net(randn(1, 100), mode="full")
    with pytest.raises(ValueError, match=r"expected \(batch, samples\)"):
        net(randn(100))


def test_clean_to_clean_training_approaches_identity():
    """The identity check: a few steps on clean -> clean make the output close to the input."""
    torch.manual_seed(0)
    net = DenoisingWaveNet(**TINY["one_stack"])
    generator = torch.Generator().manual_seed(6)
    t = torch.arange(4000.0) / 16000

    def clean_batch():
        f0 = 100 + 200 * torch.rand(4, 1, generator=generator)
        phase = 2 * torch.pi * f0 * t
        voiced = sum(torch.sin(k * phase) / k for k in range(1, 6))
        return 0.1 * voiced + 0.01 * torch.randn(4, 4000, generator=generator)

    probe = clean_batch()

    def identity_si_sdr():
        with torch.no_grad():
            return float(si_sdr(net(probe), probe).mean())

    before = identity_si_sdr()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        clean = clean_batch()
        loss = (net(clean, mode="valid") - net.center(clean)[0]).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = identity_si_sdr()
    assert after > 15.0 and after > before + 10.0, (before, after)


def test_paper_configuration_of_the_recipe():
    """wavenet.yaml: 3 stacks of 1..512, 128/128 channels, 2048/256 output convolutions."""
    net = load_recipe_model(RECIPE / "wavenet.yaml")
    assert len(net.layers) == 30
    assert [layer.dilated.dilation[0] for layer in net.layers[:10]] == [2**i for i in range(10)]
    # The dilated stacks alone: the paper's 6,139 samples; input and output 3-tap convs add 6.
    assert net.receptive_field == 6139 + 2 + 4
    assert net.output[1].out_channels == 2048 and net.output[3].out_channels == 256
    readme = (RECIPE.parent / "README.md").read_text()
    assert re.search(rf"\b{count_parameters(net):,}\b", readme), "README parameter count"


def test_complexity_cli_reports_the_receptive_field(tmp_path, capsys):
    yaml_file = tmp_path / "tiny.yaml"
    yaml_file.write_text(
        "data_folder: !PLACEHOLDER\n"
        "model: !new:custom_modules.models.denoising_wavenet.DenoisingWaveNet\n"
        "    num_stacks: 1\n    dilations: [1, 2]\n    residual_channels: 2\n"
        "    skip_channels: 2\n    output_channels: [2, 2]\n    target_field: 1000\n"
    )
    result = complexity_main([str(yaml_file)])[str(yaml_file)]
    assert result["receptive_field"] == 1 + 2 + 2 * 3 + 4
    # Whole-signal inference: one more fragment of target_field + rf - 1 inputs per second.
    net = DenoisingWaveNet(num_stacks=1, dilations=[1, 2], residual_channels=2, skip_channels=2,
                           output_channels=[2, 2], target_field=1000)  # fmt: skip
    per_fragment = count_macs(net, torch.zeros(1, 1000))
    assert result["macs_per_second"] == 16 * per_fragment  # 16 fragments per second at 16 kHz
    assert "receptive field 13 samples" in capsys.readouterr().out
