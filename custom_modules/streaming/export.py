"""Export the streaming UNet-TCM step of a run to ONNX, then verify it.

Usage::

    python -m custom_modules.streaming.export --run <output folder> --out model.onnx
    python -m custom_modules.streaming.export --model <pretrained folder> --out model.onnx

The run's best checkpoint (by the recipe's ``checkpoint_key``, loaded with
``custom_modules.inference.run_loading``), or the network of a pretrained folder
(``python -m custom_modules.export``), is converted to the one-frame step of
``fused.py`` and exported with explicit state by PyTorch's dynamo-based exporter
(the model's inputs, outputs and metadata: :mod:`custom_modules.streaming.onnx_step`).
After writing, the export is checked against PyTorch on ``--verify_frames``
chunks of a random signal, chunk by chunk, and the largest difference is
printed (exit status 1 above ``--tolerance``).

Errors (a run folder that cannot be loaded, an unwritable ``--out``, checked
before the model is loaded) are one line with exit status 2; ``--verbose``
shows the traceback. ``--run`` and ``--model`` execute the folder's ``hyperparams.yaml``
(HyperPyYAML constructs arbitrary objects): export only folders you trust.
"""

from __future__ import annotations

import argparse
import sys
import traceback

import numpy as np

from custom_modules.audio.files import atomic_write_bytes, check_writable_output
from custom_modules.inference.pretrained import load_pretrained, network_of
from custom_modules.inference.run_loading import load_run
from custom_modules.streaming.engine import StreamingEnhancer
from custom_modules.streaming.onnx_step import export_model


def compare_backends(model, onnx_source, num_frames: int = 200, seed: int = 0) -> float:
    """Largest |difference| between PyTorch and ONNX streaming outputs, chunk by chunk.

    Both enhancers stream the same random signal (``num_frames`` chunks).
    """
    eager = StreamingEnhancer.from_model(model, backend="eager")
    exported = StreamingEnhancer.from_onnx(onnx_source)
    rng = np.random.default_rng(seed)
    signal = (0.1 * rng.standard_normal(num_frames * eager.chunk_size)).astype(np.float32)
    worst = 0.0
    for chunk in signal.reshape(num_frames, -1):
        worst = max(
            worst, float(np.abs(eager.process_chunk(chunk) - exported.process_chunk(chunk)).max())
        )
    return worst


def main(argv=None) -> int:
    """Command line: export a run's best checkpoint, then verify it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="recipe output folder (hyperparams.yaml, save/)")
    source.add_argument("--model", help="pretrained folder (python -m custom_modules.export)")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument(
        "--checkpoint_key", default=None, help="with --run; default: the recipe's checkpoint_key"
    )
    parser.add_argument("--verify_frames", type=int, default=200, help="0 skips the check")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--verbose", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)

    def fail(err) -> int:
        if args.verbose:
            traceback.print_exception(err)
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2

    try:
        check_writable_output(args.out)  # before the model is loaded
        if args.run:
            loaded = load_run(args.run, device="cpu", checkpoint_key=args.checkpoint_key)
            model, sample_rate, description = loaded.model, loaded.sample_rate, loaded.describe()
        else:
            interface = load_pretrained(args.model, device="cpu")
            model, sample_rate = network_of(interface), int(interface.hparams.sample_rate)
            description = args.model
    except (OSError, ValueError) as err:  # RunFolderError, PretrainedFolderError: ValueErrors
        return fail(err)
    if not hasattr(model, "engine"):
        return fail(
            ValueError(
                f"{args.run or args.model}: a {type(model).__name__}, not a streamable "
                "UNet-TCM (ComplexSpectralMapping)"
            )
        )
    try:
        proto_bytes = export_model(model, sample_rate)
        atomic_write_bytes(args.out, proto_bytes)
    except (OSError, ValueError, TypeError) as err:
        return fail(err)
    print(f"exported {description} -> {args.out} ({len(proto_bytes) / 1e6:.1f} MB)")
    if args.verify_frames > 0:
        worst = compare_backends(model, proto_bytes, num_frames=args.verify_frames)
        verdict = "OK" if worst <= args.tolerance else "MISMATCH"
        print(
            f"onnxruntime vs PyTorch over {args.verify_frames} chunks: "
            f"max |diff| = {worst:.2e} ({verdict}, tolerance {args.tolerance:g})"
        )
        if worst > args.tolerance:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
