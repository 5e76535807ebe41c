"""Where is speech lost and noise left? Band levels of a run's estimates against the targets.

For every mixture of a fixed set (``manifest.json`` with ``mixture/`` and
``target/`` from ``write_fixed_set``), the run's best checkpoint enhances the
whole utterance; the frames of the *target* are sorted by their level below the
utterance's loudest frame (strong: within 20 dB, weak: 20-40 dB, quiet: further)
and, per frequency band, the estimate's energy is compared with the target's
(and the mixture's, for reference). Negative in strong frames: speech removed;
positive in weak and quiet frames: noise (or smearing) left where speech is
faint or absent, what PESQ punishes most.

Run::

    python -m scripts.band_levels --test_set results/real_unet_tcm/prepared/fixed_test \\
        --run results/real_unet_tcm

Prints a Markdown table, mean over utterances of the per-utterance ratio in dB,
per speech condition (dry / reverberant) when the manifest tells (``speech_rir``),
read as ``benchmarks.quality`` reads the set.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

BANDS_HZ = {"0-2k": (0, 2000), "2-4k": (2000, 4000), "4-8k": (4000, None)}
FRAME_CLASSES_DB = {"strong": (0, 20), "weak": (20, 40), "quiet": (40, None)}
N_FFT = 512
HOP = 256
MIN_FRAMES = 3  # fewer frames of a class in an utterance: that class is left out for it


def power_spectrogram(signal: np.ndarray) -> np.ndarray:
    """(frames, N_FFT // 2 + 1) power of Hann-windowed frames (no padding).

    Example
    -------
    >>> power_spectrogram(np.ones(1024)).shape
    (3, 257)
    """
    frames = np.lib.stride_tricks.sliding_window_view(signal, N_FFT)[::HOP]
    return np.abs(np.fft.rfft(frames * np.hanning(N_FFT), axis=1)) ** 2


def band_level_differences(estimate, target, sample_rate: int, target_power=None) -> dict:
    """``{(frame class, band): 10 log10(E_estimate / E_target)}`` over the class's frames.

    Arguments
    ---------
    estimate, target : np.ndarray
        Waveforms (samples,) of the same length, at least ``N_FFT`` samples.
    sample_rate : int
        Their rate (bands are in Hz).
    target_power : np.ndarray, optional
        ``power_spectrogram(target)``, when several signals are compared with one target.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> target = rng.standard_normal(16000) * np.repeat([1.0, 0.03, 0.001, 1.0], 4000)
    >>> levels = band_level_differences(0.5 * target, target, 16000)
    >>> round(levels[("strong", "0-2k")], 2), round(levels[("weak", "4-8k")], 2)
    (-6.02, -6.02)
    """
    if estimate.shape != target.shape or estimate.ndim != 1 or len(target) < N_FFT:
        raise ValueError(
            f"need two waveforms of the same length >= {N_FFT}, "
            f"got {estimate.shape} and {target.shape}"
        )
    est_power = power_spectrogram(estimate)
    ref_power = power_spectrogram(target) if target_power is None else target_power
    freqs = np.fft.rfftfreq(N_FFT, 1 / sample_rate)
    frame_db = 10 * np.log10(ref_power.sum(axis=1) + 1e-20)
    below_max = frame_db.max() - frame_db
    levels = {}
    for class_name, (low, high) in FRAME_CLASSES_DB.items():
        frames = (below_max >= low) & (below_max < (np.inf if high is None else high))
        if frames.sum() < MIN_FRAMES:
            continue
        for band_name, (f_low, f_high) in BANDS_HZ.items():
            bins = (freqs >= f_low) & (freqs < (np.inf if f_high is None else f_high))
            ref_energy = ref_power[frames][:, bins].sum()
            est_energy = est_power[frames][:, bins].sum()
            levels[(class_name, band_name)] = float(
                10 * np.log10((est_energy + 1e-20) / (ref_energy + 1e-20))
            )
    return levels


def main(argv=None) -> int:
    """Command line: print the table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test_set", required=True, help="fixed set folder (manifest.json)")
    parser.add_argument("--run", required=True, help="training run folder (best checkpoint)")
    args = parser.parse_args(argv)
    from benchmarks.quality import SR, load_test_set
    from custom_modules.inference.run_loading import load_run

    root = Path(args.test_set)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        print(f"error: {manifest_path}: no fixed-set manifest", file=sys.stderr)
        return 1
    utterances = load_test_set(root)
    run = load_run(args.run)
    model = run.model.eval()
    results = {}
    for utterance in utterances:
        mixture, target = utterance["mixture"], utterance["target"]
        with torch.no_grad():
            estimate = model(torch.from_numpy(mixture)[None])[0].numpy()[: len(target)]
        condition = utterance["condition"] or "all"
        target_power = power_spectrogram(target)
        est = band_level_differences(estimate, target, SR, target_power)
        mix = band_level_differences(mixture, target, SR, target_power)
        for cell, value in est.items():
            results.setdefault((condition, *cell), []).append((value, mix[cell]))
    print(f"{run.describe()}, {len(utterances)} utterances of {root}")
    print(
        "| speech | frames | band | estimate − target (dB) | mixture − target (dB) | utterances |"
    )
    print("|---|---|---|---|---|---|")
    order = {name: index for index, name in enumerate(FRAME_CLASSES_DB)}
    for (condition, frames, band), values in sorted(
        results.items(), key=lambda item: (item[0][0], order[item[0][1]], item[0][2])
    ):
        values = np.array(values)
        print(
            f"| {condition} | {frames} | {band} | {values[:, 0].mean():+.1f} | "
            f"{values[:, 1].mean():+.1f} | {len(values)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
