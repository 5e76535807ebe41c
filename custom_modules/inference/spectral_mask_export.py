"""Make a folder that ``SpectralMaskEnhancement.from_hparams`` loads, from a training run.

The folder holds:

* ``hyperparams.yaml``: ``hparams/inference.yaml`` with its plain top-level
  keys (STFT and model sizes) replaced by the training run's values, read from
  the run's saved ``hyperparams.yaml`` (overrides included);
* ``model.ckpt``: the mask network of the run's best checkpoint (highest
  ``checkpoint_key``, e.g. STOI), copied as it is;
* ``export_info.json``: where it came from (run, checkpoint, its metrics).

The export is then checked: the folder is loaded through SpeechBrain's own
interface, the weights are loaded again *strictly* (SpeechBrain's pretrainer
only warns about missing keys) and a second of noise is enhanced. Only local
files are read: no network.

Usage (from the clone's root; ``recipes/spectral_mask/export_inference.py`` takes the same
arguments)::

    python -m custom_modules.inference.spectral_mask_export \
        --run results/spectral_mask_cpu/1234 --out results/spectral_mask_cpu/1234/inference

    # then, from Python (the repository importable: PYTHONPATH=. or pip install -e .)
    from speechbrain.inference.enhancement import SpectralMaskEnhancement
    enhancer = SpectralMaskEnhancement.from_hparams(source=out, savedir=out)
    enhancer.enhance_file("noisy.wav", output_filename="enhanced.wav")
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from hyperpyyaml import resolve_references
from ruamel.yaml import YAML

from custom_modules.audio.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from custom_modules.training.checkpoints import AtomicCheckpointer

# The recipe's inference YAML (recipes/spectral_mask/hparams/inference.yaml).
INFERENCE_YAML = (
    Path(__file__).resolve().parents[2] / "recipes/spectral_mask/hparams/inference.yaml"
)


class ExportError(RuntimeError):
    """The training run cannot be exported (missing file, key or checkpoint)."""


def _is_plain(value) -> bool:
    """A YAML value without a tag: number, bool, string or list of those."""
    if getattr(getattr(value, "tag", None), "value", None) is not None:
        return False
    if isinstance(value, list):
        return all(_is_plain(item) for item in value)
    return isinstance(value, (bool, int, float, str))


def _native(value):
    """ruamel scalars/sequences -> plain Python values (for overrides)."""
    if isinstance(value, list):
        return [_native(item) for item in value]
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    raise TypeError(f"not a plain YAML value: {value!r}")


def read_yaml_tree(path):
    """Read a (Hyper)PyYAML file without building its objects (tags are kept)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    try:
        return YAML().load(path.read_text(encoding="utf-8"))
    except Exception as err:  # ruamel raises several unrelated types
        raise ExportError(f"{path}: not a readable YAML file ({err})") from err


def inference_overrides(run_hparams_path, inference_yaml=INFERENCE_YAML) -> dict:
    """Values, from the run, of every plain top-level key of the inference YAML.

    Example
    -------
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp()) / "hyperparams.yaml"
    >>> _ = run.write_text("n_fft: 256\\nwin_length: 16\\nmodel: !new:torch.nn.Identity\\n")
    >>> inf = run.parent / "inference.yaml"
    >>> _ = inf.write_text("n_fft: 512\\nwin_length: 32\\nenhance_model: !new:torch.nn.Identity\\n")
    >>> inference_overrides(run, inf)
    {'n_fft': 256, 'win_length': 16}
    """
    run_tree = read_yaml_tree(run_hparams_path)
    inference_tree = read_yaml_tree(inference_yaml)
    overrides = {}
    for key, default in inference_tree.items():
        if not _is_plain(default):
            continue  # structure (STFT objects, model, pretrainer): the same in both files
        if key not in run_tree:
            raise ExportError(
                f"{run_hparams_path}: key {key!r} (needed by {inference_yaml}) is missing"
            )
        value = run_tree[key]
        if not _is_plain(value):
            raise ExportError(
                f"{run_hparams_path}: key {key!r} must be a plain value to be exported, got {value!r}"
            )
        overrides[key] = _native(value)
    return overrides


def best_checkpoint(save_folder, key):
    """The run's complete checkpoint with the highest ``key`` in its metadata."""
    save_folder = Path(save_folder)
    if not save_folder.is_dir():
        raise ExportError(f"{save_folder}: no checkpoint folder")
    # Incomplete/unreadable checkpoints are skipped with a warning (custom_modules.training.checkpoints).
    checkpoint = AtomicCheckpointer(save_folder, {"model": None}).find_checkpoint(max_key=key)
    if checkpoint is None:
        raise ExportError(
            f"{save_folder}: no checkpoint with {key!r} in its metadata (a --debug run keeps "
            "its checkpoints in a temporary folder; train without --debug)"
        )
    if not (checkpoint.path / "model.ckpt").is_file():
        raise ExportError(f"{checkpoint.path}: no model.ckpt in the checkpoint")
    return checkpoint


def export_inference(run_folder, out_folder, save_folder=None, checkpoint_key=None, verify=True):
    """Write the inference folder of a training run; return its path.

    Arguments
    ---------
    run_folder : str or Path
        The run's ``output_folder`` (holds ``hyperparams.yaml`` and ``save/``).
    out_folder : str or Path
        Folder to write (created; files in it are replaced).
    save_folder : str or Path, optional
        Checkpoint folder; default ``<run_folder>/save``, else the run YAML's
        ``save_folder``.
    checkpoint_key : str, optional
        Metadata key to maximise; default the run's ``checkpoint_key``.
    verify : bool
        Load the result through ``SpectralMaskEnhancement`` and enhance noise.

    Returns
    -------
    Path
        ``out_folder``.
    """
    run_folder, out_folder = Path(run_folder), Path(out_folder)
    run_hparams = run_folder / "hyperparams.yaml"
    run_tree = read_yaml_tree(run_hparams)
    key = checkpoint_key or run_tree.get("checkpoint_key")
    if not key:
        raise ExportError(f"{run_hparams}: no checkpoint_key; pass --checkpoint_key")
    if save_folder is None:
        save_folder = run_folder / "save"
        if not save_folder.is_dir() and "save_folder" in run_tree:
            save_folder = Path(str(run_tree["save_folder"]))
    checkpoint = best_checkpoint(save_folder, key)
    overrides = inference_overrides(run_hparams)

    with open(INFERENCE_YAML, encoding="utf-8") as fin:
        resolved = resolve_references(fin, overrides).getvalue()
    out_folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_folder / "model.ckpt", (checkpoint.path / "model.ckpt").read_bytes())
    atomic_write_text(out_folder / "hyperparams.yaml", resolved)
    if verify:
        verify_inference_folder(out_folder, overrides["sample_rate"])
    info = {
        "run_folder": str(run_folder.resolve()),
        "checkpoint": str(checkpoint.path.resolve()),
        "checkpoint_key": key,
        "checkpoint_meta": {k: _plain_meta(v) for k, v in checkpoint.meta.items()},
        "copied_hparams": overrides,
        "verified": bool(verify),
    }
    atomic_write_json(out_folder / "export_info.json", info)
    return out_folder


def verify_inference_folder(folder, sample_rate, seconds=1.0):
    """Load ``folder`` with ``SpectralMaskEnhancement`` and enhance a second of noise.

    Raises ``ExportError`` when the weights do not match the model exactly or
    the output is not a finite waveform of the input's length.
    """
    from speechbrain.inference.enhancement import SpectralMaskEnhancement

    folder = Path(folder)
    enhancer = SpectralMaskEnhancement.from_hparams(source=str(folder), savedir=str(folder))
    state = torch.load(folder / "model.ckpt", map_location="cpu", weights_only=True)
    try:
        enhancer.mods.enhance_model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ExportError(
            f"{folder}: model.ckpt does not match the inference model: {err}"
        ) from err
    rng = np.random.default_rng(0)
    noisy = torch.from_numpy(0.1 * rng.standard_normal(int(seconds * sample_rate))).float()
    with torch.no_grad():
        enhanced = enhancer.enhance_batch(noisy.unsqueeze(0), lengths=torch.ones(1))
    if enhanced.shape != (1, noisy.numel()) or not torch.isfinite(enhanced).all():
        raise ExportError(
            f"{folder}: enhancing noise gave shape {tuple(enhanced.shape)} "
            f"(finite: {bool(torch.isfinite(enhanced).all())}), expected (1, {noisy.numel()})"
        )
    return enhancer


def _plain_meta(value):
    return value if isinstance(value, (bool, int, float, str)) or value is None else repr(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="training output_folder")
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--save_folder", help="checkpoint folder (default <run>/save)")
    parser.add_argument("--checkpoint_key", help="metadata key to maximise (default: the run's)")
    parser.add_argument("--no_verify", action="store_true", help="skip the load-and-enhance check")
    args = parser.parse_args(argv)
    try:
        out = export_inference(
            args.run,
            args.out,
            save_folder=args.save_folder,
            checkpoint_key=args.checkpoint_key,
            verify=not args.no_verify,
        )
    except ExportError as err:
        print(f"export_inference: {err}", file=sys.stderr)
        return 1
    print(f"Inference folder: {out}")
    print(
        f"Load it with SpectralMaskEnhancement.from_hparams(source={str(out)!r}, savedir={str(out)!r})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
