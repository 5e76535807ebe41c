#!/usr/bin/env python3
"""Recipe: Conv-TasNet two-speaker separation on LibriSpeech mixtures.

Conv-TasNet (Luo & Mesgarani, 2019) built from SpeechBrain's blocks
(``custom_modules/models/conv_tasnet.py``), trained with utterance-level
permutation-invariant training (uPIT) on the negative SI-SNR
(``speechbrain.nnet.losses.get_si_snr_with_pitwrapper``). Two-speaker
mixtures are written once from LibriSpeech (``custom_modules/data/librispeech_mixtures.py``,
8 or 16 kHz: ``sample_rate``); training sees a random ``crop_sec`` chunk of
every mixture each epoch, validation and test whole utterances. The best
validation-SI-SNR checkpoint is scored on the test set: SI-SNR and BSS Eval
SDR of the estimates and of the mixture, and their improvements (SI-SNRi, SDRi).

To run::

    python recipes/conv_tasnet/train.py recipes/conv_tasnet/hparams/convtasnet.yaml \
        --data_folder <folder holding LibriSpeech/>

    # CPU size, on the offline demo corpus (python -m data_prepare.demo --out data/demo)
    python recipes/conv_tasnet/train.py recipes/conv_tasnet/hparams/convtasnet_cpu.yaml \
        --data_folder data/demo

Any YAML key can be overridden (``--causal True``, ``--sample_rate 16000``);
``--debug`` runs a few batches of a few epochs.
"""

import sys
from pathlib import Path

import speechbrain as sb

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone, uninstalled
from custom_modules.data.separation_data import (  # noqa: E402
    prepare_separation_data,
    separation_datasets,
)
from custom_modules.training.experiment import setup_experiment, train_and_evaluate  # noqa: E402
from custom_modules.training.separation import SeparationBrain  # noqa: E402


class ConvTasNetBrain(SeparationBrain):
    """Mixture waveform in, one waveform per speaker out; uPIT SI-SNR loss."""

    def compute_objectives(self, predictions, batch, stage):
        """Negative SI-SNR under the best permutation; scores on validation and test."""
        sources, _ = self.batch_sources(batch)
        loss = self.hparams.loss(sources, predictions).mean()
        if stage == sb.Stage.TRAIN:
            self.log_train_losses(loss=loss)
        else:
            self.evaluate_separation(batch, predictions, stage)
        return loss


if __name__ == "__main__":
    hparams, run_opts = setup_experiment(sys.argv[1:])
    # LibriSpeech manifests and the mixture sets: once, on the main process.
    sb.utils.distributed.run_on_main(prepare_separation_data, kwargs={"hparams": hparams})
    train_and_evaluate(ConvTasNetBrain, hparams, run_opts, *separation_datasets(hparams))
