"""Stream audio through the UNet-TCM chunk by chunk: ``python -m custom_modules.streaming``.

Usage::

    # wav file -> wav file (latency removed: same length and timing as the input)
    python -m custom_modules.streaming --run results/unet_tcm_cpu/1234 \\
        --input noisy.wav --output enhanced.wav
    # raw 16-bit little-endian mono PCM at 16 kHz, stdin -> stdout (real-time path)
    arecord -f S16_LE -r 16000 -c 1 -t raw | \\
        python -m custom_modules.streaming --onnx model.onnx --input - --output - | \\
        aplay -f S16_LE -r 16000 -c 1 -t raw

* Model: ``--run`` (best checkpoint of a training run) or ``--model`` (a
  pretrained folder written by ``python -m custom_modules.export``), each with
  ``--backend eager``, ``onnx`` (exported in memory) or ``native`` (compiled C,
  the fastest; needs a C compiler on first use); or ``--onnx`` (a file written
  by ``python -m custom_modules.streaming.export``).
* Every input chunk (``chunk_size`` = 160 samples = 10 ms) is enhanced as soon
  as it is read, and written at once. Raw PCM output is the real-time stream:
  delayed by ``latency_samples`` (159) and followed by that many samples of
  tail, so it is ``latency_samples`` longer than the input (after padding the
  last partial chunk with zeros). A wav output drops the delay and is cut to
  the input length, so it lines up with the input (``--keep_latency`` keeps
  the raw stream instead).
* Wav input: any readable format at the model's rate (16 kHz; use
  ``python -m custom_modules.enhance`` to resample other rates); multichannel
  files give channel 0, as everywhere in this project. Memory stays bounded:
  the file is read and written block by block.
* Output samples beyond full scale are clipped (a stream cannot be rescaled
  afterwards); their count is reported. ``--subtype FLOAT`` writes a float wav
  instead.
* Finite output or an error: every output chunk is checked for NaN/Inf (a
  diverged checkpoint, an input far beyond full scale), whatever the backend.
  The first non-finite chunk stops the stream with an error naming the chunk
  and exit status 1; a wav output is written to a temporary file renamed into
  place only at the end, so nothing is left at ``--output``; on stdout nothing
  more is written.
* Errors (missing input, unwritable output, a run folder that cannot be
  loaded, bad options) are one line, ``error: ...``, exit status 1, and are
  checked before the model is loaded where possible; ``--verbose`` shows the
  traceback. ``--run`` and ``--model`` execute the folder's ``hyperparams.yaml``
  (HyperPyYAML constructs arbitrary objects): use only folders you trust.
* Printed to stderr: the model, the latency, and per-chunk processing time
  (median, p99, max) and the real-time factor.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from custom_modules.audio.files import check_writable_output, open_audio_writer, read_audio_info
from custom_modules.streaming.engine import BACKENDS, StreamingEnhancer

PCM_SCALE = 32768.0


class NonFiniteOutputError(ValueError):
    """The model produced NaN or Inf: the stream is stopped."""


def read_pcm_chunks(stream, chunk_size: int):
    """Chunks of ``chunk_size`` float32 samples from raw s16le ``stream``; the last one zero-padded.

    Yields (chunk, valid_samples). A trailing odd byte is reported and dropped.
    """
    chunk_bytes = 2 * chunk_size
    while True:
        data = bytearray()
        while len(data) < chunk_bytes:
            piece = stream.read(chunk_bytes - len(data))
            if not piece:
                break
            data += piece
        if len(data) % 2:
            print("warning: odd number of bytes on input; last byte dropped", file=sys.stderr)
            data = data[:-1]
        if not data:
            return
        samples = np.frombuffer(bytes(data), dtype="<i2").astype(np.float32) / PCM_SCALE
        valid = samples.size
        if valid < chunk_size:
            samples = np.pad(samples, (0, chunk_size - valid))
        yield samples, valid
        if valid < chunk_size:
            return


def read_wav_chunks(path, chunk_size: int, sample_rate: int):
    """Chunks of channel 0 of an audio file (the last one zero-padded), as ``read_pcm_chunks``."""
    info = read_audio_info(path, expected_sr=None)
    if info.samplerate != sample_rate:
        raise ValueError(
            f"{path}: sample rate {info.samplerate} Hz, the model runs at {sample_rate} Hz "
            "(python -m custom_modules.enhance resamples)"
        )
    with sf.SoundFile(str(path)) as handle:
        for block in handle.blocks(blocksize=chunk_size, dtype="float32", always_2d=True):
            samples = np.ascontiguousarray(block[:, 0])
            if not np.all(np.isfinite(samples)):
                raise ValueError(f"{path}: contains NaN or Inf samples")
            valid = samples.size
            if valid < chunk_size:
                samples = np.pad(samples, (0, chunk_size - valid))
            yield samples, valid


class PcmSink:
    """Writes float chunks to a binary stream as clipped s16le, flushing each chunk."""

    def __init__(self, stream):
        self.stream = stream
        self.clipped = 0

    def write(self, samples: np.ndarray) -> None:
        scaled = np.round(samples * PCM_SCALE)
        self.clipped += int(np.count_nonzero((scaled > 32767) | (scaled < -32768)))
        self.stream.write(np.clip(scaled, -32768, 32767).astype("<i2").tobytes())
        self.stream.flush()


class WavSink:
    """Writes float chunks to an open ``soundfile`` handle, counting clipped samples."""

    def __init__(self, handle, clip: bool):
        self.handle = handle
        self.clip = clip
        self.clipped = 0

    def write(self, samples: np.ndarray) -> None:
        if self.clip:
            self.clipped += int(np.count_nonzero(np.abs(samples) > 1.0))
            samples = np.clip(samples, -1.0, 1.0)
        self.handle.write(samples)


def stream(enhancer: StreamingEnhancer, chunks, sink, align: bool) -> dict:
    """Enhance ``chunks`` one by one into ``sink``; return timing figures.

    With ``align`` the first ``latency_samples`` output samples are dropped and
    the output is cut to the input length.
    """
    enhancer.reset()
    skip = enhancer.latency_samples if align else 0
    total_in = 0
    written = 0
    durations = []

    def emit(samples, limit=None):
        nonlocal skip, written
        if skip:
            dropped = min(skip, samples.size)
            samples, skip = samples[dropped:], skip - dropped
        if limit is not None:
            samples = samples[: max(0, limit - written)]
        if samples.size:
            sink.write(samples)
            written += samples.size

    def checked(out, index):
        if not np.all(np.isfinite(out)):
            raise NonFiniteOutputError(
                f"the model output is not finite (NaN or Inf) in chunk {index} (input samples "
                f"{index * enhancer.chunk_size}-{(index + 1) * enhancer.chunk_size}); stream "
                "stopped (diverged checkpoint, or input far beyond full scale?)"
            )
        return out

    index = 0
    for index, (chunk, valid) in enumerate(chunks):
        start = time.perf_counter()
        out = enhancer.process_chunk(chunk)
        durations.append(time.perf_counter() - start)
        total_in += valid
        emit(checked(out, index))
    limit = total_in if align else total_in + enhancer.latency_samples
    emit(checked(enhancer.flush(), index + 1), limit=limit)
    durations = np.array(durations) if durations else np.zeros(1)
    seconds = total_in / enhancer.sample_rate
    return {
        "samples": total_in,
        "written": written,
        "median_ms": 1e3 * float(np.median(durations)),
        "p99_ms": 1e3 * float(np.percentile(durations, 99)),
        "max_ms": 1e3 * float(durations.max()),
        "rtf": float(durations.sum() / seconds) if seconds else 0.0,
    }


def build_enhancer(args) -> StreamingEnhancer:
    if args.onnx:
        return StreamingEnhancer.from_onnx(args.onnx)
    if args.model:
        return StreamingEnhancer.from_pretrained(args.model, backend=args.backend)
    return StreamingEnhancer.from_run(args.run, backend=args.backend)


def main(argv=None, stdin=None, stdout=None) -> int:
    """Command line (see module docstring). ``stdin``/``stdout``: binary streams for ``-``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--run", help="training run folder (best checkpoint)")
    model.add_argument("--model", help="pretrained folder (python -m custom_modules.export)")
    model.add_argument("--onnx", help="model exported by custom_modules.streaming.export")
    parser.add_argument(
        "--backend", choices=BACKENDS, default="eager", help="with --run or --model"
    )
    parser.add_argument(
        "--input", required=True, help="audio file, or - for raw s16le PCM on stdin"
    )
    parser.add_argument(
        "--output", required=True, help="wav file, or - for raw s16le PCM on stdout"
    )
    parser.add_argument("--keep_latency", action="store_true", help="wav output: keep the delay")
    parser.add_argument("--subtype", default="PCM_16", help="wav output subtype (PCM_16, FLOAT...)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads (eager backend)")
    parser.add_argument("--verbose", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout.buffer
    torch.set_num_threads(args.threads)

    try:
        # Cheap checks first: a wrong path must not wait for the model to load.
        if args.input != "-" and not Path(args.input).is_file():
            raise FileNotFoundError(f"{args.input}: input file not found")
        if args.output != "-":
            check_writable_output(args.output)
        enhancer = build_enhancer(args)
        hop, rate = enhancer.chunk_size, enhancer.sample_rate
        print(
            f"streaming {args.input} -> {args.output}: chunks of {hop} samples, latency "
            f"{enhancer.latency_samples} samples in the stream, "
            f"{enhancer.algorithmic_latency_samples / rate * 1e3:.2f} ms algorithmic",
            file=sys.stderr,
        )
        if args.input == "-":
            chunks = read_pcm_chunks(stdin, hop)
        else:
            if not Path(args.input).is_file():
                raise FileNotFoundError(f"{args.input}: input file not found")
            chunks = read_wav_chunks(args.input, hop, rate)
        if args.output == "-":
            sink = PcmSink(stdout)
            figures = stream(enhancer, chunks, sink, align=False)
        else:
            clip = args.subtype.upper().startswith("PCM")
            with open_audio_writer(args.output, rate, subtype=args.subtype) as handle:
                sink = WavSink(handle, clip=clip)
                figures = stream(enhancer, chunks, sink, align=not args.keep_latency)
    except (OSError, ValueError, TypeError, EOFError, RuntimeError) as err:
        if args.verbose:
            traceback.print_exception(err)
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(
        f"{figures['samples'] / rate:.2f} s in, {figures['written']} samples out; per chunk "
        f"median {figures['median_ms']:.3f} ms, p99 {figures['p99_ms']:.3f} ms, "
        f"max {figures['max_ms']:.3f} ms; RTF {figures['rtf']:.3f}; "
        f"{sink.clipped} sample(s) clipped",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
