"""Enhance audio files with a trained run: ``python -m custom_modules.enhance``.

Usage::

    python -m custom_modules.enhance --run results/unet_tcm_cpu/1234 \\
        --input noisy.wav|noisy_folder/ --output enhanced/
    python -m custom_modules.enhance --model pretrained/unet_tcm --input ... --output ...

* Model: ``--run``: the best checkpoint of the run folder by the recipe's
  ``checkpoint_key`` (see :mod:`custom_modules.inference.run_loading` for what is
  loaded and which recipes are supported); ``--model``: a pretrained folder
  (``python -m custom_modules.export``) of an enhancement model, run through its
  SpeechBrain interface's ``enhance_batch`` (so spectral masking works too).
* Inputs: one audio file, or every ``.wav``/``.flac`` file under a folder
  (recursively; names starting with ``.`` are skipped, they are temporary
  files of interrupted writes; so is the output folder if it lies inside the
  input folder). Multichannel files: channel 0 is enhanced (the same policy as
  data preparation; a mean of microphones that are not time-aligned would
  comb-filter the speech). The channel count is printed.
* Any sample rate is resampled to the model's rate (16 kHz for our recipes)
  with ``scipy.signal.resample_poly``; outputs are written at that rate as
  16-bit PCM WAV, ``<output>/<path relative to the input folder>.wav``.
* Long files, bounded memory (:mod:`custom_modules.inference.chunked_audio`): the input
  is read and resampled block by block (each block with a margin covering the
  resampling filter, so the result equals resampling the whole file to float
  rounding) and enhanced in chunks
  of ``--chunk_sec`` seconds overlapping by ``--overlap_sec``, crossfaded with
  complementary windows (``fade_in + fade_out = 1``). Chunking, not a
  streaming state, keeps this generic: any waveform-in/waveform-out model
  works, and peak memory is set by the chunk length, not the file length.
  Chunk hops are multiples of the model's ``hop_length`` (if it has one), so
  every chunk's STFT frames fall on the whole-file frame grid.

  - Models without a ``lookahead`` attribute: raised-cosine crossfade over
    the whole overlap.
  - Causal models with a ``lookahead`` attribute (``ComplexSpectralMapping``:
    output sample ``t`` depends on inputs up to ``t + lookahead``): the later
    chunk takes over through a 20 ms ramp that ends ``lookahead`` samples
    before the overlap ends, so it has ``overlap - lookahead - 20 ms`` of
    past. When that covers the model's temporal receptive field the output
    equals whole-file processing to float precision: the UNet-TCM's field is
    124 frames (1.26 s) with ``unet_cpu.yaml`` and 504 frames (5.06 s) with
    ``unet.yaml``. Below that, the later chunk starts with less memory than it
    would have had (as at the start of a file); measured on 60 s of real
    speech with the ``unet_cpu.yaml`` architecture (random weights), chunked
    and whole-file outputs agree to 50 dB SNR with the default 1 s overlap
    and to float precision with 2 s.
  - The non-causal Denoising WaveNet (``DenoisingWaveNet``) has a
    ``lookahead`` too: half its receptive field, in the future and in the
    past. The same late ramp then gives the later chunk
    ``overlap - lookahead - 20 ms`` of past, which covers that half whenever
    ``overlap >= 2 * lookahead + 20 ms`` (0.40 s with ``wavenet.yaml``, 0.15 s
    with ``wavenet_cpu.yaml``): chunked output equals whole-file output to
    float precision with the default 1 s overlap. Inside each chunk the
    model itself slides fixed-size fragments (bounded memory, see
    :mod:`custom_modules.models.denoising_wavenet`).

* No clipping: the enhanced signal is first written as float32 to an
  anonymous temporary file next to the output, then converted to PCM; if its
  peak exceeds ``0.999`` full scale, the whole file is scaled down once
  (a single gain, no limiter) and the gain is printed in dB.
* Printed per file: duration, processing time, real-time factor
  (processing time / audio duration, everything included: reading,
  resampling, model, writing) and the gain applied; then a total. A file
  that fails is reported with its error and the others are still processed;
  the exit status is then 1. A WAV holding fewer frames than its header
  declares (an interrupted copy) fails naming both counts, and a model output
  with NaN or Inf fails its file (nothing is written for it).
* Before the model is loaded: the inputs are listed and the output folder is
  checked to be writable. Errors that stop everything (no input, unwritable
  output, a run folder that cannot be loaded) are one line, ``error: ...``,
  exit status 1; ``--verbose`` shows the traceback.
* Security: ``--run`` and ``--model`` execute the folder's ``hyperparams.yaml`` (HyperPyYAML
  constructs arbitrary objects, see :mod:`custom_modules.inference.run_loading`): use
  only folders you trust.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from custom_modules.audio.files import AUDIO_EXTENSIONS, AudioFileError, open_audio_writer
from custom_modules.audio.levels import PEAK_LIMIT, peak_gain
from custom_modules.inference.chunked_audio import ResampledReader, enhance_in_chunks

CAUSAL_RAMP_SEC = 0.02  # crossfade ramp between chunks of a causal model


# Past input a level-normalised model still weighs after this many time constants: e^-20.
LEVEL_MEMORY_TIME_CONSTANTS = 20.0
# Overlap kept on top of that memory (the TCM receptive field: 1.26 s for unet_cpu.yaml).
RECEPTIVE_MARGIN_SEC = 1.5


def model_memory_seconds(model, sample_rate: int) -> float:
    """How much past input a chunk needs so that it matches whole-file processing (s).

    ``ComplexSpectralMapping(level_normalization=True)`` divides by a running
    level that forgets exponentially: after ``LEVEL_MEMORY_TIME_CONSTANTS``
    time constants the older input weighs e^-20. Other models: 0 (the overlap
    given on the command line is used as is).
    """
    if not getattr(model, "level_normalization", False):
        return 0.0
    time_constant_frames = -1.0 / math.log(model.norm_decay)
    seconds = LEVEL_MEMORY_TIME_CONSTANTS * time_constant_frames * model.hop_length / sample_rate
    return seconds + RECEPTIVE_MARGIN_SEC


def model_processor(model, device="cpu"):
    """Wrap a waveform model ``(batch, samples) -> (batch, samples)`` as array -> array."""

    def process(samples: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            waveform = torch.from_numpy(samples).to(device).unsqueeze(0)
            return model(waveform)[0].float().cpu().numpy()

    return process


def interface_processor(interface):
    """Wrap a SpeechBrain enhancement interface's ``enhance_batch`` as array -> array."""

    def process(samples: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            waveform = torch.from_numpy(samples).unsqueeze(0)
            return interface.enhance_batch(waveform, lengths=torch.ones(1))[0].float().cpu().numpy()

    return process


def check_waveform_model(process, sample_rate: int) -> None:
    """Raise ``ValueError`` unless ``process`` maps 0.1 s of audio to as many samples.

    A recipe whose ``model`` works on features (e.g. ``recipes/spectral_mask``,
    whose ``MaskNet`` returns a mask) fails here with a clear message instead
    of on every file.

    Example
    -------
    >>> check_waveform_model(lambda x: 0.5 * x, 16000)
    >>> check_waveform_model(lambda x: x[::2], 16000)
    Traceback (most recent call last):
    ...
    ValueError: the model is not waveform-in/waveform-out: 1600 samples gave shape (800,)
    """
    probe = np.zeros(max(1, sample_rate // 10), dtype=np.float32)
    try:
        shape = np.shape(process(probe))
    except Exception as err:  # any failure means the model does not take a waveform
        raise ValueError(
            f"the model is not waveform-in/waveform-out: {len(probe)} samples raised "
            f"{type(err).__name__}: {err}"
        ) from err
    if shape != probe.shape:
        raise ValueError(
            f"the model is not waveform-in/waveform-out: {len(probe)} samples gave shape {shape}"
        )


@dataclass
class FileReport:
    """What :func:`enhance_file` did to one file."""

    input: Path
    output: Path
    duration: float  # seconds of input audio
    source_sr: int
    num_channels: int
    seconds: float  # wall-clock processing time
    peak: float  # output peak before the gain
    gain_db: float  # 0.0 when the output needed no scaling

    @property
    def rtf(self) -> float:
        """Real-time factor: processing time / audio duration."""
        return self.seconds / self.duration

    def describe(self, sample_rate: int) -> str:
        """One printable line."""
        fmt = f"{self.source_sr} Hz" + (
            f" -> {sample_rate} Hz" if self.source_sr != sample_rate else ""
        )
        if self.num_channels > 1:
            fmt += f", channel 0 of {self.num_channels}"
        gain = f"gain {self.gain_db:+.2f} dB"
        if self.gain_db < 0:
            gain += f" (peak {self.peak:.3f} scaled to {PEAK_LIMIT})"
        return (
            f"{self.input}: {self.duration:.2f} s ({fmt}), {self.seconds:.2f} s, "
            f"RTF {self.rtf:.3f}, {gain} -> {self.output}"
        )


def enhance_file(
    process,
    input_path,
    output_path,
    sample_rate=16000,
    chunk_sec=10.0,
    overlap_sec=1.0,
    hop_multiple=1,
    lookahead=None,
) -> FileReport:
    """Enhance one file into a 16-bit PCM WAV at ``sample_rate`` (see the module docstring).

    Arguments
    ---------
    process : callable
        float32 array -> enhanced array of the same length (:func:`model_processor`).
    input_path, output_path : str or Path
        Audio in; WAV out (written atomically, parent folders created).
    sample_rate : int
        Model and output rate.
    chunk_sec, overlap_sec : float
        Chunk length and crossfade overlap (``overlap_sec <= chunk_sec / 2``).
    hop_multiple : int
        Chunk hops are rounded down to a multiple of this (the model's STFT hop).
    lookahead : int, optional
        For models with a finite lookahead (causal UNet-TCM, the non-causal
        WaveNet), that lookahead in samples: the crossfade becomes a 20 ms ramp
        placed late in the overlap (:func:`crossfade_windows`).

    Returns
    -------
    FileReport

    Raises
    ------
    AudioFileError
        Unreadable, empty, truncated or non-finite input (the path is named).
    """
    begin = time.perf_counter()
    input_path, output_path = Path(input_path), Path(output_path)
    if not (chunk_sec > 0 and 0 <= 2 * overlap_sec <= chunk_sec):
        raise ValueError(
            f"need chunk_sec > 0 and 0 <= overlap_sec <= chunk_sec / 2, got "
            f"{chunk_sec} and {overlap_sec}"
        )
    overlap = round(overlap_sec * sample_rate)
    hop = round(chunk_sec * sample_rate) - overlap
    # Round the hop to the STFT grid, never below the overlap (at most two chunks overlap).
    hop = max(hop // hop_multiple, -(-overlap // hop_multiple), 1) * hop_multiple
    output_path.parent.mkdir(parents=True, exist_ok=True)
    # Anonymous temporary file: removed by the OS whatever happens.
    with (
        ResampledReader(input_path, sample_rate) as reader,
        tempfile.TemporaryFile(dir=output_path.parent) as scratch,
    ):

        def write_float(block):
            scratch.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())

        try:
            peak = enhance_in_chunks(
                process,
                reader.read,
                reader.num_samples,
                write_float,
                chunk=hop + overlap,
                overlap=overlap,
                lookahead=lookahead,
                ramp=round(CAUSAL_RAMP_SEC * sample_rate),
            )
        except ValueError as err:
            raise AudioFileError(f"{input_path}: {err}") from err
        gain = peak_gain(peak)
        scratch.seek(0)
        block_bytes = 4 * (hop + overlap)
        with open_audio_writer(output_path, sample_rate, subtype="PCM_16") as out:
            while data := scratch.read(block_bytes):
                out.write(np.frombuffer(data, dtype=np.float32) * np.float32(gain))
        report = FileReport(
            input=input_path,
            output=output_path,
            duration=reader.duration,
            source_sr=reader.source_sr,
            num_channels=reader.num_channels,
            seconds=0.0,
            peak=peak,
            gain_db=20 * math.log10(gain),
        )
    report.seconds = time.perf_counter() - begin
    return report


def list_jobs(input_path, output_folder) -> list:
    """(input, output) pairs: one file, or every audio file under a folder.

    One input file with an ``output_folder`` ending in ``.wav`` (and not an
    existing folder) is written to that file; otherwise outputs go into the
    folder under their input's name.

    Raises
    ------
    FileNotFoundError
        ``input_path`` does not exist or the folder has no audio file.
    ValueError
        Two inputs would write the same output (``a.wav`` and ``a.flac``) or an
        output would overwrite its input.
    """
    input_path, output_folder = Path(input_path), Path(output_folder)
    if input_path.is_file():
        if names_wav_file(output_folder):
            jobs = [(input_path, output_folder)]
        else:
            jobs = [(input_path, output_folder / f"{input_path.stem}.wav")]
    elif input_path.is_dir():
        skip = output_folder.resolve()
        jobs = []
        for path in sorted(input_path.rglob("*")):
            relative = path.relative_to(input_path)
            if (
                path.suffix.lower() not in AUDIO_EXTENSIONS
                or any(part.startswith(".") for part in relative.parts)
                or not path.is_file()
                or path.resolve().is_relative_to(skip)
            ):
                continue
            jobs.append((path, output_folder / relative.with_suffix(".wav")))
        if not jobs:
            raise FileNotFoundError(f"{input_path}: no {'/'.join(AUDIO_EXTENSIONS)} file found")
    else:
        raise FileNotFoundError(f"{input_path}: no such file or folder")
    seen = {}
    for source, target in jobs:
        key = target.resolve()
        if key == source.resolve():
            raise ValueError(
                f"{source}: the output would overwrite the input; choose another --output"
            )
        if key in seen:
            raise ValueError(f"{seen[key]} and {source} would both be written to {target}")
        seen[key] = source
    return jobs


def names_wav_file(output) -> bool:
    """Whether ``--output`` names a WAV file rather than a folder."""
    output = Path(output)
    return output.suffix.lower() == ".wav" and not output.is_dir()


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (``--help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m custom_modules.enhance",
        description="Enhance audio files with the best checkpoint of a training run, or a "
        "pretrained folder (python -m custom_modules.export). "
        "Inputs at any rate are resampled to the model rate (16 kHz); multichannel "
        "files: channel 0. Outputs: 16-bit PCM WAV at the model rate, scaled down "
        "(never clipped) when the peak exceeds full scale.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="output folder of a training run")
    source.add_argument("--model", help="pretrained folder (python -m custom_modules.export)")
    parser.add_argument("--input", required=True, help="audio file, or folder (recursive)")
    parser.add_argument(
        "--output",
        required=True,
        help="folder for the enhanced WAVs, or a .wav file when --input is one file",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--chunk_sec", type=float, default=10.0, help="chunk length (s)")
    parser.add_argument(
        "--overlap_sec", type=float, default=1.0, help="overlap of consecutive chunks (s)"
    )
    parser.add_argument("--num_threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--checkpoint_key",
        help="with --run: meta key whose highest value picks the checkpoint "
        "(default: the recipe's checkpoint_key)",
    )
    parser.add_argument(
        "--skip_existing", action="store_true", help="leave outputs that already exist"
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    return parser


def check_writable_folder(folder) -> None:
    """Create ``folder`` if needed and raise ``OSError`` naming it when files cannot be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OSError(f"{folder}: output folder not writable ({err.strerror or err})") from err


def load_enhancer(args):
    """``(network, sample rate, description, process)`` of ``--run`` or ``--model``."""
    from custom_modules.inference.pretrained import (
        PretrainedFolderError,
        load_pretrained,
        network_of,
    )
    from custom_modules.inference.run_loading import load_run

    if args.run:
        run = load_run(args.run, device=args.device, checkpoint_key=args.checkpoint_key)
        return run.model, run.sample_rate, run.describe(), model_processor(run.model, args.device)
    interface = load_pretrained(args.model, device=args.device)
    if not hasattr(interface, "enhance_batch"):
        raise PretrainedFolderError(
            f"{args.model}: a {type(interface).__name__} model, not an enhancement one "
            "(use its own interface, see the folder's README.md)"
        )
    description = f"{args.model} ({type(interface).__module__}.{type(interface).__name__})"
    return (
        network_of(interface),
        int(interface.hparams.sample_rate),
        description,
        interface_processor(interface),
    )


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0, or 1 if anything failed)."""
    # Imported here so that ``--help`` and argument errors answer without loading SpeechBrain.
    from custom_modules.inference.pretrained import PretrainedFolderError
    from custom_modules.inference.run_loading import RunFolderError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.chunk_sec > 0 or not 0 <= 2 * args.overlap_sec <= args.chunk_sec:
        parser.error("need chunk_sec > 0 and 0 <= overlap_sec <= chunk_sec / 2")
    if args.num_threads is not None:
        if args.num_threads < 1:
            parser.error("--num_threads must be at least 1")
        torch.set_num_threads(args.num_threads)
    try:
        jobs = list_jobs(args.input, args.output)
        # list_jobs decided whether --output names the one output file
        one_file = len(jobs) == 1 and jobs[0][1] == Path(args.output)
        # before the (slow) model load
        check_writable_folder(Path(args.output).parent if one_file else args.output)
        if args.checkpoint_key and args.model:
            raise ValueError("--checkpoint_key applies to --run only")
        model, sample_rate, description, process = load_enhancer(args)
    except (RunFolderError, PretrainedFolderError, OSError, ValueError) as err:
        if args.verbose:
            traceback.print_exception(err)
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    memory = model_memory_seconds(model, sample_rate)
    if memory > args.overlap_sec:
        # The running level remembers further back than the overlap: widen it (and the
        # chunks) so chunked output still equals whole-file output.
        print(
            f"Model with a running level (memory {memory:g} s): overlap raised from "
            f"{args.overlap_sec:g} s to {memory:g} s, chunks to at least {3 * memory:g} s"
        )
        args.overlap_sec = memory
        args.chunk_sec = max(args.chunk_sec, 3 * memory)
    hop_multiple = int(getattr(model, "hop_length", 1))
    lookahead = getattr(model, "lookahead", None)
    fade = "full-length crossfade" if lookahead is None else "late 20 ms ramp (lookahead)"
    print(f"Model: {description}")
    print(
        f"{len(jobs)} file(s); chunks of {args.chunk_sec:g} s overlapping by "
        f"{args.overlap_sec:g} s ({fade}), device {args.device}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    try:
        check_waveform_model(process, sample_rate)
    except ValueError as err:
        print(
            f"error: {args.run or args.model}: {err} (supported: recipes whose modules.model "
            "maps (batch, samples) to (batch, samples), e.g. unet_tcm, dcunet, "
            "denoising_wavenet, and pretrained "
            "folders of enhancement models)",
            file=sys.stderr,
        )
        return 1
    total_audio = total_seconds = 0.0
    failures, skipped = [], 0
    for source, target in jobs:
        if args.skip_existing and target.exists():
            print(f"{source}: skipped, {target} exists")
            skipped += 1
            continue
        try:
            report = enhance_file(
                process,
                source,
                target,
                sample_rate=sample_rate,
                chunk_sec=args.chunk_sec,
                overlap_sec=args.overlap_sec,
                hop_multiple=hop_multiple,
                lookahead=None if lookahead is None else int(lookahead),
            )
        except (AudioFileError, OSError, RuntimeError, ValueError) as err:
            if args.verbose:
                traceback.print_exception(err)
            print(f"FAILED {source}: {err}", file=sys.stderr)
            failures.append(source)
            continue
        print(report.describe(sample_rate), flush=True)
        total_audio += report.duration
        total_seconds += report.seconds
    done = len(jobs) - len(failures) - skipped
    rtf = f"RTF {total_seconds / total_audio:.3f}" if total_audio > 0 else "RTF n/a"
    print(
        f"Total: {done} file(s) enhanced, {total_audio:.2f} s of audio in {total_seconds:.2f} s, "
        f"{rtf}"
        + (f"; {skipped} skipped" if skipped else "")
        + (f"; {len(failures)} failed" if failures else "")
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
