#!/usr/bin/env python3
"""Recipe: Denoising WaveNet (Rethage, Pons & Serra, ICASSP 2018), trained with the energy-conserving loss.

Waveform in, waveform out: a non-causal WaveNet (``custom_modules/models/denoising_wavenet.py``)
predicts the central *target field* of each input fragment from a receptive
field of ``receptive_field`` samples around every output sample.

* Training: each training crop (``crop_sec``) is one fixed-size fragment; the
  model predicts its target field in one pass (``mode="valid"``) and the
  energy-conserving loss (L1 on the speech plus L1 on the implied noise
  ``mixture - speech``) compares it with the centre of the clean target.
* Validation and test: whole utterances (``mode="same"``: zero-padded edges,
  overlapping fragments of ``target_field`` outputs, ``max_fragments`` per
  pass, so memory is bounded by the fragment size); the best-STOI checkpoint
  (``checkpoint_key``) is tested.
* Training corruption (``train_corruption``): the shared on-the-fly noise
  mixer (``mixer``) or the fixed STFT-corruption procedure of the DCUNet
  recipe (``stft``); the test set is evaluated under every type of
  ``test_corruptions`` (``custom_modules/training/corruption_runs.py``).

To run::

    python recipes/denoising_wavenet/train.py recipes/denoising_wavenet/hparams/wavenet.yaml \
        --data_folder <DNS-style root>

    # CPU size, on the offline demo corpus (python -m data_prepare.demo --out data/demo)
    python recipes/denoising_wavenet/train.py \
        recipes/denoising_wavenet/hparams/wavenet_cpu.yaml --data_folder data/demo

Any YAML key can be overridden (``--train_corruption stft``); ``--debug``
runs a few batches of a few epochs. Enhance files of any length with the
trained run: ``python -m custom_modules.enhance --run <output_folder> ...``.
"""

import sys
from pathlib import Path

import speechbrain as sb
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone, uninstalled
from custom_modules.data.recipe_data import prepare_enhancement_data  # noqa: E402
from custom_modules.training.brain import EnhancementBrain  # noqa: E402
from custom_modules.training.corruption_runs import train_and_test_corruptions  # noqa: E402
from custom_modules.training.experiment import setup_experiment  # noqa: E402


class WaveNetBrain(EnhancementBrain):
    """Target fields of fragments in training, whole signals on validation and test."""

    def compute_forward(self, batch, stage):
        """``(batch, samples)`` mixtures -> target fields (training) or whole estimates."""
        batch = batch.to(self.device)
        mixture, _ = batch.mixture
        mode = "valid" if stage == sb.Stage.TRAIN else "same"
        return self.modules.model(mixture, mode=mode)

    def compute_objectives(self, predictions, batch, stage):
        """Energy-conserving loss (on the target fields in training); metrics otherwise."""
        mixture, lengths = batch.mixture
        target, _ = batch.target
        if stage == sb.Stage.TRAIN:  # the samples the target fields stand for
            mixture, lengths = self.hparams.model.center(mixture, lengths)
            target, _ = self.hparams.model.center(target)
        total, terms = self.hparams.loss(predictions, target, mixture, lengths)
        if stage == sb.Stage.TRAIN:
            self.log_train_losses(loss=total, **terms)
        else:
            self.evaluate_estimates(batch, predictions, stage)
        return total

    def estimate_from_outputs(self, outputs):
        """Training target fields, zero-padded back to the fragment (for TensorBoard audio)."""
        edge = self.hparams.model.lookahead
        return F.pad(outputs.detach(), (edge, edge))


if __name__ == "__main__":
    hparams, run_opts = setup_experiment(sys.argv[1:])
    # Manifests and the fixed (mixer) valid/test sets: once, on the main process.
    sb.utils.distributed.run_on_main(prepare_enhancement_data, kwargs={"hparams": hparams})
    # One test report per corruption type in <test_report_folder>/<type>/, then merged.
    train_and_test_corruptions(WaveNetBrain, hparams, run_opts)
