"""Export a training run as a self-contained pretrained folder (``python -m custom_modules.export``).

Usage::

    python -m custom_modules.export --run results/unet_tcm_cpu/1234 --out pretrained/unet_tcm

The folder (what one would push to the Hugging Face hub as it is) holds:

* ``hyperparams.yaml``: inference only. The run's network (its ``model``
  block with the run's values, overrides included), the sample rate, the
  pieces the SpeechBrain interface needs (e.g. the STFT of spectral masking)
  and a ``pretrainer`` that loads ``model.ckpt``; no data paths, no loss,
  optimiser, loggers or checkpointer. ``pretrained_interface`` names the class
  that loads it.
* ``model.ckpt``: the network's weights from the run's best checkpoint (highest
  ``checkpoint_key``, the one the recipe tested), loaded strictly first
  (:func:`custom_modules.inference.run_loading.load_run`).
* ``README.md``: a model card (recipe, configuration, training data and its
  licence where known, the run's test-set results, sample rate, causality and
  latency, how to load it).

Which SpeechBrain interface loads it is the recipe's ``pretrained_interface``
(a key of its YAML; ``--interface`` for runs made before it existed), one of
:data:`INTERFACES`: ``waveform_enhancement`` (``WaveformEnhancement``: a network
mapping ``(batch, samples)`` to ``(batch, samples)``, e.g. UNet-TCM, DCUNet, a
Denoising WaveNet), ``spectral_mask_enhancement`` (``SpectralMaskEnhancement``),
``separation`` (:class:`~custom_modules.inference.pretrained.WaveformSeparation`)
and ``speaker_extraction`` (:class:`~custom_modules.inference.pretrained.SpeakerExtraction`).

The folder is written into a temporary sibling and renamed into place once it
loads: through its interface from a second temporary ``savedir``, with the
weights compared tensor by tensor with the checkpoint (SpeechBrain's
pretrainer only warns about missing keys) and one second of noise processed.
Only local files are read: no network. ``--run`` executes the run's
``hyperparams.yaml`` (HyperPyYAML builds the objects it names): export only
runs you trust.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from custom_modules.audio.files import atomic_folder, read_json
from custom_modules.inference.pretrained import (
    INTERFACE_KEY,
    PretrainedFolderError,
    load_pretrained,
    network_of,
)
from custom_modules.inference.run_loading import HPARAMS_FILE, RunFolderError, load_run

WEIGHTS_FILE = "model.ckpt"
CARD_FILE = "README.md"


class ExportError(ValueError):
    """A run that cannot be exported (the message names the file and the problem)."""


@dataclass(frozen=True)
class Interface:
    """How a pretrained folder of one kind is built and used."""

    cls: str  # dotted path of the speechbrain Pretrained class
    copied: tuple  # top-level keys of the run's YAML copied as they are (besides ``model``)
    glue: str  # YAML text after the copied blocks (modules, pretrainer)
    usage: str  # the three lines of the model card, ``{folder}`` filled in


_PRETRAINER = """
# Loads model.ckpt of the folder given as from_hparams(source=...) into the network.
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        model: !ref <model>
"""

_NORMALIZER = """
# Input files are read, down-mixed to mono and resampled to this rate.
audio_normalizer: !new:speechbrain.dataio.preprocess.AudioNormalizer
    sample_rate: !ref <sample_rate>
"""

INTERFACES = {
    "waveform_enhancement": Interface(
        cls="speechbrain.inference.enhancement.WaveformEnhancement",
        copied=(),
        glue="""
# WaveformEnhancement unpacks (waveform, extra) from enhance_model.
enhance_model: !new:custom_modules.inference.pretrained.WaveformEnhancerModule
    model: !ref <model>
modules:
    enhance_model: !ref <enhance_model>
"""
        + _NORMALIZER
        + _PRETRAINER,
        usage="""from speechbrain.inference.enhancement import WaveformEnhancement
enhancer = WaveformEnhancement.from_hparams(source="{folder}", savedir="{folder}")
enhanced = enhancer.enhance_file("noisy.wav", output_filename="enhanced.wav")""",
    ),
    "spectral_mask_enhancement": Interface(
        cls="speechbrain.inference.enhancement.SpectralMaskEnhancement",
        copied=("compute_stft", "spectral_magnitude", "resynth"),
        glue="""
modules:
    enhance_model: !ref <model>
"""
        + _NORMALIZER
        + _PRETRAINER,
        usage="""from speechbrain.inference.enhancement import SpectralMaskEnhancement
enhancer = SpectralMaskEnhancement.from_hparams(source="{folder}", savedir="{folder}")
enhanced = enhancer.enhance_file("noisy.wav", output_filename="enhanced.wav")""",
    ),
    "separation": Interface(
        cls="custom_modules.inference.pretrained.WaveformSeparation",
        copied=(),
        glue="""
num_spks: {num_sources}    # sources the network outputs
modules:
    model: !ref <model>
"""
        + _NORMALIZER
        + _PRETRAINER,
        usage="""from custom_modules.inference.pretrained import WaveformSeparation
separator = WaveformSeparation.from_hparams(source="{folder}", savedir="{folder}")
sources = separator.separate_file("mixture.wav")  # (1, samples, sources), each peak 1""",
    ),
    "speaker_extraction": Interface(
        cls="custom_modules.inference.pretrained.SpeakerExtraction",
        copied=(),
        glue="""
modules:
    model: !ref <model>
"""
        + _NORMALIZER
        + _PRETRAINER,
        usage="""from custom_modules.inference.pretrained import SpeakerExtraction
extractor = SpeakerExtraction.from_hparams(source="{folder}", savedir="{folder}")
target = extractor.extract_file("mixture.wav", "enrolment.wav", output_filename="target.wav")""",
    ),
}


# ---- reading the run ----------------------------------------------------------------------


def _read_tree(path: Path):
    try:
        tree = YAML().load(path.read_text(encoding="utf-8"))
    except Exception as err:  # ruamel raises several unrelated types
        raise ExportError(f"{path}: not readable YAML ({' '.join(str(err).split())})") from err
    if not isinstance(tree, dict):
        raise ExportError(f"{path}: not a YAML mapping of hyperparameters")
    return tree


def interface_of(hparams, override=None, source="hyperparams.yaml") -> str:
    """The run's ``pretrained_interface`` (or ``override``), checked against :data:`INTERFACES`."""
    recorded = hparams["pretrained_interface"] if "pretrained_interface" in hparams else None
    name = override or recorded
    if not name:
        raise ExportError(
            f"{source}: no pretrained_interface (a run made before the key existed?); "
            f"pass --interface, one of {sorted(INTERFACES)}"
        )
    if str(name) not in INTERFACES:
        raise ExportError(
            f"{source}: unknown pretrained_interface {name!r}; one of {sorted(INTERFACES)}"
        )
    return str(name)


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield str(node)


def check_no_paths(blocks: dict, roots, source) -> None:
    """Refuse copied YAML blocks that name a path under one of ``roots`` (run or data folders)."""
    roots = [str(r).rstrip("/") for r in roots if isinstance(r, str) and len(str(r)) > 1]
    for key, node in blocks.items():
        for value in _strings(node):
            if any(value == r or value.startswith(r + "/") for r in roots):
                raise ExportError(
                    f"{source}: {key!r} names the path {value!r} of the training machine; "
                    "a pretrained folder must not depend on the run or the data"
                )


def inference_yaml(tree, interface: str, num_sources=None, header: str = "") -> str:
    """Text of the pretrained folder's ``hyperparams.yaml`` built from a run's YAML tree.

    Example
    -------
    >>> tree = YAML().load(
    ...     "sample_rate: 8000\\ndata_folder: /data\\nmodel: !new:torch.nn.Identity\\n"
    ...     "loss: !name:torch.nn.functional.mse_loss\\n")
    >>> text = inference_yaml(tree, "waveform_enhancement")
    >>> "data_folder" in text or "loss" in text, "model: !new:torch.nn.Identity" in text
    (False, True)
    """
    spec = INTERFACES[interface]
    for key in ("sample_rate", "model", *spec.copied):
        if key not in tree:
            raise ExportError(f"{HPARAMS_FILE}: no {key!r} (needed by {spec.cls})")
    blocks = CommentedMap()
    blocks[INTERFACE_KEY] = spec.cls
    blocks["sample_rate"] = int(tree["sample_rate"])
    for key in (*spec.copied, "model"):
        blocks[key] = tree[key]
    check_no_paths(
        {k: v for k, v in blocks.items() if k != INTERFACE_KEY},
        [tree.get("output_folder"), tree.get("data_folder")],
        HPARAMS_FILE,
    )
    stream = io.StringIO()
    YAML().dump(blocks, stream)
    # Section rulers of the training YAML ("# ---- Model ---") ride along with the blocks.
    copied = "".join(
        line for line in stream.getvalue().splitlines(True) if not line.startswith("# ----")
    )
    glue = spec.glue.replace("{num_sources}", str(num_sources))
    return header + copied + glue


# ---- the model card ------------------------------------------------------------------------


def recipe_of(run_folder: Path) -> tuple:
    """``(recipe name, hparams file)`` from the run's YAML header, ``("unknown", "")`` if absent."""
    text = (run_folder / HPARAMS_FILE).read_text(encoding="utf-8")
    match = re.search(r"recipes/(\w+)/hparams/([\w.-]+\.yaml)", text)
    return (match.group(1), match.group(2)) if match else ("unknown", "")


def recipe_title(run_folder: Path) -> str:
    """First line of the run's copy of ``train.py`` (``Recipe: ...``), else ""."""
    script = run_folder / "train.py"
    if not script.is_file():
        return ""
    match = re.search(r'"""(.+)', script.read_text(encoding="utf-8"))
    return match.group(1).strip().removeprefix("Recipe:").strip().rstrip(".") if match else ""


def training_data(data_folder) -> str:
    """What the run trained on and its licence, where the data folder says it."""
    if not data_folder:
        return "- not recorded in the run\n"
    root = Path(str(data_folder))
    lines = [f"- data folder (on the training machine): `{root.name or root}`"]
    if (root / "demo_info.json").is_file():
        lines.append(
            "- the offline demo corpus of this project (`python -m data_prepare.demo`): "
            "espeak-ng speech, generated noise and simulated rooms; synthetic, no third-party "
            "recordings"
        )
    downloads = sorted((root / ".downloads").glob("*.done.json")) if root.is_dir() else []
    for marker in downloads:
        try:
            record = read_json(marker)
            lines.append(f"- {record['title']} ({record['name']}): licence {record['licence']}")
        except (ValueError, KeyError, OSError):
            continue
    if len(lines) == 1:
        lines.append(
            "- licence: not known to the export (the data folder records none; "
            "add the corpora and their licences here before sharing)"
        )
    return "\n".join(lines) + "\n"


def test_results(run_folder: Path, tree) -> str:
    """The run's test-set results table (``<test_report_folder>/results_table.md``)."""
    report = Path(str(tree.get("test_report_folder") or run_folder / "test_report"))
    if not report.is_dir():
        report = run_folder / "test_report"
    table, summary = report / "results_table.md", report / "summary.json"
    if not table.is_file():
        return "No test report in the run (the test stage did not run).\n"
    count = ""
    if summary.is_file():
        try:
            count = f" on {read_json(summary)['num_utterances']} test utterances"
        except (ValueError, KeyError):
            count = ""
    return f"From the run's test report{count}:\n\n{table.read_text(encoding='utf-8').strip()}\n"


def causality(model, sample_rate: int) -> str:
    """Causality and latency as the network states them (``lookahead``, ``causal``)."""
    lookahead = getattr(model, "lookahead", None)
    if lookahead is not None:
        hop = getattr(model, "hop_length", None)
        stream = (
            f"; streams in chunks of {hop} samples ({1e3 * hop / sample_rate:.1f} ms): "
            "`python -m custom_modules.streaming --model <this folder> ...`"
            if hop
            else ""
        )
        return (
            f"causal: output sample t depends on input up to t + {int(lookahead)} samples "
            f"({1e3 * int(lookahead) / sample_rate:.2f} ms of lookahead){stream}"
        )
    causal = getattr(model, "causal", None)
    if causal is None:
        return "not stated by the network"
    if not causal:
        return "non-causal: uses future context (process whole files, not streams)"
    kernel = getattr(model, "kernel_size", None)
    latency = f"; latency {kernel} samples ({1e3 * kernel / sample_rate:.2f} ms)" if kernel else ""
    return "causal" + latency


def block_yaml(tree, key: str) -> str:
    """``key: ...`` of a YAML tree as text (tags, values and comments kept)."""
    blocks = CommentedMap()
    blocks[key] = tree[key]
    stream = io.StringIO()
    YAML().dump(blocks, stream)
    return stream.getvalue()


def model_card(run, run_folder, tree, interface, folder_name) -> str:
    """The README.md of the pretrained folder."""
    spec = INTERFACES[interface]
    recipe, hparams_file = recipe_of(run_folder)
    title = recipe_title(run_folder) or recipe
    model = run.model
    params = sum(p.numel() for p in model.parameters())
    meta = {
        k: (f"{v:.4g}" if isinstance(v, float) else v)
        for k, v in run.checkpoint.meta.items()
        if k not in ("unixtime", "end-of-epoch")
    }
    model_block = block_yaml(tree, "model")
    return f"""# {title}

A pretrained `{recipe}` model of sb-enhance, exported by
`python -m custom_modules.export` from the run `{run_folder.name}`
({f"`recipes/{recipe}/hparams/{hparams_file}`" if hparams_file else "recipe YAML not recorded"}).

## Load and use

```python
{spec.usage.format(folder=folder_name)}
```

Needs `speechbrain` and this project's package (`pip install -e <sb-enhance clone>`, which
installs `custom_modules`); nothing else: not the training run, the data or the recipe folders.
`source` is this folder (or its Hugging Face hub id once pushed).
Loading executes `hyperparams.yaml` (HyperPyYAML builds the objects it names): load only
folders you trust.

## Model

| | |
|---|---|
| recipe | `recipes/{recipe}` ({title or "?"}) |
| interface | `{spec.cls}` |
| network | `{type(model).__module__}.{type(model).__name__}`, {params:,} parameters |
| sample rate | {run.sample_rate} Hz (inputs at other rates are resampled; multichannel files down-mixed) |
| causality, latency | {causality(model, run.sample_rate)} |
| checkpoint | `{Path(run.checkpoint.path).name}`: best `{run.checkpoint_key}` ({", ".join(f"{k}={v}" for k, v in meta.items())}) |

## Configuration

The network as the run built it (`hyperparams.yaml`):

```yaml
{model_block.rstrip()}
```

## Training data

{training_data(tree.get("data_folder"))}
## Test-set results

{test_results(run_folder, tree)}
## Files

- `hyperparams.yaml`: inference-only hyperparameters (`{INTERFACE_KEY}` names the class)
- `{WEIGHTS_FILE}`: the network's weights (state dict)
- `README.md`: this card
"""


# ---- export and verification ---------------------------------------------------------------


def _probe(interface, loaded, sample_rate: int) -> torch.Tensor:
    """Run the loaded interface on a second of noise; returns its output."""
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(0.1 * rng.standard_normal((1, sample_rate))).float()
    with torch.no_grad():
        if interface == "separation":
            return loaded.separate_batch(noise)
        if interface == "speaker_extraction":
            return loaded.extract_batch(noise, noise)
        if interface == "spectral_mask_enhancement":
            return loaded.enhance_batch(noise, lengths=torch.ones(1))
        return loaded.enhance_batch(noise)


def verify_folder(folder, interface: str, state: dict, sample_rate: int):
    """Load ``folder`` with its interface (fresh savedir) and check weights and output.

    Raises ``ExportError`` when a tensor differs from ``state`` (or one is
    missing or extra), or a second of noise gives a non-finite output or one
    of another length.
    """
    with tempfile.TemporaryDirectory() as savedir:
        try:
            loaded = load_pretrained(folder, savedir=savedir)
        except PretrainedFolderError as err:
            raise ExportError(str(err)) from err
        loaded_state = network_of(loaded).state_dict()
        if sorted(loaded_state) != sorted(state):
            missing = sorted(set(state) - set(loaded_state))[:5]
            extra = sorted(set(loaded_state) - set(state))[:5]
            raise ExportError(
                f"{folder}: the loaded network's parameters differ from the checkpoint's "
                f"(missing {missing}, unexpected {extra})"
            )
        for key, value in state.items():
            if not torch.equal(loaded_state[key].cpu(), value.cpu()):
                raise ExportError(f"{folder}: parameter {key} was not loaded from {WEIGHTS_FILE}")
        output = _probe(interface, loaded, sample_rate)
    if output.shape[:2] != (1, sample_rate) or not torch.isfinite(output).all():
        raise ExportError(
            f"{folder}: a second of noise gave shape {tuple(output.shape)} "
            f"(finite: {bool(torch.isfinite(output).all())}), expected (1, {sample_rate}, ...)"
        )


def export_pretrained(run_folder, out, interface=None, checkpoint_key=None, overwrite=False):
    """Write the pretrained folder of a run (see the module docstring); returns a summary dict.

    Raises
    ------
    ExportError
        The run has no ``pretrained_interface`` (and none is given), lacks a
        key the interface needs, its model block names a run or data path, or
        the written folder does not load back exactly.
    RunFolderError
        The run folder cannot be loaded (no YAML, no complete checkpoint...).
    FileExistsError
        ``out`` exists and is not empty, without ``overwrite``.
    """
    run_folder, out = Path(run_folder).resolve(), Path(out).resolve()
    tree = _read_tree(run_folder / HPARAMS_FILE) if (run_folder / HPARAMS_FILE).is_file() else None
    if tree is None:
        raise RunFolderError(f"{run_folder}: no {HPARAMS_FILE} (not the output folder of a run?)")
    kind = interface_of(tree, interface, source=str(run_folder / HPARAMS_FILE))
    if out == run_folder or out in run_folder.parents:
        raise ExportError(f"{out}: --out holds the run folder {run_folder}; choose another folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder exists and is not empty (--overwrite replaces it)")
    run = load_run(run_folder, device="cpu", checkpoint_key=checkpoint_key)
    state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    header = (
        f"# Pretrained {recipe_of(run_folder)[0]} model, inference only "
        "(written by python -m custom_modules.export).\n"
        f"# Load: {INTERFACES[kind].cls.rsplit('.', 1)[1]}.from_hparams(source=<this folder>, "
        "savedir=<folder>); see README.md.\n\n"
    )
    text = inference_yaml(
        tree, kind, num_sources=getattr(run.model, "num_sources", None), header=header
    )
    with atomic_folder(out, overwrite=overwrite) as tmp:
        (tmp / HPARAMS_FILE).write_text(text, encoding="utf-8")
        torch.save(state, tmp / WEIGHTS_FILE)
        card = model_card(run, run_folder, tree, kind, out.name)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        verify_folder(tmp, kind, state, run.sample_rate)
    return {
        "out": out,
        "interface": INTERFACES[kind].cls,
        "checkpoint": run.describe(),
        "usage": INTERFACES[kind].usage.format(folder=out),
    }


def main(argv=None) -> int:
    """Command line; exit status 0, or 1 with a one-line error."""
    parser = argparse.ArgumentParser(
        prog="python -m custom_modules.export",
        description="Export a training run's best checkpoint as a self-contained pretrained "
        "folder (hyperparams.yaml, model.ckpt, README.md) loadable with SpeechBrain's "
        "from_hparams(source=<folder>).",
    )
    parser.add_argument("--run", required=True, help="output folder of a training run")
    parser.add_argument("--out", required=True, help="pretrained folder to write")
    parser.add_argument(
        "--interface",
        choices=sorted(INTERFACES),
        help="default: the run's pretrained_interface (needed for runs made before it existed)",
    )
    parser.add_argument("--checkpoint_key", help="default: the recipe's checkpoint_key")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--verbose", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    try:
        result = export_pretrained(
            args.run, args.out, args.interface, args.checkpoint_key, args.overwrite
        )
    except (ExportError, RunFolderError, OSError) as err:
        if args.verbose:
            traceback.print_exception(err)
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(f"exported {result['checkpoint']}\n -> {result['out']} ({result['interface']})")
    print("load it with:\n" + result["usage"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
