"""Tests of the CNN + LSTM spectral mask estimator (tiny sizes, CPU)."""

import pytest
import torch

from custom_modules.models.mask_net import MaskNet, frames_from_relative

NUM_FREQS = 17


def tiny_net(**overrides):
    kwargs = dict(
        num_freqs=NUM_FREQS,
        conv_channels=(3, 2),
        kernel_time=3,
        kernel_freq=3,
        projection_size=8,
        rnn_size=6,
        rnn_layers=2,
    )
    kwargs.update(overrides)
    return MaskNet(**kwargs)


def seeded(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def randomize_(net, seed=1):
    """Non-default values everywhere (layer-norm bias included), reproducibly."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    return net


CONFIGS = [
    dict(),
    dict(causal=True),
    dict(conv_channels=()),
    dict(causal=True, conv_channels=(4,), kernel_time=2, rnn_layers=1),
    dict(input_norm=False, mask_activation="sigmoid"),
    dict(mask_activation="softplus", dropout=0.1),
]


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default"
)
def test_shape_and_gradients_reach_every_parameter(config):
    net = randomize_(tiny_net(**config))
    feats = seeded(3, 11, NUM_FREQS)
    mask = net(feats)
    assert mask.shape == feats.shape
    assert torch.isfinite(mask).all()
    (mask * seeded(3, 11, NUM_FREQS, seed=5)).sum().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"no gradient reaches {name}"


@pytest.mark.parametrize(
    "activation,low,high", [("relu", 0.0, None), ("sigmoid", 0.0, 1.0), ("softplus", 0.0, None)]
)
def test_mask_range_follows_the_activation(activation, low, high):
    net = randomize_(tiny_net(mask_activation=activation))
    mask = net(3 * seeded(2, 9, NUM_FREQS))
    assert mask.min() >= low
    if high is not None:
        assert mask.max() <= high
    if activation == "relu":
        # Not a constant: both zeros and positive values (a real mask).
        assert (mask == 0).any() and (mask > 0).any()


@pytest.mark.parametrize("causal", [True, False])
def test_causal_mask_ignores_future_frames_and_bidirectional_does_not(causal):
    net = randomize_(tiny_net(causal=causal)).eval()
    feats = seeded(1, 12, NUM_FREQS)
    changed = feats.clone()
    # Perturb frames 7.. only (not by a constant: the per-frame norm removes it).
    changed[:, 7:] += seeded(1, 5, NUM_FREQS, seed=9)
    with torch.no_grad():
        before, after = net(feats), net(changed)
    past_difference = (before[:, :7] - after[:, :7]).abs().max()
    if causal:
        assert past_difference < 1e-6  # float rounding only
    else:
        assert past_difference > 1e-4
    assert (before[:, 7:] - after[:, 7:]).abs().max() > 1e-4


@pytest.mark.parametrize("causal", [True, False])
def test_padded_item_gets_the_mask_it_gets_alone(causal):
    net = randomize_(tiny_net(causal=causal)).eval()
    short = seeded(1, 6, NUM_FREQS, seed=2)
    long = seeded(1, 10, NUM_FREQS, seed=3)
    padded = torch.zeros(2, 10, NUM_FREQS)
    padded[0, :6] = short[0]
    padded[0, 6:] = 7.0  # whatever follows the end must not matter
    padded[1] = long[0]
    with torch.no_grad():
        batch_mask = net(padded, lengths=torch.tensor([0.6, 1.0]))
        alone_short = net(short)
        alone_long = net(long)
    torch.testing.assert_close(batch_mask[0, :6], alone_short[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch_mask[1], alone_long[0], atol=1e-5, rtol=1e-5)
    assert batch_mask[0, 6:].abs().max() == 0
    # Full relative lengths give exactly the unpacked result.
    with torch.no_grad():
        torch.testing.assert_close(net(long, lengths=torch.ones(1)), alone_long)


def test_state_dict_round_trip_and_mismatch():
    net = randomize_(tiny_net()).eval()
    feats = seeded(2, 8, NUM_FREQS)
    clone = tiny_net().eval()
    with torch.no_grad():
        assert not torch.allclose(clone(feats), net(feats))
        clone.load_state_dict(net.state_dict(), strict=True)
        torch.testing.assert_close(clone(feats), net(feats), atol=0, rtol=0)
    with pytest.raises(RuntimeError):
        tiny_net(rnn_size=7).load_state_dict(net.state_dict(), strict=True)
    with pytest.raises(RuntimeError):  # a causal net has no reverse-direction LSTM weights
        tiny_net(causal=True).load_state_dict(net.state_dict(), strict=True)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(kernel_freq=2), "kernel_freq must be odd"),
        (dict(kernel_time=4), "kernel_time must be odd when not causal"),
        (dict(mask_activation="tanh"), "unknown mask_activation"),
        (dict(rnn_layers=0), "rnn_layers must be >= 1"),
    ],
)
def test_bad_configuration_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_net(**kwargs)


def test_bad_inputs_are_refused_with_the_shape_or_value():
    net = tiny_net()
    with pytest.raises(ValueError, match=r"\(batch, frames, 17\).*\(2, 5, 16\)"):
        net(torch.zeros(2, 5, 16))
    with pytest.raises(ValueError, match="relative lengths"):
        net(torch.zeros(2, 5, NUM_FREQS), lengths=torch.tensor([1.0, 1.5]))
    with pytest.raises(ValueError, match="relative lengths"):
        net(torch.zeros(1, 5, NUM_FREQS), lengths=torch.tensor([float("nan")]))


def test_frames_from_relative_rounds_and_keeps_one_frame():
    counts = frames_from_relative(torch.tensor([1.0, 0.55, 0.04, 0.0]), 10)
    assert counts.tolist() == [10, 6, 1, 1]
