"""The run flow every recipe shares: set up the experiment, train, test the best checkpoint.

A recipe's ``__main__`` then reads::

    hparams, run_opts = setup_experiment(sys.argv[1:])
    run_on_main(prepare_data, kwargs={"hparams": hparams})
    train_and_evaluate(MyBrain, hparams, run_opts, *datasets(hparams))

The checkpoint kept during training (``save_and_keep_only(max_keys=[...])``
in :class:`custom_modules.training.brain.EnhancementBrain`) and the one evaluated here
are chosen by the same ``checkpoint_key`` hparam, so they cannot disagree.

What :func:`setup_experiment` checks before any heavy work (data preparation,
model construction), each failure a one-line error and exit status 1:

* the YAML file exists and every override names one of its keys; an override
  of a numeric key must be a number, of a boolean key ``True``/``False``
  (``--lr abc``: "override --lr abc: expected a number like the YAML's 0.001");
* one writer per run folder: rank 0 takes an advisory lock on
  ``<output_folder>/.lock`` (which holds its PID) before anything is written
  there; a second training on the same folder stops at once naming the folder
  and the PID holding it. The lock is a POSIX record lock (``fcntl.lockf``):
  the kernel releases it when the process dies (``kill -9`` included), and,
  unlike ``flock``, DataLoader or metric worker processes forked from the
  trainer do not inherit it, so a killed run can be restarted at once. A
  ``.lock`` file left with a dead PID is simply taken over (logged);
* the output folder is writable (creating the lock file is the test).

Expected errors raised later (missing or unreadable files, bad audio, a
checkpoint that does not fit the model, ``OSError``/``ValueError`` in general)
are printed as one line (``error: ...``) with exit status 1; the traceback
goes to ``<output_folder>/log.txt`` and, with SpeechBrain's ``--debug``, to
the console as usual.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
import traceback
from datetime import date
from pathlib import Path

import speechbrain as sb
import yaml
from hyperpyyaml import load_hyperpyyaml, resolve_references
from ruamel.yaml import YAML

from custom_modules.audio.files import atomic_write_text
from custom_modules.training.checkpoints import CheckpointError

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
_HELD_LOCKS = {}  # resolved lock path -> open file descriptor (kept for the process lifetime)


class ExperimentError(Exception):
    """A problem with the command line, the YAML or the output folder (printed as one line)."""


class RunLockedError(ExperimentError):
    """Another live process trains into the same output folder."""


# Errors printed as one line by recipes (tracebacks with --debug).
EXPECTED_ERRORS = (ExperimentError, OSError, ValueError, CheckpointError)


def _one_line(err) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def install_error_hook(debug: bool) -> None:
    """Make uncaught ``EXPECTED_ERRORS`` print one line (``error: ...``) unless ``debug``.

    Other exceptions keep the previous hook (SpeechBrain's logs the traceback).
    The traceback of an expected error is still written to the log file (DEBUG).
    """
    if debug:
        return
    previous = sys.excepthook
    if getattr(previous, "_one_line_hook", False):
        previous = previous._previous

    def hook(exc_type, exc, tb):
        if not issubclass(exc_type, EXPECTED_ERRORS):
            previous(exc_type, exc, tb)
            return
        logger.debug("".join(traceback.format_exception(exc_type, exc, tb)))
        print(f"error: {_one_line(exc)} (--debug shows the traceback)", file=sys.stderr)

    hook._one_line_hook = True
    hook._previous = previous
    sys.excepthook = hook


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _read_pid(fd) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text.split()[0]) if text else None
    except (OSError, ValueError, IndexError):
        return None


def acquire_run_lock(output_folder) -> Path:
    """Take the one-writer lock of ``output_folder`` (created if needed) for this process.

    Returns the lock file's path. Idempotent within a process.

    Raises
    ------
    RunLockedError
        Another live process holds the lock (the message names it and its PID).
    ExperimentError
        The folder cannot be created or written.
    """
    import fcntl

    folder = Path(output_folder).expanduser().resolve()
    path = folder / LOCK_NAME
    if str(path) in _HELD_LOCKS:
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise ExperimentError(
            f"output folder {folder} is not writable ({err.strerror or err})"
        ) from err
    previous = _read_pid(fd)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EAGAIN):
            os.close(fd)
            holder = f"PID {previous}" if previous else "another process"
            raise RunLockedError(
                f"output folder {folder} is in use by another training ({holder} holds "
                f"{path}); wait for it to end or choose another --output_folder"
            ) from err
        # No record locks on this file system (some network mounts): fall back to the PID.
        if previous and previous != os.getpid() and _pid_alive(previous):
            os.close(fd)
            raise RunLockedError(
                f"output folder {folder} is in use by another training (PID {previous}, "
                f"{path}; this file system has no locks, so only the PID was checked)"
            ) from err
        logger.warning("%s: file locks unsupported here (%s); relying on the PID only", path, err)
    if previous and previous != os.getpid() and not _pid_alive(previous):
        logger.info("Taking over %s from PID %d (no longer running)", path, previous)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    os.fsync(fd)
    _HELD_LOCKS[str(path)] = fd
    return path


def _yaml_scalar_kind(value):
    """The check for a YAML default value: "bool", "number" or None (no check)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return None


def check_overrides(hparams_file, overrides) -> dict:
    """Check command-line overrides against the YAML's top-level keys and default types.

    Arguments
    ---------
    hparams_file : str or Path
        The recipe YAML.
    overrides : str or dict
        SpeechBrain's overrides (YAML text from ``sb.parse_arguments``).

    Returns
    -------
    dict
        The parsed overrides.

    Raises
    ------
    ExperimentError
        An unknown key, or a value whose type does not match a numeric or
        boolean default (the message shows the override and the YAML's value).

    Example
    -------
    >>> path = getfixture("tmp_path") / "h.yaml"
    >>> _ = path.write_text("lr: 0.001\\nbatch_size: 8\\nname: x\\n")
    >>> check_overrides(path, "lr: 1e-4\\nname: y")
    {'lr': 0.0001, 'name': 'y'}
    >>> check_overrides(path, "lr: abc")
    Traceback (most recent call last):
    ...
    custom_modules.training.experiment.ExperimentError: override --lr abc: expected a number like the YAML's 0.001
    """
    yaml = YAML()
    if isinstance(overrides, str):
        try:
            given = yaml.load(overrides) if overrides.strip() else {}
        except Exception as err:  # ruamel raises several unrelated classes
            raise ExperimentError(f"cannot parse the overrides ({_one_line(err)})") from err
    else:
        given = overrides or {}
    given = dict(given or {})
    try:
        with open(hparams_file, encoding="utf-8") as handle:
            defaults = yaml.load(handle)
    except OSError as err:
        raise ExperimentError(f"{hparams_file}: cannot read ({err.strerror or err})") from err
    except Exception as err:
        raise ExperimentError(f"{hparams_file}: not valid YAML ({_one_line(err)})") from err
    if not isinstance(defaults, dict):
        raise ExperimentError(f"{hparams_file}: not a mapping of hyperparameters")
    for key, value in given.items():
        if key not in defaults:
            raise ExperimentError(f"override --{key}: no such key in {hparams_file}")
        kind = _yaml_scalar_kind(defaults[key])
        shown = "null" if value is None else value
        if kind == "number" and _yaml_scalar_kind(value) != "number":
            raise ExperimentError(
                f"override --{key} {shown}: expected a number like the YAML's {defaults[key]}"
            )
        if kind == "bool" and not isinstance(value, bool):
            raise ExperimentError(
                f"override --{key} {shown}: expected True or False like the YAML's {defaults[key]}"
            )
    return given


def _resolved_yaml(hparams_file, overrides) -> str:
    """The YAML text with references resolved (no object constructed), errors as one line."""
    try:
        with open(hparams_file, encoding="utf-8") as handle:
            return resolve_references(handle, overrides).getvalue()
    except (ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ExperimentError(f"{hparams_file}: {_one_line(message)}") from err


def load_hparams(hparams_file, overrides=None):
    """HyperPyYAML load of ``hparams_file`` with ``overrides`` (YAML text or dict)."""
    with open(hparams_file, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides)


def overrides_dict(overrides) -> dict:
    """Overrides (YAML text from ``sb.parse_arguments``, a dict or None) as a new dict.

    Example
    -------
    >>> overrides_dict("{lr: 0.001, batch_size: 4}"), overrides_dict(None)
    ({'lr': 0.001, 'batch_size': 4}, {})
    """
    if isinstance(overrides, str):
        return dict(yaml.safe_load(overrides) or {})
    return dict(overrides or {})


def log_rank_to_stderr(name="custom_modules") -> None:
    """INFO records of ``name`` on stderr (SpeechBrain configures logging on the main process only).

    Used in debug mode on the other ranks of a distributed run, so that what each
    rank reports (e.g. the mixtures of its first training batch) can be read.
    """
    target = logging.getLogger(name)
    if not any(getattr(h, "_sb_enhance_rank", False) for h in target.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
        handler._sb_enhance_rank = True
        target.addHandler(handler)
    target.setLevel(logging.INFO)


def setup_experiment(argv):
    """Parse the command line, join DDP if launched by torchrun, load the YAML.

    Arguments
    ---------
    argv : list of str
        ``[hparams_file, --key value, ...]`` (SpeechBrain's command line).

    Returns
    -------
    (dict, dict)
        The loaded hyperparameters and SpeechBrain's run options.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    install_error_hook(run_opts["debug"])
    if not Path(hparams_file).is_file():
        raise ExperimentError(f"{hparams_file}: hyperparameter file not found")
    check_overrides(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)  # no-op unless launched by torchrun
    resolved = _resolved_yaml(hparams_file, overrides)
    output_folder = YAML().load(resolved).get("output_folder")
    if not isinstance(output_folder, str) or not output_folder:
        raise ExperimentError(f"{hparams_file}: no output_folder")
    if sb.utils.distributed.if_main_process():
        acquire_run_lock(output_folder)
        # Written atomically (SpeechBrain writes it in place): inference may read it any time.
        atomic_write_text(
            Path(output_folder) / "hyperparams.yaml",
            f"# Generated {date.today()} from:\n# {os.path.abspath(hparams_file)}\n"
            f"# yamllint disable\n{resolved}",
        )
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=None,
        overrides=overrides,
    )
    install_error_hook(run_opts["debug"])  # SpeechBrain installed its own
    if run_opts["debug"] and not sb.utils.distributed.if_main_process():
        log_rank_to_stderr()
    # SpeechBrain copies its caller (this file) next to the results; keep the recipe too.
    recipe_script = getattr(sys.modules["__main__"], "__file__", None)
    if recipe_script and sb.utils.distributed.if_main_process():
        shutil.copy(recipe_script, Path(hparams["output_folder"]) / Path(recipe_script).name)
    return hparams, run_opts


def train_and_evaluate(brain_class, hparams, run_opts, train_set, valid_set, test_set):
    """Fit ``brain_class`` then evaluate its best ``checkpoint_key`` checkpoint on the test set.

    Keys read: ``modules``, ``opt_class``, ``checkpointer``, ``epoch_counter``,
    ``train_loader_options``, ``valid_loader_options``, ``test_loader_options``,
    ``checkpoint_key``.

    Returns
    -------
    speechbrain.Brain
        The trained brain (its ``test_summary`` holds the test means).
    """
    brain = brain_class(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    if hasattr(brain.checkpointer, "remove_stale_temporaries"):
        brain.checkpointer.remove_stale_temporaries()  # this process holds the run lock
    brain.fit(
        hparams["epoch_counter"],
        train_set,
        valid_set,
        train_loader_kwargs=hparams["train_loader_options"],
        valid_loader_kwargs=hparams["valid_loader_options"],
    )
    brain.evaluate(
        test_set,
        max_key=hparams["checkpoint_key"],
        test_loader_kwargs=hparams["test_loader_options"],
    )
    return brain
