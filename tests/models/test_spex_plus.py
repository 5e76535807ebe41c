"""Tests of the SpEx+ model and loss (custom_modules/models/spex_plus.py), tiny dimensions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from custom_modules.evaluation.complexity import count_parameters
from custom_modules.evaluation.metrics import si_snr as numpy_si_snr
from custom_modules.models.spex_plus import SpexPlus
from custom_modules.training.losses import SpexPlusLoss, si_sdr

TINY = dict(
    num_filters=16,
    kernel_sizes=(8, 32, 64),
    bottleneck_channels=16,
    hidden_channels=32,
    embedding_dim=12,
    speaker_hidden_channels=16,
    speaker_block_channels=(16, 24, 24),
    num_stacks=2,
    blocks_per_stack=3,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a loaded shared machine 2 threads
    were measured 20x slower than 1 (spinning workers), so each test runs on one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_model(seed=0, num_speakers=4, **overrides):
    with torch.random.fork_rng(devices=[]):  # deterministic init, global state untouched
        torch.manual_seed(seed)
        return SpexPlus(num_speakers=num_speakers, **{**TINY, **overrides})


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("num_samples", [1, 7, 64, 1000, 1001, 1003, 2048])
def test_output_shapes_for_any_length(num_samples):
    model = tiny_model().eval()
    with torch.no_grad():
        out = model(randn(3, num_samples), randn(3, 900, seed=1))
    assert out.estimates.shape == (3, 3, num_samples)
    assert out.speaker_logits.shape == (3, 4)
    assert out.embedding.shape == (3, TINY["embedding_dim"])
    assert torch.isfinite(out.estimates).all()


def test_encoder_frames_align_across_scales():
    model = tiny_model()
    for n in (5, 8, 9, 100, 101):
        encoded = model.encoder(randn(1, n))
        frames = {e.shape[-1] for e in encoded}
        assert frames == {model.encoder.num_frames(n)}
        # Frames cover the whole input: the last one starts before its end.
        assert (model.encoder.num_frames(n) - 1) * model.encoder.stride < max(n, 1)
        assert (model.encoder.num_frames(n) - 1) * model.encoder.stride + 8 >= n


def test_backward_reaches_every_parameter():
    model = tiny_model().train()
    loss_fn = SpexPlusLoss()
    target = randn(2, 1200, seed=2)
    out = model(target + randn(2, 1200, seed=3), randn(2, 1000, seed=4))
    total, _, ce = loss_fn(out.estimates, target, logits=out.speaker_logits,
                           speaker_index=torch.tensor([1, 3]))  # fmt: skip
    total.backward()
    assert ce > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.speaker_head.parameters())


def test_state_dict_round_trip(tmp_path):
    model = tiny_model(seed=1).eval()
    # Make BatchNorm statistics non-trivial so that they are part of what is checked.
    model.train()
    with torch.no_grad():
        model(randn(2, 800), randn(2, 800, seed=5))
    model.eval()
    torch.save(model.state_dict(), tmp_path / "model.ckpt")
    clone = tiny_model(seed=2).eval()
    mixture, reference = randn(1, 1500, seed=6), randn(1, 1100, seed=7)
    with torch.no_grad():
        assert not torch.allclose(model(mixture, reference).estimates,
                                  clone(mixture, reference).estimates)  # fmt: skip
        clone.load_state_dict(torch.load(tmp_path / "model.ckpt", weights_only=True))
        assert torch.equal(model(mixture, reference).estimates, clone(mixture, reference).estimates)


def test_embedding_drives_the_output():
    model = tiny_model().eval()
    mixture = randn(1, 1600, seed=8)
    with torch.no_grad():
        emb_a = model.embed(randn(1, 1200, seed=9))
        emb_b = model.embed(randn(1, 1200, seed=10) * 3 + torch.linspace(0, 1, 1200))
        out_a, out_b = model.extract(mixture, emb_a), model.extract(mixture, emb_b)
        # Same embedding, same output; another embedding, another output.
        assert torch.equal(out_a, model.extract(mixture, emb_a.clone()))
    assert not torch.allclose(emb_a, emb_b)
    relative_change = (out_a - out_b).norm() / out_a.norm()
    assert relative_change > 1e-3, relative_change


def test_reference_padding_is_ignored_with_lengths():
    model = tiny_model().eval()
    reference = randn(1, 1000, seed=11)
    padded = torch.cat([torch.nn.functional.pad(reference, (0, 700)), randn(1, 1700, seed=12)])
    with torch.no_grad():
        alone = model.embed(reference)
        batched = model.embed(padded, torch.tensor([1000 / 1700, 1.0]))
        ignoring_lengths = model.embed(padded)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ignoring_lengths[0], alone[0], atol=1e-4)


def test_batch_items_are_independent_in_eval_mode():
    model = tiny_model().eval()
    mixtures, references = randn(2, 1300, seed=13), randn(2, 1000, seed=14)
    with torch.no_grad():
        together = model(mixtures, references).estimates
        first = model(mixtures[:1], references[:1]).estimates
    torch.testing.assert_close(together[:1], first, atol=1e-5, rtol=1e-4)


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="reference has 100 samples.*at least"):
        model(randn(1, 1000), randn(1, 100))
    with pytest.raises(ValueError, match=r"mixture must be \(batch, samples\)"):
        model(randn(1000), randn(1, 1000))
    with pytest.raises(ValueError, match="kernel_sizes"):
        SpexPlus(kernel_sizes=(40, 20, 80))
    assert model.min_reference_samples == (27 - 1) * 4 + 8


def test_no_head_for_inference():
    model = tiny_model(num_speakers=0).eval()
    with torch.no_grad():
        out = model(randn(1, 500), randn(1, 500))
    assert out.speaker_logits is None and model.speaker_head is None
    assert count_parameters(model) == count_parameters(tiny_model(num_speakers=3)) - (12 + 1) * 3


def test_paper_configuration_size():
    """The default (paper, 16 kHz) configuration: ~11 M parameters (paper: 11.1 M at 8 kHz)."""
    model = SpexPlus(num_speakers=251)
    count = count_parameters(model)
    assert 11.0e6 < count < 11.5e6, count
    assert count - count_parameters(SpexPlus(num_speakers=0)) == 257 * 251
    assert model.encoder.kernel_sizes == (40, 160, 320) and model.encoder.stride == 20
    assert len(model.extractor.stacks) == 4 and len(model.extractor.stacks[0]) == 8


# ---- loss --------------------------------------------------------------------------


def test_si_sdr_matches_the_numpy_metric():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(3, 4000))
    estimate = 0.7 * target + 0.3 * rng.normal(size=(3, 4000)) + 0.05
    ours = si_sdr(torch.from_numpy(estimate), torch.from_numpy(target)).numpy()
    reference = [numpy_si_snr(e, t) for e, t in zip(estimate, target, strict=True)]
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_si_sdr_ignores_padding_and_scale():
    rng = np.random.default_rng(1)
    target = torch.from_numpy(rng.normal(size=3000))
    estimate = target + 0.5 * torch.from_numpy(rng.normal(size=3000))
    short = si_sdr(estimate[None, :2000], target[None, :2000])
    padded_est = torch.stack([torch.cat([estimate[:2000], torch.zeros(1000)]), estimate])
    padded_tgt = torch.stack([torch.cat([target[:2000], torch.zeros(1000)]), target])
    garbage_est = padded_est.clone()
    garbage_est[0, 2000:] = 100.0  # beyond the length: must not count
    scores = si_sdr(garbage_est, padded_tgt, lengths=torch.tensor([2 / 3, 1.0]))
    torch.testing.assert_close(scores[0], short[0])
    torch.testing.assert_close(si_sdr(5 * padded_est, padded_tgt), si_sdr(padded_est, padded_tgt))


def test_loss_weights_and_skipped_cross_entropy():
    target = randn(2, 800, seed=20)
    estimates = torch.stack(
        [target + 0.1 * randn(2, 800, seed=21 + i) * (i + 1) for i in range(3)], 1
    )
    per_scale = [si_sdr(estimates[:, i], target).mean() for i in range(3)]
    loss_fn = SpexPlusLoss(scale_weights=(0.8, 0.1, 0.1), ce_weight=0.5)
    total, weighted, ce = loss_fn(estimates, target)
    assert ce == 0
    torch.testing.assert_close(
        weighted, 0.8 * per_scale[0] + 0.1 * per_scale[1] + 0.1 * per_scale[2]
    )
    torch.testing.assert_close(total, -weighted)
    logits = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    total_ce, _, ce = loss_fn(estimates, target, logits=logits, speaker_index=torch.tensor([1, 1]))
    expected_ce = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 1]))
    torch.testing.assert_close(ce, expected_ce)
    torch.testing.assert_close(total_ce, -weighted + 0.5 * expected_ce)
    with pytest.raises(ValueError, match="scale_weights"):
        SpexPlusLoss(scale_weights=(1.0, 0.0))


def test_tiny_model_learns_to_extract_the_reference_speaker():
    """A few Adam steps on one mixture must raise SI-SDR well above the mixture's."""
    t = torch.arange(1600) / 16000
    target = (torch.sin(2 * np.pi * 220 * t) * (1 + 0.5 * torch.sin(2 * np.pi * 3 * t)))[None]
    interferer = 0.8 * torch.sign(torch.sin(2 * np.pi * 1375 * t))[None]
    mixture = target + interferer
    reference = torch.sin(2 * np.pi * 220 * torch.arange(1200) / 16000)[None]
    model = tiny_model(seed=3).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = SpexPlusLoss(ce_weight=0.0)
    baseline = float(si_sdr(mixture, target))
    for _ in range(60):
        optimizer.zero_grad()
        loss, _, _ = loss_fn(model(mixture, reference).estimates, target)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        achieved = float(si_sdr(model(mixture, reference).estimates[:, 0], target))
    assert achieved > baseline + 6.0, (baseline, achieved)
