"""Write a few example mixtures of the on-the-fly mixer, with spectrograms.

Prepares DNS-style manifests of ``--data_folder`` (skipped when done), draws
``--num_examples`` mixtures with the default PoCoNet-style settings (one per
``reverb_target`` in turn, so all four targets are shown) and writes, per
example, ``mixture.wav``, ``target.wav``, a spectrogram PNG and the metadata,
plus a RIR decay plot of one RIR.

Example
-------
``python -m custom_modules.data.mixer_demo --data_folder data/demo --out results/mixer_demo``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from custom_modules.audio.files import atomic_write_json, read_audio, write_audio
from custom_modules.audio.rir import plot_rir_decay
from custom_modules.data.mixing import REVERB_TARGETS, RandomMixtureSampler
from custom_modules.data.sampling import RirSampler, SignalSampler
from custom_modules.evaluation.plotting import save_spectrograms_png
from data_prepare.dns import prepare_dns


def write_examples(data_folder, out, num_examples=4, crop_sec=4.0, seed=0, sr=16000):
    """Write ``num_examples`` example mixtures into ``out``; return their folders."""
    out = Path(out)
    prep = out / "prepared"
    prepare_dns(data_folder, prep, sample_rate=sr)
    speech = SignalSampler.from_manifest(
        prep / "speech_train.json", data_root=data_folder, crop_size_sec=crop_sec, sr=sr
    )
    noise = SignalSampler.from_manifest(
        prep / "noise_train.json",
        data_root=data_folder,
        crop_size_sec=crop_sec,
        sr=sr,
        min_rms_db=-60,
    )
    rirs = RirSampler.from_manifest(prep / "rir_train.json", data_root=data_folder, sr=sr)
    seeds = np.random.SeedSequence(seed).spawn(num_examples)
    folders = []
    for i in range(num_examples):
        target_kind = REVERB_TARGETS[i % len(REVERB_TARGETS)]
        # Always reverberate the speech so the four target kinds differ visibly.
        mixer = RandomMixtureSampler(
            speech, noise, rirs, prob_rir_sig=1.0, reverb_target=target_kind, sr=sr, rng=seeds[i]
        )
        mixture, target, metadata = mixer.sampler(return_metadata=True)
        folder = out / f"example_{i}_{target_kind}"
        write_audio(folder / "mixture.wav", mixture, sr)
        write_audio(folder / "target.wav", target, sr)
        title = f"target={target_kind}, SNR {metadata['snr_db']:.1f} dB"
        save_spectrograms_png(
            folder / "spectrograms.png", {"mixture": mixture, "target": target}, sr=sr, title=title
        )
        atomic_write_json(folder / "metadata.json", metadata)
        folders.append(folder)
        print(f"{folder}: {title}")
    rir_path = rirs.paths[0]
    rir, _ = read_audio(rir_path, expected_sr=sr)
    plot_rir_decay(rir, sr, out / "rir_decay.png")
    print(f"RIR decay plot of {rir_path}: {out / 'rir_decay.png'}")
    return folders


def main(argv=None):
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_folder", required=True, help="DNS-style root (e.g. data/demo)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num_examples", type=int, default=4)
    parser.add_argument("--crop_sec", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_examples(args.data_folder, args.out, args.num_examples, args.crop_sec, args.seed)


if __name__ == "__main__":
    main()
