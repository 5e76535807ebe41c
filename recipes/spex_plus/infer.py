#!/usr/bin/env python3
"""Extract a target speaker with a trained SpEx+ run: mixture + enrolment -> wav.

Usage::

    python recipes/spex_plus/infer.py --run results/spex_plus_cpu/1234 \
        --mix mixture.wav --ref enrolment.wav --out extracted.wav \
        [--chunk_sec 4 --chunk_overlap_sec 0.5] [--device cpu]

* Model: the best checkpoint (validation SI-SDR) of the run folder (the
  recipe's ``output_folder``), loaded by ``custom_modules.inference.run_loading``. The
  speaker-classification head is loaded but not used.
* Inputs: any format soundfile reads, any rate; channel 0 of multichannel
  files (the project's policy). Both are resampled to the model's rate
  (16 kHz) with ``torchaudio.functional.resample``. The enrolment must be at
  least ``model.min_reference_samples`` long (35 ms for the recipe's models;
  a few seconds of speech give a useful embedding).
* Output: the extracted speech resampled back to the mixture's rate, same
  length as the mixture, 16-bit PCM (written atomically). SpEx+ is trained
  with a scale-invariant loss, so the output level is the model's; it is
  scaled down once only if it would clip (the gain is printed).
* ``--chunk_sec``: process long mixtures in crossfaded chunks (bounded
  memory, see ``custom_modules/inference/speaker_extraction.py``); the embedding is computed once.
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run from a clone, uninstalled
from custom_modules.audio.files import AudioFileError  # noqa: E402
from custom_modules.inference.run_loading import RunFolderError, load_run  # noqa: E402
from custom_modules.inference.speaker_extraction import extract_file  # noqa: E402


def build_parser():
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Extract the enrolled speaker from a mixture with a trained SpEx+ run."
    )
    parser.add_argument("--run", required=True, help="output folder of a training run")
    parser.add_argument("--mix", required=True, help="mixture audio file")
    parser.add_argument("--ref", required=True, help="enrolment (reference) audio of the target")
    parser.add_argument("--out", required=True, help="output wav (at the mixture's rate)")
    parser.add_argument("--chunk_sec", type=float, help="process in chunks of this length")
    parser.add_argument("--chunk_overlap_sec", type=float, default=0.5, help="chunk overlap")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    return parser


def main(argv=None) -> int:
    """Command line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        run = load_run(args.run, device=args.device)
        report = extract_file(
            run, args.mix, args.ref, args.out, args.chunk_sec, args.chunk_overlap_sec
        )
    except (RunFolderError, AudioFileError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"model: {run.describe()}")
    channels = f", channel 0 of {report['mix_channels']}" if report["mix_channels"] > 1 else ""
    print(
        f"{args.mix} ({report['duration_sec']:.2f} s at {report['mix_sr']} Hz{channels}) + "
        f"{args.ref} ({report['ref_sec']:.2f} s at {report['ref_sr']} Hz) -> {args.out}"
    )
    gain = f", scaled by {report['gain_db']:.2f} dB to avoid clipping" if report["gain_db"] else ""
    print(f"processing {report['seconds']:.2f} s (real-time factor {report['rtf']:.3f}){gain}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
