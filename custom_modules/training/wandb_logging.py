"""Weights & Biases logging of a run, built only when a recipe sets ``use_wandb: True``.

The recipe YAML holds the ``wandb.init`` options as a partial of SpeechBrain's
``speechbrain.utils.train_logger.WandBLogger`` (``wandb_logger: !name:...``,
never built when the flag is off); :func:`start_wandb_run` imports ``wandb``
and builds it, on the main process only (elsewhere there is no run). Nothing
here imports ``wandb`` at module level: with ``use_wandb: False`` it is never
imported.

Every value goes in with the optimizer step as a field (``optimizer_step``, the
x-axis of every chart; W&B's own step only counts the rows): SpeechBrain's
``WandBLogger.log_stats`` would pass the epoch as W&B's step, which must only
grow, so per-step scalars logged before it would make W&B drop the epoch
statistics. Names are TensorBoard's (``loss/train``, ``stoi/valid``,
``train_step/grad_norm``, ``valid_audio/estimate``...).

Offline (``WANDB_MODE=offline``) the run is written under the ``dir`` of the
options (``<output_folder>/wandb/offline-run-*``) and can be uploaded later with
``wandb sync``.
"""

from __future__ import annotations

import math
from pathlib import Path

from custom_modules.audio.levels import limit_peak
from custom_modules.evaluation.plotting import spectrogram_image

STEP_FIELD = "optimizer_step"


def start_wandb_run(wandb_logger, config=None):
    """Build the YAML's ``WandBLogger`` partial with ``wandb.init``; returns the run (None off main).

    Arguments
    ---------
    wandb_logger : callable
        ``functools.partial`` of ``speechbrain.utils.train_logger.WandBLogger``
        holding the ``wandb.init`` keyword arguments (project, name, dir...).
    config : dict, optional
        The run's hyperparameters recorded with the run.
    """
    try:
        import wandb
    except ImportError as error:
        raise ImportError(
            "use_wandb: True needs the wandb package (pip install -r requirements.txt)"
        ) from error
    try:
        logger = wandb_logger(initializer=wandb.init, config=config or {})
    except Exception as error:  # WandBLogger re-raises init errors as a TypeError
        cause = error.__context__ or error
        raise RuntimeError(f"Weights & Biases could not start a run: {cause}") from error
    run = logger.run
    if run is not None:
        run.define_metric(STEP_FIELD)
        run.define_metric("*", step_metric=STEP_FIELD)
    return run


def scalar_config(hparams) -> dict:
    """The numbers, strings and booleans of a hyperparameter namespace or dict.

    Example
    -------
    >>> scalar_config({"lr": 0.001, "model": object(), "use_wandb": True})
    {'lr': 0.001, 'use_wandb': True}
    """
    items = hparams.items() if isinstance(hparams, dict) else vars(hparams).items()
    return {k: v for k, v in items if isinstance(v, (bool, int, float, str))}


def epoch_scalars(epoch, stats_by_stage) -> dict:
    """TensorBoard's names of epoch statistics: ``{"<stat>/<stage>": value, "epoch": epoch}``.

    Example
    -------
    >>> epoch_scalars(2, {"train": {"loss": 1.5}, "valid": {"loss": 1.2, "stoi": 0.8}})
    {'epoch': 2, 'loss/train': 1.5, 'loss/valid': 1.2, 'stoi/valid': 0.8}
    """
    values = {"epoch": epoch}
    for stage, stats in stats_by_stage.items():
        values.update({f"{name}/{stage}": float(v) for name, v in (stats or {}).items()})
    return values


def log_values(run, values, step) -> None:
    """Log ``values`` (scalars or W&B media) at optimizer step ``step``."""
    run.log({**values, STEP_FIELD: int(step)})


def log_example_media(run, tag, signals, sr, step) -> None:
    """Audio of every signal and their spectrograms (``<tag>_audio/<name>``, ``<tag>_spectrogram``)."""
    import wandb

    values = {
        f"{tag}_audio/{name}": wandb.Audio(limit_peak(signal), sample_rate=sr, caption=name)
        for name, signal in signals.items()
    }
    values[f"{tag}_spectrogram"] = wandb.Image(spectrogram_image(signals, sr=sr))
    log_values(run, values, step)


def log_test_report(run, summary, metrics, examples, folder, step) -> None:
    """The test means into the run summary (``<metric>_<part>/test``) and the saved examples.

    ``examples`` are :meth:`custom_modules.training.reporting.ExampleChooser.examples`,
    whose files lie in ``folder/examples/<id>/``; each is one row of
    ``test_audio/<name>`` and ``test_spectrogram`` (captions: id, why saved).
    """
    import wandb

    means = {
        f"{key}_{part}/test": summary[f"{key}_{part}"]
        for key in metrics
        for part in ("mixture", "estimate", "delta")
        if math.isfinite(summary.get(f"{key}_{part}", math.nan))
    }
    run.summary.update({**means, "num_utterances/test": summary["num_utterances"]})
    for example in examples:
        example_folder = Path(folder) / "examples" / example["id"]
        caption = f"{example['id']} ({' and '.join(example['reasons'])})"
        values = {
            f"test_audio/{name}": wandb.Audio(
                str(example_folder / f"{name}.wav"), caption=f"{caption} {name}"
            )
            for name in example["signals"]
        }
        values["test_spectrogram"] = wandb.Image(
            str(example_folder / "spectrograms.png"), caption=caption
        )
        log_values(run, values, step)
