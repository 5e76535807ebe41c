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
``summary.json`` and ``results_table.md``.

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
from custom_modules.data.recipe_data import prepare_enhancement_data  # noqa: E402
from custom_modules.evaluation.wsdr import WSDRMetricMixin  # noqa: E402
from custom_modules.training.brain import EnhancementBrain  # noqa: E402
from custom_modules.training.corruption_runs import train_and_test_corruptions  # noqa: E402
from custom_modules.training.experiment import setup_experiment  # noqa: E402


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


if __name__ == "__main__":
    hparams, run_opts = setup_experiment(sys.argv[1:])
    # Manifests and the fixed (mixer) valid/test sets: once, on the main process.
    sb.utils.distributed.run_on_main(prepare_enhancement_data, kwargs={"hparams": hparams})
    # One test report per corruption type in <test_report_folder>/<type>/, then merged.
    train_and_test_corruptions(DCUNetBrain, hparams, run_opts, labels={"wsdr": "wSDR (-loss)"})
