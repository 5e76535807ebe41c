#!/usr/bin/env python3
"""Recipe: TEMPLATE_TITLE.

A copy of ``recipes/_template`` (see docs/adding_a_recipe.md). Everything an
enhancement recipe shares — on-the-fly mixing, fixed valid/test sets, metrics,
checkpoints kept by ``checkpoint_key``, TensorBoard, the test report — comes
from ``custom_modules``; this file holds only what is specific to the model.

To run::

    python recipes/TEMPLATE_NAME/train.py recipes/TEMPLATE_NAME/hparams/train.yaml \
        --data_folder <DNS-style root or data/demo>
"""

import sys
from pathlib import Path

import speechbrain as sb

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone, uninstalled
from custom_modules.data.recipe_data import enhancement_datasets, prepare_enhancement_data  # noqa: E402
from custom_modules.training.brain import EnhancementBrain  # noqa: E402
from custom_modules.training.experiment import setup_experiment, train_and_evaluate  # noqa: E402


class TemplateBrain(EnhancementBrain):
    """Waveform in, waveform out; replace the model and loss with yours."""

    def compute_forward(self, batch, stage):
        """Enhance the mixtures: (batch, samples) -> (batch, samples)."""
        batch = batch.to(self.device)
        mixture, _ = batch.mixture
        return self.modules.model(mixture.unsqueeze(1)).squeeze(1)

    def compute_objectives(self, predictions, batch, stage):
        """One loss (waveform MSE here); per-utterance metrics on validation and test."""
        target, lengths = batch.target
        loss = self.hparams.loss(predictions, target, lengths)
        if stage != sb.Stage.TRAIN:
            self.evaluate_estimates(batch, predictions, stage)
        else:
            self.log_train_losses(loss=loss)
        return loss


if __name__ == "__main__":
    hparams, run_opts = setup_experiment(sys.argv[1:])
    # Manifests and the fixed valid/test sets: once, on the main process.
    sb.utils.distributed.run_on_main(prepare_enhancement_data, kwargs={"hparams": hparams})
    train_and_evaluate(TemplateBrain, hparams, run_opts, *enhancement_datasets(hparams))
