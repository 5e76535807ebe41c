"""Target speaker extraction with a trained SpEx+ model (``recipes/spex_plus`` ``test.py`` and ``infer.py``).

Command line (``recipes/spex_plus/infer.py`` takes the same arguments)::

    python -m custom_modules.inference.speaker_extraction --run results/spex_plus_cpu/1234 \
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
  memory, see Chunking below); the embedding is computed once.

Functions
---------

* :func:`load_for_model`: channel 0 of any audio file, resampled to the
  model's rate with ``torchaudio.functional.resample``.
* :func:`extract_whole` / :func:`extract_in_chunks`: the target speaker's
  speech from a mixture and a speaker embedding (``SpexPlus.embed``), over the
  whole utterance at once or in chunks. The embedding is computed once from
  the reference and reused for every chunk.
* :func:`chunked_evaluation`: SI-SDR of chunked and whole-utterance
  extraction on the same triplets.
* :func:`extract_file`: one mixture file and one enrolment file in, the
  extracted speech written at the mixture's rate (peak-limited, never clipped).

Chunking
--------
Chunks of ``chunk`` samples overlap by ``overlap`` samples; in each overlap
the earlier chunk fades out and the later one fades in with complementary
raised-cosine windows (:func:`custom_modules.inference.enhance.enhance_in_chunks`).
Both lengths are rounded down to multiples of the encoder stride so that
every chunk's frames fall on the whole-utterance frame grid. A chunk differs
from whole-utterance processing because (1) the non-causal TCN sees no
context beyond the chunk (receptive field of the paper configuration: 4
stacks x (1 + 2 + ... + 128) = 1020 frames of 20 samples on each side, 1.28 s
at 16 kHz) and (2) the gLN statistics are those of the chunk. SI-SDR is
scale-invariant, but a chunk's output level may differ from its
neighbours': the measured quality difference includes that.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch
import torchaudio

from custom_modules.audio.files import AudioFileError, read_audio_info, write_audio
from custom_modules.audio.files import read_audio as read_channel
from custom_modules.audio.levels import peak_gain
from custom_modules.evaluation.metrics import si_snr
from custom_modules.inference.enhance import enhance_in_chunks
from custom_modules.inference.run_loading import RunFolderError, load_run


def load_for_model(path, sr):
    """Channel 0 of ``path`` at ``sr`` Hz as float32 numpy.

    Returns
    -------
    (numpy.ndarray, int, int)
        Samples at ``sr``, the file's own rate and its channel count.

    Example
    -------
    >>> import tempfile, soundfile as sf
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "a.wav"
    >>> sf.write(path, np.zeros((8000, 2)), 8000)
    >>> samples, file_sr, channels = load_for_model(path, 16000)
    >>> samples.shape, file_sr, channels
    ((16000,), 8000, 2)
    """
    channels = read_audio_info(path).channels
    samples, file_sr = read_channel(path)
    if file_sr != sr:
        resampled = torchaudio.functional.resample(torch.from_numpy(samples), file_sr, sr)
        samples = resampled.numpy().astype(np.float32)
    return samples, file_sr, channels


def _to_model(model, samples):
    device = next(model.parameters()).device
    return torch.as_tensor(np.asarray(samples, dtype=np.float32), device=device).unsqueeze(0)


def embed_reference(model, reference):
    """Speaker embedding (1, D) of a 1-D reference, with a clear error when too short."""
    if len(reference) < model.min_reference_samples:
        raise ValueError(
            f"the reference has {len(reference)} samples; SpEx+ needs at least "
            f"{model.min_reference_samples} (at the model's rate)"
        )
    with torch.inference_mode():
        return model.embed(_to_model(model, reference))


def extract_whole(model, mixture, embedding):
    """Short-window estimate s1 of a 1-D mixture, processed at once (float32 numpy)."""
    with torch.inference_mode():
        return model.extract(_to_model(model, mixture), embedding)[0, 0].float().cpu().numpy()


def chunk_lengths(model, chunk_sec, overlap_sec, sr):
    """(chunk, overlap) in samples, multiples of the encoder stride; overlap <= chunk / 2.

    Example
    -------
    >>> from custom_modules.models.spex_plus import SpexPlus
    >>> chunk_lengths(SpexPlus(num_filters=4, bottleneck_channels=4, hidden_channels=4,
    ...               embedding_dim=4, speaker_hidden_channels=4,
    ...               speaker_block_channels=(4,), num_stacks=1, blocks_per_stack=1),
    ...               1.0, 0.25, 16000)
    (16000, 4000)
    """
    stride = model.encoder.stride
    chunk = int(chunk_sec * sr) // stride * stride
    overlap = int(overlap_sec * sr) // stride * stride
    if chunk <= 0 or overlap < 0 or 2 * overlap > chunk:
        raise ValueError(
            f"need chunk_sec > 0 and 0 <= overlap_sec <= chunk_sec / 2 (got {chunk_sec}, "
            f"{overlap_sec}; {chunk} and {overlap} samples after rounding to the stride {stride})"
        )
    return chunk, overlap


def extract_in_chunks(model, mixture, embedding, chunk, overlap):
    """s1 of a 1-D mixture processed in crossfaded chunks (see the module docstring).

    Arguments
    ---------
    model : SpexPlus
        In eval mode.
    mixture : numpy.ndarray
        (samples,) at the model's rate.
    embedding : torch.Tensor
        (1, D) from :func:`embed_reference`.
    chunk, overlap : int
        In samples (see :func:`chunk_lengths`).

    Returns
    -------
    numpy.ndarray
        (samples,) float32.
    """
    mixture = np.asarray(mixture, dtype=np.float32)
    blocks = []
    enhance_in_chunks(
        process=lambda segment: extract_whole(model, segment, embedding),
        read=lambda start, stop: mixture[start:stop],
        num_samples=len(mixture),
        write=blocks.append,
        chunk=chunk,
        overlap=overlap,
    )
    return np.concatenate(blocks)


def _mean(values):
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def chunked_evaluation(model, dataset, sr, chunk_sec, overlap_sec):
    """SI-SDR of whole-utterance vs chunked extraction on every item of ``dataset``.

    Arguments
    ---------
    model : SpexPlus
        In eval mode.
    dataset : iterable of dict
        Items with ``id``, ``mixture``, ``reference``, ``target`` (1-D tensors at ``sr``).
    sr : int
        The model's rate.
    chunk_sec, overlap_sec : float
        Chunk length and overlap.

    Returns
    -------
    (list of dict, dict)
        Per-utterance rows and the summary (means, chunk settings).
    """
    chunk, overlap = chunk_lengths(model, chunk_sec, overlap_sec, sr)
    rows = []
    for item in dataset:
        mixture = item["mixture"].numpy()
        target = item["target"].numpy()
        embedding = embed_reference(model, item["reference"].numpy())
        whole = extract_whole(model, mixture, embedding)
        chunked = extract_in_chunks(model, mixture, embedding, chunk, overlap)
        row = {
            "id": item["id"],
            "duration_sec": len(mixture) / sr,
            "num_chunks": 1 + max(0, math.ceil((len(mixture) - chunk) / (chunk - overlap))),
            "si_sdr_mixture": si_snr(mixture, target),
            "si_sdr_whole": si_snr(whole, target),
            "si_sdr_chunked": si_snr(chunked, target),
            # How close chunked processing is to whole-utterance processing.
            "si_sdr_chunked_vs_whole": si_snr(chunked, whole),
        }
        row["si_sdri_whole"] = row["si_sdr_whole"] - row["si_sdr_mixture"]
        row["si_sdri_chunked"] = row["si_sdr_chunked"] - row["si_sdr_mixture"]
        rows.append(row)
    summary = {
        "num_utterances": len(rows),
        "chunk_sec": chunk / sr,
        "overlap_sec": overlap / sr,
        "utterances_longer_than_a_chunk": sum(r["num_chunks"] > 1 for r in rows),
    }
    for key in rows[0] if rows else ():
        if key.startswith("si_sdr"):
            summary[key] = _mean([r[key] for r in rows])
    summary["chunked_minus_whole_db"] = summary.get("si_sdr_chunked", math.nan) - summary.get(
        "si_sdr_whole", math.nan
    )
    return rows, summary


def extract_file(run, mix_path, ref_path, out_path, chunk_sec=None, overlap_sec=0.5):
    """Extract the speaker of ``ref_path`` from ``mix_path`` into ``out_path``; returns a report dict.

    ``run`` is a loaded run (:func:`custom_modules.inference.run_loading.load_run`).
    The output is at the mixture's rate, scaled down once when its peak exceeds
    :data:`custom_modules.audio.levels.PEAK_LIMIT` (``gain_db`` in the report).
    """
    start = time.perf_counter()
    model, sr = run.model, run.sample_rate
    mixture, mix_sr, mix_channels = load_for_model(mix_path, sr)
    reference, ref_sr, _ = load_for_model(ref_path, sr)
    embedding = embed_reference(model, reference)
    if chunk_sec:
        chunk, overlap = chunk_lengths(model, chunk_sec, overlap_sec, sr)
        estimate = extract_in_chunks(model, mixture, embedding, chunk, overlap)
    else:
        estimate = extract_whole(model, mixture, embedding)
    if not np.all(np.isfinite(estimate)):
        raise ValueError(f"{mix_path}: the model output has NaN or Inf values")
    if mix_sr != sr:
        estimate = torchaudio.functional.resample(torch.from_numpy(estimate), sr, mix_sr).numpy()
    gain = peak_gain(float(np.max(np.abs(estimate))) if estimate.size else 0.0)
    gain_db = 0.0
    if gain < 1.0:
        gain_db = 20 * np.log10(gain)
        estimate = estimate * gain
    write_audio(out_path, estimate.astype(np.float32), mix_sr)
    seconds = time.perf_counter() - start
    return {
        "duration_sec": len(mixture) / sr,
        "mix_sr": mix_sr,
        "mix_channels": mix_channels,
        "ref_sr": ref_sr,
        "ref_sec": len(reference) / sr,
        "gain_db": gain_db,
        "seconds": seconds,
        "rtf": seconds / max(len(mixture) / sr, 1e-9),
    }


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
