"""Load a trained model from a recipe's output folder (a "run folder").

A run folder is what ``recipes/<recipe>/train.py`` writes::

    <run>/hyperparams.yaml        resolved copy of the YAML with the overrides
    <run>/save/CKPT+<time>/       model.ckpt, CKPT.yaml (meta: "stoi", ...), ...

Loading
-------
* ``hyperparams.yaml`` is parsed with HyperPyYAML, which constructs every
  ``!new:`` object of the recipe (model, loss, epoch counter, loggers,
  checkpointer). Its ``!ref`` references were resolved when training started,
  so its paths are those of the training machine and working directory.
  Every string under the recorded ``output_folder`` is first rewritten to lie
  under the run folder actually given, so the checkpointer looks in
  ``<run>/save`` and nothing is created elsewhere (the folders of the run
  already exist; the run folder is never written to).
* The recipe's ``__set_torchseed: !apply:torch.manual_seed`` line would reset
  the caller's global torch RNG: the state is saved and restored around the
  load (``torch.random.fork_rng``).
* The checkpoint with the highest value of the recipe's ``checkpoint_key``
  (e.g. ``stoi``) is selected among those that recorded it (intra-epoch
  checkpoints have no metrics and are ignored), and the state dict of every
  module in ``hparams["modules"]`` is loaded from it (``strict``: a missing or
  unexpected parameter is an error).
* Incomplete or unreadable checkpoints (a save killed half-way by SpeechBrain's
  own, non-atomic ``Checkpointer``, a partial copy, a damaged file) are
  skipped with a warning naming the folder and the reason, and the best
  *complete* checkpoint is used (:mod:`custom_modules.training.checkpoints`, also for
  run folders written before the recipes used ``AtomicCheckpointer``).

Security
--------
``hyperparams.yaml`` is executed, not just read: HyperPyYAML constructs every
``!new:``/``!name:``/``!apply:`` object it names, which can be any Python
callable (``!apply:os.system`` included). Loading a run folder (``--run`` of
``custom_modules.inference.enhance``, ``custom_modules.streaming`` and its export) runs
code chosen by whoever wrote that file; ``torch.load(weights_only=True)`` of
the weights does not change that. Load only run folders you trust.

Supported recipes: any recipe of this project whose ``modules`` has a
``model`` mapping a waveform batch ``(batch, samples)`` at
``hparams["sample_rate"]`` to the enhanced waveform ``(batch, samples)``
(``recipes/unet_tcm``, ``dcunet``, ``denoising_wavenet``). A recipe whose model returns something else (e.g. a
mask) needs its own wrapper before it can be used for inference here.
"""

from __future__ import annotations

import importlib
import io
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from speechbrain.utils.checkpoints import Checkpointer

from custom_modules.training.checkpoints import AtomicCheckpointer

HPARAMS_FILE = "hyperparams.yaml"

logger = logging.getLogger(__name__)


class RunFolderError(ValueError):
    """A run folder that cannot be used for inference (missing files, no checkpoint...)."""


@dataclass
class LoadedRun:
    """A model ready for inference and where it came from.

    Attributes
    ----------
    model : torch.nn.Module
        ``hparams["modules"]["model"]`` in eval mode, on the requested device.
    hparams : dict
        The loaded hyperparameters.
    checkpoint : speechbrain.utils.checkpoints.Checkpoint
        The selected checkpoint (``.path``, ``.meta``, ``.paramfiles``).
    checkpoint_key : str
        The meta key that selected it (highest value wins).
    sample_rate : int
        Rate the model works at (``hparams["sample_rate"]``, 16000 by default).
    """

    model: torch.nn.Module
    hparams: dict
    checkpoint: object
    checkpoint_key: str
    sample_rate: int

    def describe(self) -> str:
        """One line naming the checkpoint and its metrics."""
        metrics = ", ".join(
            f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in self.checkpoint.meta.items()
            if key not in ("unixtime", "end-of-epoch")
        )
        return f"{self.checkpoint.path} (best {self.checkpoint_key}; {metrics})"


def _is_under(value: str, root: str) -> bool:
    return value == root or value.startswith(root.rstrip("/") + "/")


def _rewrite_paths(node, old_root: str, new_root: str):
    """Recursively replace the ``old_root`` prefix of every string in a YAML tree."""
    if isinstance(node, dict):
        for key in list(node.keys()):
            node[key] = _rewrite_paths(node[key], old_root, new_root)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            node[index] = _rewrite_paths(item, old_root, new_root)
    elif isinstance(node, str) and _is_under(node, old_root):
        # Keep the ruamel string subclass (quoting style) by constructing the same type.
        return type(node)(new_root + node[len(old_root.rstrip("/")) :])
    return node


def _relocated_tree(hparams_path, run_folder):
    """YAML tree of ``hparams_path`` with paths under its ``output_folder`` moved to ``run_folder``."""
    yaml = YAML()
    try:
        with open(hparams_path, encoding="utf-8") as handle:
            tree = yaml.load(handle)
    except (YAMLError, UnicodeDecodeError) as err:
        reason = " ".join(str(err).split())
        raise RunFolderError(f"{hparams_path}: not valid YAML ({reason})") from err
    if not isinstance(tree, dict):
        raise RunFolderError(f"{hparams_path}: not a YAML mapping of hyperparameters")
    recorded = tree.get("output_folder")
    if isinstance(recorded, str) and recorded:
        tree = _rewrite_paths(tree, recorded, str(run_folder))
    return tree


def relocated_hparams_text(hparams_path, run_folder) -> str:
    """Text of ``hparams_path`` with paths under its ``output_folder`` moved to ``run_folder``.

    Tags (``!new:``, ``!name:``...), anchors and comments are kept (ruamel
    round trip). A YAML without ``output_folder`` is returned unchanged.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "h.yaml").write_text("output_folder: old/run\\nsave: old/run/save\\n")
    >>> print(relocated_hparams_text(folder / "h.yaml", "/new/run"), end="")
    output_folder: /new/run
    save: /new/run/save
    """
    stream = io.StringIO()
    YAML().dump(_relocated_tree(hparams_path, run_folder), stream)
    return stream.getvalue()


_PROJECT_TAG = re.compile(r"!(?:new|name|apply):(custom_modules(?:\.\w+)+)")


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` names an importable module or an attribute of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                target = getattr(target, name)
        except AttributeError:
            return False
        return True
    return False


def missing_project_tags(yaml_text: str) -> list:
    """The ``custom_modules`` objects named by a YAML's tags that do not exist.

    (``!new:``, ``!name:`` and ``!apply:`` tags; e.g. a run made before the modules moved.)

    Example
    -------
    >>> missing_project_tags("a: !new:custom_modules.brain.EnhancementBrain, "
    ...                      "b: !name:custom_modules.training.brain.EnhancementBrain")
    ['custom_modules.brain.EnhancementBrain']
    """
    names = dict.fromkeys(_PROJECT_TAG.findall(yaml_text))
    return [name for name in names if not _resolves(name)]


def load_run_hparams(run_folder) -> dict:
    """Parse ``<run_folder>/hyperparams.yaml`` (relocated, global RNG untouched).

    Raises
    ------
    RunFolderError
        When the folder or its ``hyperparams.yaml`` is missing, or the YAML
        cannot be loaded (the error names the file and the cause).
    """
    run_folder = Path(run_folder).resolve()
    if not run_folder.is_dir():
        raise RunFolderError(f"{run_folder}: run folder not found")
    hparams_path = run_folder / HPARAMS_FILE
    if not hparams_path.is_file():
        contents = sorted(p.name for p in run_folder.iterdir())[:10]
        raise RunFolderError(
            f"{run_folder}: no {HPARAMS_FILE} (not the output folder of a training run?"
            f" it contains: {contents or 'nothing'})"
        )
    tree = _relocated_tree(hparams_path, run_folder)
    # Constructing the Checkpointer would create a missing folder: check first.
    checkpointer_args = tree.get("checkpointer")
    if isinstance(checkpointer_args, dict):
        checkpoints_dir = checkpointer_args.get("checkpoints_dir")
        if isinstance(checkpoints_dir, str) and not Path(checkpoints_dir).is_dir():
            raise RunFolderError(
                f"{run_folder}: checkpoint folder {checkpoints_dir} not found (no checkpoint saved yet?)"
            )
    text = io.StringIO()
    YAML().dump(tree, text)
    try:
        with torch.random.fork_rng(devices=[]):
            hparams = load_hyperpyyaml(text.getvalue())
    except Exception as err:
        moved = missing_project_tags(text.getvalue())
        if moved:
            raise RunFolderError(
                f"{hparams_path}: made by an older layout of custom_modules: it names "
                f"{', '.join(moved)}, which no longer exist{'s' if len(moved) == 1 else ''} "
                "(modules are grouped by concept since then: audio/, data/, training/, "
                "evaluation/, inference/; see docs/architecture.md). Retrain, or edit the tags "
                "of its hyperparams.yaml to the new places."
            ) from err
        raise RunFolderError(f"{hparams_path}: cannot load hyperparameters ({err})") from err
    if not isinstance(hparams.get("modules"), dict) or "model" not in hparams["modules"]:
        raise RunFolderError(f"{hparams_path}: no 'modules' with a 'model' entry")
    return hparams


def _checkpointer_of(hparams, run_folder: Path) -> AtomicCheckpointer:
    """The recipe's checkpointer (relocated into the run), else one on ``<run>/save``.

    A plain SpeechBrain ``Checkpointer`` (older run folders) is wrapped in an
    ``AtomicCheckpointer`` on the same folder, so incomplete checkpoints are
    skipped whichever class wrote them.
    """
    checkpointer = hparams.get("checkpointer")
    if isinstance(checkpointer, Checkpointer):
        return AtomicCheckpointer.wrapping(checkpointer)
    save_folder = run_folder / "save"
    if not save_folder.is_dir():
        raise RunFolderError(f"{run_folder}: no checkpointer in the YAML and no save/ folder")
    return AtomicCheckpointer(save_folder)


def ranked_checkpoints(checkpointer: Checkpointer, checkpoint_key: str) -> list:
    """Complete checkpoints that recorded ``checkpoint_key``, best first.

    Incomplete ones are skipped with a warning (see :mod:`custom_modules.training.checkpoints`).

    Raises
    ------
    RunFolderError
        No complete checkpoint at all, or none that recorded ``checkpoint_key``.
    """
    checkpointer = AtomicCheckpointer.wrapping(checkpointer)
    folder = checkpointer.checkpoints_dir
    found = checkpointer.list_checkpoints()
    if not found:
        skipped = [
            f"{path.name} ({checkpointer.problem(path)})"
            for path in sorted(checkpointer._list_checkpoint_dirs())
        ]
        detail = f"; skipped {len(skipped)} incomplete: {', '.join(skipped[:3])}" if skipped else ""
        raise RunFolderError(f"{folder}: no checkpoint (CKPT+* folder) found{detail}")
    ranked = checkpointer.find_checkpoints(max_key=checkpoint_key)
    if not ranked:
        listing = "; ".join(f"{Path(c.path).name} (meta keys: {sorted(c.meta)})" for c in found[:5])
        raise RunFolderError(
            f"{folder}: no checkpoint recorded {checkpoint_key!r}; found {len(found)}: {listing}"
        )
    return ranked


def find_best_checkpoint(checkpointer: Checkpointer, checkpoint_key: str):
    """The complete checkpoint with the highest ``checkpoint_key`` (see :func:`ranked_checkpoints`)."""
    return ranked_checkpoints(checkpointer, checkpoint_key)[0]


def _load_module_weights(name, module, checkpoint, recoverables, device):
    """Load ``module``'s state dict from its parameter file in ``checkpoint``."""
    names = [key for key, obj in recoverables.items() if obj is module]
    names.append(name)
    paramfile = next((checkpoint.paramfiles[n] for n in names if n in checkpoint.paramfiles), None)
    if paramfile is None:
        raise RunFolderError(
            f"{checkpoint.path}: no parameters for module {name!r} "
            f"(files: {sorted(checkpoint.paramfiles)})"
        )
    try:
        state = torch.load(paramfile, map_location=device, weights_only=True)
        module.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as err:
        reason = " ".join(str(err).split())
        raise RunFolderError(f"{paramfile}: cannot load into module {name!r} ({reason})") from err


def resolve_device(device: str) -> torch.device:
    """``torch.device(device)``, refusing CUDA when it is not available."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunFolderError(f"device {device} requested but CUDA is not available")
    return device


def load_run(run_folder, device="cpu", checkpoint_key=None) -> LoadedRun:
    """Load the best checkpoint of a run folder, ready for inference.

    Arguments
    ---------
    run_folder : str or Path
        The recipe's ``output_folder`` (holds ``hyperparams.yaml`` and ``save/``).
    device : str
        Torch device of the returned model.
    checkpoint_key : str, optional
        Meta key to maximise; default: the recipe's ``checkpoint_key``.

    Returns
    -------
    LoadedRun
        With the model in eval mode and gradients disabled.

    Raises
    ------
    RunFolderError
        See :func:`load_run_hparams` and :func:`find_best_checkpoint`.
    """
    run_folder = Path(run_folder).resolve()
    device = resolve_device(device)
    hparams = load_run_hparams(run_folder)
    key = checkpoint_key or hparams.get("checkpoint_key")
    if not key:
        raise RunFolderError(
            f"{run_folder / HPARAMS_FILE}: no checkpoint_key; pass one (e.g. 'stoi')"
        )
    checkpointer = _checkpointer_of(hparams, run_folder)
    checkpoint, skipped = None, []
    for candidate in ranked_checkpoints(checkpointer, key):
        reason = checkpointer.unreadable(candidate)
        if reason is None:
            try:
                # Every module is loaded from one checkpoint: a later candidate overwrites all.
                for name, module in hparams["modules"].items():
                    _load_module_weights(name, module, candidate, checkpointer.recoverables, device)
            except RunFolderError as err:
                reason = str(err)
                logger.warning("Skipping checkpoint %s: %s", candidate.path, reason)
        if reason is None:
            checkpoint = candidate
            break
        skipped.append(f"{Path(candidate.path).name}: {reason}")
    if checkpoint is None:
        raise RunFolderError(
            f"{checkpointer.checkpoints_dir}: no usable checkpoint with {key!r} "
            f"({'; '.join(skipped)})"
        )
    for module in hparams["modules"].values():
        module.to(device).eval()
        module.requires_grad_(False)
    return LoadedRun(
        model=hparams["modules"]["model"],
        hparams=hparams,
        checkpoint=checkpoint,
        checkpoint_key=key,
        sample_rate=int(hparams.get("sample_rate", 16000)),
    )
