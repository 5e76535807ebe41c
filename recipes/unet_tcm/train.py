#!/usr/bin/env python3
"""Recipe: UNet-TCM complex spectral mapping for speech enhancement.

The model maps the complex STFT of a noisy, possibly reverberant mixture to
the complex STFT of the target (dry, early or partially dereverberated
speech, see ``reverb_target``). Training mixtures are drawn on the fly from
DNS-style speech, MUSAN noise and SLR26/SLR28 RIRs; validation and test sets
are fixed and seeded. The best-STOI checkpoint is evaluated on the test set.

To run::

    python recipes/unet_tcm/train.py recipes/unet_tcm/hparams/unet.yaml \
        --data_folder <DNS-style root>

    # CPU size, on the offline demo corpus (python -m data_prepare.demo --out data/demo)
    python recipes/unet_tcm/train.py recipes/unet_tcm/hparams/unet_cpu.yaml \
        --data_folder data/demo

Any YAML key can be overridden (``--lr 1e-4``); ``--debug`` runs a few
batches of a few epochs.
"""

import sys
from pathlib import Path

import speechbrain as sb

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone, uninstalled
from custom_modules.data.recipe_data import enhancement_datasets, prepare_enhancement_data  # noqa: E402
from custom_modules.training.brain import EnhancementBrain  # noqa: E402
from custom_modules.training.experiment import setup_experiment, train_and_evaluate  # noqa: E402


class UNetTCMBrain(EnhancementBrain):
    """Complex spectral mapping, waveform in and out.

    ``compute_forward`` is the shared default: ``modules.model(mixture)``.
    """

    def compute_objectives(self, predictions, batch, stage):
        """Weighted loss terms (spectral, SI-SDR...); metrics on validation and test."""
        target, lengths = batch.target
        total, terms = self.hparams.loss(predictions, target, lengths)
        if stage == sb.Stage.TRAIN:
            self.log_train_losses(loss=total, **terms)
        else:
            self.evaluate_estimates(batch, predictions, stage)
        return total


if __name__ == "__main__":
    hparams, run_opts = setup_experiment(sys.argv[1:])
    # Manifests and the fixed valid/test sets: once, on the main process.
    sb.utils.distributed.run_on_main(prepare_enhancement_data, kwargs={"hparams": hparams})
    train_and_evaluate(UNetTCMBrain, hparams, run_opts, *enhancement_datasets(hparams))
