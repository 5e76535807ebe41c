"""Training under one corruption, testing under several: the STFT corruption or the mixer.

Recipes that can train on the fixed STFT-corruption procedure
(:class:`custom_modules.data.corruption.StftCorruption`, applied on the fly to
clean targets) as well as on the shared noise mixer (DCUNet, the Denoising
WaveNet) read the same keys and share this flow:

* ``train_corruption``: ``"stft"`` or ``"mixer"``; training and validation
  sets are given that corruption (validation with ``valid_set_seed``);
* ``test_corruptions``: the test set (the same clean utterances) is evaluated
  with the best ``checkpoint_key`` checkpoint once per listed corruption,
  with ``test_set_seed``, into ``<test_report_folder>/<corruption>/``; the
  reports are then merged into ``<test_report_folder>/per_utterance.csv``
  (a ``corruption`` column), ``summary.json``, ``results_table.md`` and
  ``index.html`` (one page over all, with every report's examples);
* ``stft_corruption``: the :class:`~custom_modules.data.corruption.StftCorruption`.
"""

from __future__ import annotations

from pathlib import Path

import speechbrain as sb

from custom_modules.data.corruption import StftCorruptedDataset, merge_test_reports
from custom_modules.data.recipe_data import enhancement_datasets
from custom_modules.training.experiment import train_and_evaluate
from custom_modules.training.reporting import METRIC_LABELS, write_merged_report_page

CORRUPTIONS = ("stft", "mixer")


def corrupted(dataset, corruption, seed, hparams):
    """``dataset`` under ``corruption``: as is ("mixer") or STFT-corrupted targets ("stft")."""
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; expected one of {CORRUPTIONS}")
    if corruption == "mixer":
        return dataset
    return StftCorruptedDataset(dataset, hparams["stft_corruption"], seed=seed)


def corruption_datasets(hparams):
    """Training and validation sets under ``train_corruption``; a test set per corruption type."""
    train, valid, test = enhancement_datasets(hparams)
    kind = hparams["train_corruption"]
    if not hparams["test_corruptions"]:
        raise ValueError("test_corruptions is empty; list at least one of " + str(CORRUPTIONS))
    tests = {
        name: corrupted(test, name, hparams["test_set_seed"], hparams)
        for name in hparams["test_corruptions"]
    }
    return (
        corrupted(train, kind, hparams["seed"], hparams),
        corrupted(valid, kind, hparams["valid_set_seed"], hparams),
        tests,
    )


def train_and_test_corruptions(brain_class, hparams, run_opts, labels=None):
    """Train under ``train_corruption``, test the best checkpoint under each test corruption.

    Arguments
    ---------
    brain_class : type
        An :class:`~custom_modules.training.brain.EnhancementBrain` subclass.
    hparams, run_opts : dict
        As returned by :func:`custom_modules.training.experiment.setup_experiment`
        (data already prepared).
    labels : dict, optional
        Table labels of metrics beyond ``METRIC_LABELS`` (e.g. wSDR).

    Returns
    -------
    speechbrain.Brain
    """
    train_set, valid_set, test_sets = corruption_datasets(hparams)
    report_root = Path(hparams["test_report_folder"])
    names = list(test_sets)
    hparams["test_report_folder"] = str(report_root / names[0])
    brain = train_and_evaluate(
        brain_class, hparams, run_opts, train_set, valid_set, test_sets[names[0]]
    )
    for name in names[1:]:
        brain.hparams.test_report_folder = str(report_root / name)
        brain.evaluate(
            test_sets[name],
            max_key=hparams["checkpoint_key"],
            test_loader_kwargs=hparams["test_loader_options"],
        )
    if sb.utils.distributed.if_main_process():
        merge_test_reports(
            report_root,
            names,
            hparams["test_metrics"],
            column="corruption",
            labels={**METRIC_LABELS, **(labels or {})},
        )
        write_merged_report_page(
            report_root, names, hparams["test_metrics"], hparams["checkpoint_key"]
        )
        print(f"\nTest set per corruption type ({report_root / 'results_table.md'}):")
        print((report_root / "results_table.md").read_text())
    return brain
