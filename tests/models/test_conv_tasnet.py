"""Conv-TasNet model, separation metrics (BSS Eval SDR, PIT scores) and separation data."""

import functools
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import lfilter
from speechbrain.nnet.losses import get_si_snr_with_pitwrapper

from custom_modules.audio.files import read_audio
from custom_modules.data.separation_data import (
    RandomChunkDataset,
    prepare_separation_data,
    whole_utterance_dataset,
)
from custom_modules.data.triplets import TripletMaker
from custom_modules.evaluation.bss_eval import best_permutation, bss_sdr, separation_scores
from custom_modules.evaluation.metrics import MetricError, si_snr
from custom_modules.models.conv_tasnet import ConvTasNet

TINY = dict(N=16, B=8, H=16, P=3, X=3, R=1)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread (threads only add overhead, worse on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed=0, **overrides):
    with torch.random.fork_rng(devices=[]):  # deterministic init, global state untouched
        torch.manual_seed(seed)
        return ConvTasNet(**{**TINY, "L": 16, **overrides})


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---- model -------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kernel", [16, 15, 40])
@pytest.mark.parametrize("num_samples", [1, 7, 15, 21, 100, 1001, 4003])
def test_output_length_equals_input_length(causal, kernel, num_samples):
    # Lengths shorter than L, and lengths that are not multiples of the stride L // 2.
    model = tiny_model(L=kernel, causal=causal).eval()
    with torch.no_grad():
        out = model(randn(2, num_samples))
    assert out.shape == (2, num_samples, 2)
    assert torch.isfinite(out).all()


def test_paper_depths_keep_length_on_short_inputs():
    # Shorter than the receptive field: SpeechBrain's reflection padding needs min_frames.
    # (Only X and P set the padding: small channel counts keep the test fast.)
    for kernel, blocks in ((16, 8), (40, 7)):
        model = tiny_model(L=kernel, X=blocks).eval()
        assert model.min_frames == 2 ** (blocks - 1) + 1
        with torch.no_grad():
            assert model(randn(1, 1234)).shape == (1, 1234, 2)


def test_gradients_reach_every_parameter():
    model = tiny_model()
    out = model(randn(2, 999))
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, missing


def test_causal_model_ignores_the_future():
    model = tiny_model(causal=True, L=16).eval()
    x = randn(1, 1600)
    changed = x.clone()
    t0 = 1000
    changed[:, t0:] += randn(1, 600, seed=3)
    with torch.no_grad():
        a, b = model(x), model(changed)
    # Output sample t depends on encoder frames that start at or before t.
    past = slice(0, t0 - model.kernel_size)
    assert torch.equal(a[:, past], b[:, past])
    assert (a[:, t0:] - b[:, t0:]).abs().max() > 1e-3


def test_non_causal_model_looks_ahead():
    model = tiny_model(causal=False).eval()
    x = randn(1, 1600)
    changed = x.clone()
    changed[:, 1000:] += randn(1, 600, seed=3)
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert (a[:, :900] - b[:, :900]).abs().max() > 1e-6


def test_causal_with_global_layer_norm_is_refused():
    with pytest.raises(ValueError, match="cLN"):
        ConvTasNet(**TINY, causal=True, norm_type="gLN")
    assert tiny_model(causal=True).norm_type == "cLN"
    assert tiny_model(causal=False).norm_type == "gLN"
    with pytest.raises(ValueError, match="batch, samples"):
        tiny_model()(randn(2, 1, 100))


def test_silence_in_silence_out():
    # No bias anywhere on the signal path: zero padding of a batch stays zero.
    model = tiny_model().eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 800))
    assert torch.count_nonzero(out) == 0


def test_pit_training_step_lowers_the_loss():
    # Two tones at different pitches: a few Adam steps must improve the uPIT SI-SNR.
    t = torch.arange(2000) / 8000
    sources = torch.stack(
        [torch.sin(2 * math.pi * 220 * t), 0.7 * torch.sin(2 * math.pi * 1300 * t)], -1
    )
    sources = sources.unsqueeze(0).repeat(2, 1, 1)
    mixture = sources.sum(-1)
    model = tiny_model(seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = get_si_snr_with_pitwrapper(sources, model(mixture)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 5.0, losses[::5]


# ---- metrics -----------------------------------------------------------------------


def brute_force_bss_sdr(estimate, reference, taps):
    """SDR from an explicit matrix of delayed references (least squares)."""
    n = reference.size
    delayed = np.zeros((n + taps - 1, taps))
    for k in range(taps):
        delayed[k : k + n, k] = reference
    target = np.pad(estimate, (0, taps - 1))
    coef, *_ = np.linalg.lstsq(delayed, target, rcond=None)
    projection = delayed @ coef
    return 10 * np.log10(projection @ projection / np.sum((target - projection) ** 2))


@pytest.mark.parametrize("taps", [1, 8, 64])
def test_bss_sdr_matches_explicit_least_squares(taps):
    rng = np.random.default_rng(taps)
    reference = lfilter([1.0], [1.0, -0.9], rng.normal(size=700))  # coloured, like speech
    estimate = lfilter([0.8, 0.3], [1.0], reference) + 0.3 * rng.normal(size=700)
    assert bss_sdr(estimate, reference, filter_length=taps) == pytest.approx(
        brute_force_bss_sdr(estimate, reference, taps), abs=1e-6
    )


def test_bss_sdr_forgives_filtering_but_not_noise(real_audio_dir):
    speech, _ = read_audio(real_audio_dir / "speech" / "libri_367_130732-0001.wav")
    speech = speech.astype(np.float64)  # whole utterance: starts and ends near silence
    rng = np.random.default_rng(0)
    filtered = lfilter([0.6, 0.3, -0.2, 0.1], [1.0], speech)  # short FIR: a "distortion"
    assert bss_sdr(filtered, speech) > 50
    assert si_snr(filtered, speech) < 15  # SI-SNR does penalise it
    noise = rng.normal(size=speech.size)
    noise *= np.linalg.norm(speech) / np.linalg.norm(noise) / 10 ** (10 / 20)  # 10 dB SNR
    # White noise is almost orthogonal to the filtered-speech subspace: SDR ~ SNR.
    assert bss_sdr(speech + noise, speech) == pytest.approx(10.0, abs=0.3)
    # The projection subspace contains the scaled reference: SDR >= scaled SNR.
    estimate = 0.5 * filtered + noise
    assert bss_sdr(estimate, speech) >= si_snr(estimate - estimate.mean(), speech) - 0.05
    assert bss_sdr(7.0 * estimate, speech) == pytest.approx(bss_sdr(estimate, speech), abs=1e-9)


def test_bss_sdr_matches_fast_bss_eval_when_installed():
    fast_bss_eval = pytest.importorskip("fast_bss_eval")
    rng = np.random.default_rng(1)
    reference = lfilter([1.0], [1.0, -0.8], rng.normal(size=8000))
    estimate = lfilter([0.9, 0.2], [1.0], reference) + 0.2 * rng.normal(size=8000)
    expected = fast_bss_eval.sdr(reference[None], estimate[None], filter_length=512)[0]
    assert bss_sdr(estimate, reference) == pytest.approx(float(expected), abs=0.05)


def test_bss_sdr_rejects_bad_input():
    with pytest.raises(MetricError, match="silent"):
        bss_sdr(np.ones(100), np.zeros(100))
    with pytest.raises(MetricError, match="100 samples but reference has 90"):
        bss_sdr(np.ones(100), np.ones(90))
    with pytest.raises(MetricError, match="NaN"):
        bss_sdr(np.full(100, np.nan), np.ones(100))
    assert bss_sdr(np.arange(1.0, 101.0), np.arange(1.0, 101.0)) > 100


def two_speakers(real_audio_dir, seconds=3.0, sr=16000):
    n = int(seconds * sr)
    first, _ = read_audio(real_audio_dir / "speech" / "libri_533_1066-0003.wav")
    second, _ = read_audio(real_audio_dir / "speech" / "libri_1688_142285-0003.wav")
    sources = np.stack([first[:n], second[:n]]).astype(np.float64)
    sources /= np.sqrt(np.mean(sources**2, axis=1, keepdims=True)) * 10  # equal levels
    return sources


def test_separation_scores_pit_and_improvements(real_audio_dir):
    sources = two_speakers(real_audio_dir)
    mixture = sources.sum(0)
    rng = np.random.default_rng(0)
    noise = 0.01 * rng.normal(size=sources.shape)
    scores = separation_scores(sources[::-1] + noise, sources, mixture)
    assert scores["perm"] == (1, 0)
    expected = np.mean([si_snr(sources[j] + noise[1 - j], sources[j]) for j in range(2)])
    assert scores["si_snr_estimate"] == pytest.approx(expected)
    # Equal-level, nearly uncorrelated speakers: the mixture scores about 0 dB.
    assert abs(scores["si_snr_mixture"]) < 1.0
    assert scores["si_snr_delta"] == pytest.approx(
        scores["si_snr_estimate"] - scores["si_snr_mixture"]
    )
    assert scores["bss_sdr_delta"] > 15 and scores["errors"] == ""


def test_separation_scores_match_speechbrain_pit_loss(real_audio_dir):
    sources = two_speakers(real_audio_dir, seconds=2.0)
    rng = np.random.default_rng(2)
    estimates = np.stack(
        [0.7 * sources[1] + 0.3 * sources[0], sources[0] + 0.2 * rng.normal(size=sources.shape[1])]
    )
    scores = separation_scores(estimates, sources, sources.sum(0), metrics=("si_snr",))
    loss = get_si_snr_with_pitwrapper(
        torch.from_numpy(sources.T[None]).float(), torch.from_numpy(estimates.T[None]).float()
    )
    assert scores["perm"] == (1, 0)
    assert float(-loss[0]) == pytest.approx(scores["si_snr_estimate"], abs=0.01)


def test_separation_scores_report_undefined_metrics():
    sources = np.stack([np.zeros(400), np.sin(np.arange(400) / 3.0)])
    scores = separation_scores(sources + 0.01, sources, sources.sum(0))
    assert math.isnan(scores["bss_sdr_estimate"]) and "silent" in scores["errors"]
    assert best_permutation(sources[::-1], sources) == (1, 0)
    with pytest.raises(ValueError, match="unknown separation metric"):
        separation_scores(sources, sources, sources.sum(0), metrics=("pesq",))


# ---- data --------------------------------------------------------------------------


def write_mixture_set(folder, lengths, sr=8000, with_interferer=True):
    rng = np.random.default_rng(0)
    manifest = {}
    for i, n in enumerate(lengths):
        s1, s2 = rng.uniform(-0.3, 0.3, size=(2, n))
        entry = {"duration": n / sr, "sr": sr, "tir_db": 0.0}
        signals = {"mix": s1 + s2, "target": s1}
        if with_interferer:
            signals["interferer"] = s2
        for kind, samples in signals.items():
            path = folder / kind / f"{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), samples, sr, subtype="FLOAT")
            entry[kind] = "{save_root}/" + f"{kind}/{i}.wav"
        manifest[f"utt{i}"] = entry
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder / "manifest.json"


def test_random_chunks_are_seeded_per_epoch_and_item(tmp_path):
    manifest = write_mixture_set(tmp_path, [8000, 20000, 1000])
    data = RandomChunkDataset(manifest, crop_sec=0.5, seed=3, sr=8000)
    assert len(data) == 3
    first = data[1]
    assert first["mixture"].shape == (4000,)
    assert torch.allclose(first["s1"] + first["s2"], first["mixture"], atol=1e-6)
    again = RandomChunkDataset(manifest, crop_sec=0.5, seed=3)[1]
    assert torch.equal(first["mixture"], again["mixture"])
    whole, _ = read_audio(tmp_path / "mix" / "1.wav")
    offsets = set()
    for epoch in range(4):
        data.set_epoch(epoch)
        chunk = data[1]["mixture"].numpy()
        matches = [
            o for o in range(len(whole) - 3999) if np.array_equal(whole[o : o + 4000], chunk)
        ]
        assert len(matches) == 1  # a contiguous slice of the file
        offsets.add(matches[0])
    assert len(offsets) > 1  # a new offset in other epochs
    assert data[2]["mixture"].shape == (1000,)  # shorter than a chunk: whole


def test_whole_utterance_dataset_keeps_full_length(tmp_path):
    manifest = write_mixture_set(tmp_path, [8000, 12345])
    data = whole_utterance_dataset(manifest, sr=8000)
    item = data[1]
    assert sorted(item) == ["id", "mixture", "s1", "s2", "tir_db"]
    assert item["mixture"].shape == item["s2"].shape == (12345,)
    with pytest.raises(ValueError, match="expected 16000 Hz"):
        whole_utterance_dataset(manifest, sr=16000)


def test_sets_without_interferers_are_refused_with_the_file(tmp_path):
    manifest = write_mixture_set(tmp_path, [800], with_interferer=False)
    with pytest.raises(ValueError, match=r"manifest.json.*interferer.*save_interferer"):
        RandomChunkDataset(manifest, crop_sec=1.0)


def fake_librispeech(real_audio_dir, root):
    """LibriSpeech layout from the real recordings (3 s each), speaker-disjoint splits."""
    layout = {
        "train-clean-100": ("367", "533"),
        "dev-clean": ("1998", "1688"),
        "test-clean": ("2033", "2412"),
    }
    for split, speakers in layout.items():
        for speaker in speakers:
            files = sorted((real_audio_dir / "speech").glob(f"libri_{speaker}_*.wav"))[:3]
            for path in files:
                chapter, utt = path.stem.split("_")[2].split("-")
                samples, sr = read_audio(path)
                out = (
                    root
                    / "LibriSpeech"
                    / split
                    / speaker
                    / chapter
                    / f"{speaker}-{chapter}-{utt}.flac"
                )
                out.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(out), samples[: 3 * sr], sr)


def test_prepared_8khz_sets_sum_to_the_mixture(real_audio_dir, tmp_path):
    fake_librispeech(real_audio_dir, tmp_path / "data")
    hparams = {
        "data_folder": tmp_path / "data",
        "prep_folder": tmp_path / "prep",
        "skip_prep": False,
        "librispeech_splits": ["train-clean-100", "dev-clean", "test-clean"],
        "valid_ratio": 0.1,
        "test_ratio": 0.1,
        "num_train_mixtures": 3,
        "num_valid_examples": 2,
        "num_test_examples": 2,
        "data_seed": 7,
        "sample_rate": 8000,
        "triplet_maker": functools.partial(
            TripletMaker.from_manifests, sr=8000, tir_db_range=[-5.0, 5.0]
        ),
        "noise": False,
        "prep_workers": 1,
    }
    manifests = prepare_separation_data(hparams)
    test = whole_utterance_dataset(manifests["test"], sr=8000)
    for index in range(len(test)):
        item = test[index]
        assert abs(item["mixture"].numel() - 3 * 8000) <= 1  # whole (3-s) utterances, at 8 kHz
        # The written sources are the mixture's exact parts (16-bit grid).
        assert torch.allclose(item["s1"] + item["s2"], item["mixture"], atol=1e-6)
        level = 10 * math.log10(float(item["s1"].square().sum() / item["s2"].square().sum()))
        assert -12 < level < 12 and -5 <= item["tir_db"] <= 5
    train = RandomChunkDataset(manifests["train"], crop_sec=1.0, sr=8000)
    assert len(train) == 3 and train[0]["s2"].shape == (8000,)
