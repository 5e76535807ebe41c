#!/usr/bin/env python3
"""Recipe: Deep Complex U-Net (DCUNet-10 / DCUNet-16) denoising, trained with wSDR.

Waveform in, waveform out: the model (``custom_modules/models/dcunet.py``)
estimates a bounded-tanh complex ratio mask on the STFT of its input. The
training corruption is an hparam (``train_corruption``):

* ``stft``: the fixed STFT-corruption procedure (``custom_modules/data/corruption.py``)
  applied on the fly to clean targets (new draws each epoch);
* ``mixer``: the shared on-the-fly noise/RIR mixer.

Validation uses the training corruption (the best checkpoint is chosen by
``checkpoint_key``); the test set (the same clean utterances) is evaluated
once per corruption type of ``test_corruptions``, with fixed per-item seeds,
into ``<test_report_folder>/<type>/``, then merged into
``<test_report_folder>/per_utterance.csv`` (a ``corruption`` column),
``summary.json``, ``results_table.md`` and ``index.html`` (one page over all).

To run::

    python recipes/dcunet/train.py recipes/dcunet/hparams/dcunet10.yaml \
        --data_folder <DNS-style root>

    # CPU size, on the offline demo corpus (python -m data_prepare.demo --out data/demo)
    python recipes/dcunet/train.py recipes/dcunet/hparams/dcunet_cpu.yaml \
        --data_folder data/demo

Any YAML key can be overridden (``--train_corruption mixer``); ``--debug``
runs a few batches of a few epochs.
"""

import sys
from pathlib import Path

import speechbrain as sb

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone, uninstalled
from custom_modules.data.corruption import StftCorruptedDataset, merge_test_reports  # noqa: E402
from custom_modules.data.recipe_data import enhancement_datasets, prepare_enhancement_data  # noqa: E402
from custom_modules.evaluation.wsdr import WSDRMetricMixin  # noqa: E402
from custom_modules.training.brain import EnhancementBrain  # noqa: E402
from custom_modules.training.experiment import setup_experiment, train_and_evaluate  # noqa: E402
from custom_modules.training.reporting import METRIC_LABELS, write_merged_report_page  # noqa: E402

CORRUPTIONS = ("stft", "mixer")


class DCUNetBrain(WSDRMetricMixin, EnhancementBrain):
    """DCUNet masking; loss: weighted SDR against the clean target."""

    def compute_objectives(self, predictions, batch, stage):
        """wSDR loss; metrics (wSDR, SI-SDR, PESQ, STOI) on validation and test."""
        mixture, lengths = batch.mixture
        target, _ = batch.target
        loss = self.hparams.loss(predictions, target, mixture, lengths)
        if stage == sb.Stage.TRAIN:
            self.log_train_losses(wsdr_loss=loss)
        else:
            self.evaluate_estimates(batch, predictions, stage)
        return loss


def corrupted(dataset, corruption, seed, hparams):
    """``dataset`` under ``corruption``: as is ("mixer") or STFT-corrupted targets ("stft")."""
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; expected one of {CORRUPTIONS}")
    if corruption == "mixer":
        return dataset
    return StftCorruptedDataset(dataset, hparams["stft_corruption"], seed=seed)


def dcunet_datasets(hparams):
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


def evaluate_other_corruptions(brain, hparams, test_sets, report_root):
    """Evaluate the best checkpoint on the remaining test sets, then merge all reports."""
    for name, test_set in list(test_sets.items())[1:]:
        brain.hparams.test_report_folder = str(report_root / name)
        brain.evaluate(
            test_set,
            max_key=hparams["checkpoint_key"],
            test_loader_kwargs=hparams["test_loader_options"],
        )
    if sb.utils.distributed.if_main_process():
        merge_test_reports(
            report_root,
            list(test_sets),
            hparams["test_metrics"],
            column="corruption",
            labels={**METRIC_LABELS, "wsdr": "wSDR (-loss)"},
        )
        write_merged_report_page(
            report_root, list(test_sets), hparams["test_metrics"], hparams["checkpoint_key"]
        )
        print(f"\nTest set per corruption type ({report_root / 'results_table.md'}):")
        print((report_root / "results_table.md").read_text())


if __name__ == "__main__":
    hparams, run_opts = setup_experiment(sys.argv[1:])
    # Manifests and the fixed (mixer) valid/test sets: once, on the main process.
    sb.utils.distributed.run_on_main(prepare_enhancement_data, kwargs={"hparams": hparams})
    train_set, valid_set, test_sets = dcunet_datasets(hparams)
    # One test report per corruption type in <test_report_folder>/<type>/, then merged.
    report_root = Path(hparams["test_report_folder"])
    first = next(iter(test_sets))
    hparams["test_report_folder"] = str(report_root / first)
    brain = train_and_evaluate(
        DCUNetBrain, hparams, run_opts, train_set, valid_set, test_sets[first]
    )
    evaluate_other_corruptions(brain, hparams, test_sets, report_root)
