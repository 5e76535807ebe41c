"""Crash-safe checkpoints: :class:`AtomicCheckpointer`, SpeechBrain's ``Checkpointer`` made atomic.

SpeechBrain 1.1.2 writes a checkpoint in place: ``CKPT.yaml`` first, then
every ``<name>.ckpt``. A process killed in between leaves a folder that looks
like the newest checkpoint, and every restart fails on it (``KeyError``,
``EOFError``, "failed reading zip archive"). This class keeps SpeechBrain's
interface and folder layout and changes how folders come and go:

* **Saving**: every file is written into a hidden sibling folder
  ``.CKPT+<name>.tmp``, then ``CKPT.yaml`` and ``COMPLETE.json`` (the name and
  size of every file), every file and the folder are fsynced, and the folder
  is renamed to ``CKPT+<name>`` (then the parent folder is fsynced). A
  checkpoint is therefore either absent or complete.
* **Deleting** (``save_and_keep_only``): the folder is first renamed to a
  hidden ``.CKPT+<name>.deleting``, then removed; a kill in between leaves
  nothing that looks like a checkpoint.
* **Stale folders** (``.tmp``/``.deleting`` left by a killed process) are
  removed by :meth:`AtomicCheckpointer.remove_stale_temporaries`, called by
  the training (``custom_modules.training.experiment.train_and_evaluate``, under the
  run lock) and before the first save of a process. Nothing is removed when
  the checkpointer is only constructed (inference reads run folders without
  writing to them).
* **Listing** (``find_checkpoint(s)``, ``list_checkpoints``): a checkpoint
  with a problem (:func:`checkpoint_problem`: unreadable ``CKPT.yaml``, a file
  of ``COMPLETE.json`` missing or of another size, an empty ``.ckpt``, a torch
  file that is not a complete zip archive, or, for checkpoints written by
  SpeechBrain's own ``Checkpointer``, no file for a registered recoverable) is
  skipped with one warning naming the folder and the reason.
* **Loading** (``recover_if_possible``): candidates are taken in SpeechBrain's
  order (newest, or best by ``max_key``/``min_key``); each one's files are
  read once and every member of its torch archives is checked against its
  CRC before any hook runs, so an unreadable checkpoint is skipped (warning)
  and the next one is loaded. When none is usable the run starts from
  scratch, as when there is no checkpoint (with a warning). A hook that fails
  on a checkpoint whose files are intact (e.g. a model of another size) is
  an error (:class:`CheckpointError`) naming the folder.

Under DDP all ranks call ``save_checkpoint`` (as with SpeechBrain); rank 0
creates and renames the folder, after a barrier that lets every rank finish
its files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
from pathlib import Path

import yaml
from speechbrain.utils.checkpoints import (
    DEFAULT_SAVE_HOOKS,
    METAFNAME,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    ckpt_recency,
    get_default_hook,
)
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast, if_main_process

logger = logging.getLogger(__name__)

RECORD_FILE = "COMPLETE.json"  # names and sizes of a checkpoint's files, written last
TMP_SUFFIX = ".tmp"
TRASH_SUFFIX = ".deleting"
OLD_SUFFIX = ".old"  # a checkpoint of the same (custom) name being replaced
_ZIP_MAGIC = b"PK\x03\x04"
_WARNED = set()  # (folder, reason) pairs already reported in this process


class CheckpointError(RuntimeError):
    """A checkpoint whose files are intact but cannot be loaded into this run's objects."""


def _warn_once(folder, reason: str) -> None:
    key = (str(folder), reason)
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning("Skipping checkpoint %s: %s", folder, reason)


def _fsync(path, directory=False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _zip_problem(path: Path, deep: bool):
    """Why the torch (zip) file ``path`` cannot be read, or None (non-zip files: None)."""
    with open(path, "rb") as handle:
        if handle.read(4) != _ZIP_MAGIC:
            return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip() if deep else None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return f"not a complete torch file ({err})"
    if bad is not None:
        return f"corrupt member {bad!r} (CRC mismatch)"
    return None


def checkpoint_problem(folder, required=(), deep=False):
    """Why the checkpoint folder ``folder`` cannot be used, or None when it looks complete.

    Arguments
    ---------
    folder : str or Path
        A ``CKPT+...`` folder.
    required : iterable of str
        Recoverable names that must have a ``<name>.ckpt`` file; checked only
        for folders without ``COMPLETE.json`` (written by SpeechBrain's own
        ``Checkpointer``, whose saves are not atomic).
    deep : bool
        Also read every member of the torch archives and check its CRC
        (reads the whole checkpoint once).

    Example
    -------
    >>> folder = getfixture("tmp_path") / "CKPT+x"
    >>> folder.mkdir()
    >>> _ = (folder / "CKPT.yaml").write_text("end-of-epoch: true\\nunixtime: 1.0\\n")
    >>> checkpoint_problem(folder, required=["model"])
    'no model.ckpt (saving was interrupted?)'
    >>> _ = (folder / "model.ckpt").write_bytes(b"")
    >>> checkpoint_problem(folder, required=["model"])
    'model.ckpt is empty'
    """
    folder = Path(folder)
    try:
        meta = yaml.safe_load((folder / METAFNAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        return f"unreadable {METAFNAME} ({err})"
    if not isinstance(meta, dict) or "unixtime" not in meta or "end-of-epoch" not in meta:
        return f"{METAFNAME} is incomplete (no unixtime / end-of-epoch)"
    record_path = folder / RECORD_FILE
    if record_path.exists():
        try:
            files = json.loads(record_path.read_text(encoding="utf-8"))["files"]
            files = {str(name): int(size) for name, size in files.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            return f"unreadable {RECORD_FILE} ({err})"
        for name, size in files.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing ({RECORD_FILE} lists it)"
            actual = path.stat().st_size
            if actual != size:
                return f"{name} has {actual} bytes, {size} were written"
    else:
        for name in required:
            if not (folder / f"{name}{PARAMFILE_EXT}").is_file():
                return f"no {name}{PARAMFILE_EXT} (saving was interrupted?)"
    for path in sorted(folder.glob(f"*{PARAMFILE_EXT}")):
        try:
            if path.stat().st_size == 0:
                return f"{path.name} is empty"
            problem = _zip_problem(path, deep)
        except OSError as err:
            return f"{path.name} is unreadable ({err})"
        if problem is not None:
            return f"{path.name}: {problem}"
    return None


class AtomicCheckpointer(Checkpointer):
    """SpeechBrain's ``Checkpointer`` with atomic saves and deletions (see the module docstring).

    Same arguments as ``speechbrain.utils.checkpoints.Checkpointer``; a drop-in
    replacement in a recipe YAML::

        checkpointer: !new:custom_modules.training.checkpoints.AtomicCheckpointer
            checkpoints_dir: !ref <save_folder>
            recoverables: ...

    Example
    -------
    >>> import torch
    >>> folder = getfixture("tmp_path") / "save"
    >>> model = torch.nn.Linear(2, 1)
    >>> checkpointer = AtomicCheckpointer(folder, {"model": model})
    >>> first = checkpointer.save_checkpoint(meta={"stoi": 0.5})
    >>> sorted(p.name for p in first.path.iterdir())
    ['CKPT.yaml', 'COMPLETE.json', 'model.ckpt']
    >>> _ = (first.path / "model.ckpt").write_bytes(b"cut")  # damaged after the fact
    >>> checkpointer.find_checkpoint(max_key="stoi") is None
    True
    """

    def __init__(
        self,
        checkpoints_dir,
        recoverables=None,
        custom_load_hooks=None,
        custom_save_hooks=None,
        allow_partial_load=False,
    ):
        super().__init__(
            checkpoints_dir,
            recoverables=recoverables,
            custom_load_hooks=custom_load_hooks,
            custom_save_hooks=custom_save_hooks,
            allow_partial_load=allow_partial_load,
        )
        self._stale_checked = False
        self._unusable = {}  # folder -> reason, found when loading (deep check)

    @classmethod
    def wrapping(cls, checkpointer: Checkpointer) -> AtomicCheckpointer:
        """An ``AtomicCheckpointer`` on the folder, recoverables and hooks of ``checkpointer``."""
        if isinstance(checkpointer, AtomicCheckpointer):
            return checkpointer
        wrapped = cls(
            checkpointer.checkpoints_dir,
            custom_load_hooks=checkpointer.custom_load_hooks,
            custom_save_hooks=checkpointer.custom_save_hooks,
            allow_partial_load=checkpointer.allow_partial_load,
        )
        wrapped.recoverables = checkpointer.recoverables
        wrapped.optional_recoverables = checkpointer.optional_recoverables
        return wrapped

    # ---- what a complete checkpoint needs ---------------------------------
    def required_names(self) -> list:
        """Recoverables a checkpoint must have a file for (SpeechBrain's load rules)."""
        if self.allow_partial_load:
            return []
        return [
            name
            for name in self.recoverables
            if "dataloader" not in name and not self.optional_recoverables.get(name, False)
        ]

    def problem(self, checkpoint, deep=False):
        """Why ``checkpoint`` (a ``Checkpoint`` or a folder) cannot be used, or None."""
        folder = getattr(checkpoint, "path", checkpoint)
        return checkpoint_problem(folder, self.required_names(), deep=deep)

    def unreadable(self, checkpoint):
        """Deep check of ``checkpoint`` before loading it: the reason it cannot be read, or None.

        A checkpoint found unreadable is reported once (warning) and left out
        of the listings of this checkpointer from then on.
        """
        reason = self.problem(checkpoint, deep=True)
        if reason is not None:
            self._unusable[str(getattr(checkpoint, "path", checkpoint))] = reason
            _warn_once(getattr(checkpoint, "path", checkpoint), reason)
        return reason

    # ---- stale folders ----------------------------------------------------
    def remove_stale_temporaries(self) -> list:
        """Remove what killed saves/deletions left (hidden ``.CKPT+*`` folders); return them.

        Only the one process writing the run may call this (the run lock of
        ``custom_modules.training.experiment`` ensures it): another process's save in
        progress would be removed.
        """
        self._stale_checked = True
        removed = []
        if not if_main_process() or not self.checkpoints_dir.is_dir():
            return removed
        for path in sorted(self.checkpoints_dir.iterdir()):
            name = path.name
            if not (name.startswith(".CKPT") and path.is_dir()):
                continue
            if name.endswith(OLD_SUFFIX):
                final = path.with_name(name[1 : -len(OLD_SUFFIX)])
                if not final.exists():  # killed between the two renames of a replacement
                    os.rename(path, final)
                    logger.warning(
                        "Restored checkpoint %s (its replacement was interrupted)", final
                    )
                    continue
            elif not name.endswith((TMP_SUFFIX, TRASH_SUFFIX)):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            logger.info("Removed %s (left by an interrupted checkpoint save or deletion)", path)
        return removed

    # ---- saving -----------------------------------------------------------
    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):  # noqa: B006 (SpeechBrain's signature)
        """Save a checkpoint atomically; same arguments and return value as SpeechBrain's."""
        final = tmp = None
        if if_main_process():
            if not self._stale_checked:
                self.remove_stale_temporaries()
            self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
            if name is None:
                final = self._new_checkpoint_dirpath()
            else:
                final = self._custom_checkpoint_dirpath(name)
            tmp = final.with_name(f".{final.name}{TMP_SUFFIX}")
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        final, tmp = ddp_broadcast((final, tmp), src=0)

        for key, obj in self.recoverables.items():
            savepath = tmp / f"{key}{PARAMFILE_EXT}"
            if key in self.custom_save_hooks:
                self.custom_save_hooks[key](obj, savepath)
                continue
            default_hook = get_default_hook(obj, DEFAULT_SAVE_HOOKS)
            if default_hook is None:
                raise RuntimeError(
                    f"Don't know how to save {type(obj)}. Register default hook "
                    "or add custom hook for this object."
                )
            default_hook(obj, savepath)
        ddp_barrier()  # every rank has written its files

        if not if_main_process():
            return None
        saved_meta = self._save_checkpoint_metafile(tmp / METAFNAME, meta, end_of_epoch)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        with open(tmp / RECORD_FILE, "w", encoding="utf-8") as handle:
            json.dump({"files": files}, handle, indent=1)
        for file_name in [*files, RECORD_FILE]:
            _fsync(tmp / file_name)
        _fsync(tmp, directory=True)
        old = None
        if final.exists():  # a custom name saved again: swap the old one out
            old = final.with_name(f".{final.name}{OLD_SUFFIX}")
            if old.exists():
                shutil.rmtree(old)
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync(self.checkpoints_dir, directory=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
        logger.log(verbosity, f"Saved an {kind} checkpoint in {final}")
        paramfiles = {
            key: final / f"{key}{PARAMFILE_EXT}"
            for key in self.recoverables
            if (final / f"{key}{PARAMFILE_EXT}").exists()
        }
        return Checkpoint(final, saved_meta, paramfiles)

    # ---- listing and loading ----------------------------------------------
    def list_checkpoints(self):
        """The complete checkpoints (others are skipped with a warning naming the reason)."""
        usable = []
        for folder in self._list_checkpoint_dirs():
            reason = self._unusable.get(str(folder)) or self.problem(folder)
            if reason is not None:
                _warn_once(folder, reason)
                continue
            usable.extend(self._construct_checkpoint_objects([folder]))
        return usable

    def recover_if_possible(
        self, importance_key=None, max_key=None, min_key=None, ckpt_predicate=None
    ):
        """Load the first usable checkpoint in SpeechBrain's order; None when none is usable."""
        candidates = self.find_checkpoints(
            importance_key=importance_key,
            max_key=max_key,
            min_key=min_key,
            ckpt_predicate=ckpt_predicate,
            max_num_checkpoints=None,
        )
        for checkpoint in candidates:
            if self.unreadable(checkpoint) is not None:
                continue
            try:
                self.load_checkpoint(checkpoint)
            except Exception as err:
                reason = " ".join(f"{type(err).__name__}: {err}".split())
                raise CheckpointError(
                    f"{checkpoint.path}: cannot load this checkpoint into the run's objects "
                    f"({reason}); was the configuration changed?"
                ) from err
            return checkpoint
        if candidates:
            logger.warning(
                "None of the %d checkpoint(s) in %s could be used (see the warnings above): "
                "starting without one",
                len(candidates),
                self.checkpoints_dir,
            )
        else:
            logger.info("Would load a checkpoint here, but none found yet.")
        return None

    # ---- deleting -----------------------------------------------------------
    def delete_checkpoints(
        self,
        *,
        num_to_keep=1,
        min_keys=None,
        max_keys=None,
        importance_keys=[ckpt_recency],  # noqa: B006 (SpeechBrain's signature)
        ckpt_predicate=None,
        verbosity=logging.INFO,
    ):
        """SpeechBrain's ``delete_checkpoints``, each folder renamed away before it is removed."""
        if num_to_keep < 0:
            raise ValueError("Number of checkpoints to keep must be positive.")
        potential, protected = set(), set()
        keys = [{"min_key": key} for key in min_keys or []]
        keys.extend({"max_key": key} for key in max_keys or [])
        keys.extend({"importance_key": key} for key in importance_keys)
        for key_kwargs in keys:
            key_kwargs["ckpt_predicate"] = ckpt_predicate
            potential.update(self.find_checkpoints(**key_kwargs))
            protected.update(self.find_checkpoints(max_num_checkpoints=num_to_keep, **key_kwargs))
        ddp_barrier()
        if if_main_process():
            for checkpoint in potential - protected:
                self._remove_checkpoint(checkpoint, verbosity)
        ddp_barrier()

    def _remove_checkpoint(self, checkpoint, verbosity) -> None:
        folder = Path(checkpoint.path)
        if not Checkpointer._is_checkpoint_dir(folder):
            raise RuntimeError(f"{folder} does not appear to be a checkpoint; not deleting it")
        trash = folder.with_name(f".{folder.name}{TRASH_SUFFIX}")
        if trash.exists():
            shutil.rmtree(trash)
        os.rename(folder, trash)
        _fsync(folder.parent, directory=True)
        shutil.rmtree(trash, ignore_errors=True)
        logger.log(verbosity, f"Deleted checkpoint in {folder}")
