#!/usr/bin/env python3
"""Recipe: spectral-masking speech enhancement (the SpeechBrain template, as a baseline).

A mask network (``custom_modules/models/mask_net.py``) reads the log1p STFT
magnitudes of a noisy, possibly reverberant mixture and predicts a mask; the
masked log1p magnitudes are trained with an MSE against the target's
("signal approximation"), and the waveform is resynthesised with the noisy
phase. Data, fixed validation/test sets, metrics, checkpoint selection (best
STOI) and the test report are shared with the other enhancement recipes
(``custom_modules/data/recipe_data.py``, ``custom_modules/training/brain.py``), so the
results compare with UNet-TCM's on the same test set.

To run::

    python recipes/spectral_mask/train.py recipes/spectral_mask/hparams/train.yaml \
        --data_folder <DNS-style root>

    # CPU size, on the offline demo corpus (python -m data_prepare.demo --out data/demo)
    python recipes/spectral_mask/train.py recipes/spectral_mask/hparams/train_cpu.yaml \
        --data_folder data/demo

    # then a folder loadable by SpectralMaskEnhancement.from_hparams
    python -m custom_modules.export --run results/spectral_mask_cpu/1234 --out pretrained/spectral_mask

Any YAML key can be overridden (``--lr 1e-4``); ``--debug`` runs a few
batches of a few epochs.
"""

import sys
from pathlib import Path

import speechbrain as sb
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone, uninstalled
from custom_modules.data.recipe_data import enhancement_datasets, prepare_enhancement_data  # noqa: E402
from custom_modules.training.brain import EnhancementBrain  # noqa: E402
from custom_modules.training.experiment import setup_experiment, train_and_evaluate  # noqa: E402


class SEBrain(EnhancementBrain):
    """Spectral masking on log1p magnitudes, resynthesis with the noisy phase."""

    def compute_features(self, wavs):
        """log1p STFT magnitudes, (batch, samples) -> (batch, frames, freqs).

        The same computation as ``SpectralMaskEnhancement.compute_features``,
        so a trained model behaves the same through that interface.
        """
        spectrum = self.hparams.compute_stft(wavs)
        return torch.log1p(self.hparams.spectral_magnitude(spectrum))

    def compute_forward(self, batch, stage):
        """Mask the mixture's log1p magnitudes and resynthesise.

        Returns
        -------
        dict
            ``"spec"``: masked log1p magnitudes (batch, frames, freqs);
            ``"wav"``: the estimate (batch, samples), the mixture's length.
        """
        batch = batch.to(self.device)
        mixture, lengths = batch.mixture
        noisy_feats = self.compute_features(mixture)
        mask = self.modules.model(noisy_feats, lengths=lengths)
        predicted_spec = mask * noisy_feats
        estimate = self.hparams.resynth(torch.expm1(predicted_spec), mixture)
        # The ISTFT is asked for the input length; make it a guarantee.
        estimate = _fit_length(estimate, mixture.shape[-1])
        return {"spec": predicted_spec, "wav": estimate}

    def estimate_from_outputs(self, outputs):
        """The estimated waveforms in ``compute_forward``'s outputs (for the shared logging)."""
        return outputs["wav"]

    def compute_objectives(self, predictions, batch, stage):
        """MSE on log1p magnitudes; STOI (and the other metrics) on validation and test."""
        target, lengths = batch.target
        target_feats = self.compute_features(target)
        loss = self.hparams.compute_cost(predictions["spec"], target_feats, lengths)
        if stage == sb.Stage.TRAIN:
            self.log_train_losses(loss=loss)
        else:
            self.evaluate_estimates(batch, predictions["wav"], stage)
        return loss


def _fit_length(wavs, num_samples):
    """Zero-pad or crop (batch, samples) to ``num_samples``."""
    if wavs.shape[-1] >= num_samples:
        return wavs[..., :num_samples]
    return torch.nn.functional.pad(wavs, (0, num_samples - wavs.shape[-1]))


if __name__ == "__main__":
    hparams, run_opts = setup_experiment(sys.argv[1:])
    # Manifests and the fixed valid/test sets: once, on the main process.
    sb.utils.distributed.run_on_main(prepare_enhancement_data, kwargs={"hparams": hparams})
    # Fit, then the best-STOI checkpoint on the test set (CSV, summary, examples).
    train_and_evaluate(SEBrain, hparams, run_opts, *enhancement_datasets(hparams))
