#!/usr/bin/env python3
"""Recipe: SpEx+ target speaker extraction (Ge et al., Interspeech 2020).

Given a mixture of two speakers and a reference (enrolment) utterance of the
target speaker, the model (``custom_modules/models/spex_plus.py``) outputs the
target speaker's speech. Training minimises the multi-scale negative SI-SDR
(0.8 / 0.1 / 0.1) plus 0.5 x the cross-entropy of the speaker-classification
head over the training speakers; validation and test score the short-window
output ``s1`` only (SI-SDR, SI-SDR improvement, PESQ). The best-SI-SDR
checkpoint is evaluated on the test set at the end.

Data (``custom_modules/data/tse_data.py``) from ``data_folder``: a folder holding
``LibriSpeech/`` (e.g. the demo corpus; speaker-disjoint train-clean-100 /
dev-clean / test-clean) or a plain corpus root (``speech/<speaker>/...``,
speakers split by ``valid_ratio`` / ``test_ratio``); triplets: a fixed
training set (``train_mode: fixed``, ``num_train_triplets``) or fresh
triplets every epoch (``train_mode: onthefly``, optionally with a TIR
curriculum), and fixed, seeded validation/test sets. The classes of the
speaker head are the training speakers that can be targets
(``<prep_folder>/train_speakers.json``); ``num_speakers: 0`` in the YAML is
replaced by their number here, and the resolved value is what
``hyperparams.yaml`` records (``infer.py``/``test.py`` rebuild the same model).
Diagnostics, learning-rate policies, the curriculum and speaker-branch
pretraining: ``custom_modules/training/tse.py`` (``SpeakerExtractionBrain``).

To run::

    python recipes/spex_plus/train.py recipes/spex_plus/hparams/spex_plus.yaml \
        --data_folder /data            # holds LibriSpeech/

    # CPU size, on the offline demo corpus (python -m data_prepare.demo --out data/demo)
    python recipes/spex_plus/train.py recipes/spex_plus/hparams/spex_plus_cpu.yaml \
        --data_folder data/demo       # or a plain corpus root: make demo-real-tse

Then ``test.py`` (any custom directory, chunked evaluation) and ``infer.py``
(one mixture + one enrolment), see the README.
"""

import sys
from pathlib import Path

import speechbrain as sb
import yaml
from hyperpyyaml import load_hyperpyyaml, resolve_references

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone, uninstalled
from custom_modules.audio.files import atomic_write_text, read_json  # noqa: E402
from custom_modules.data.tse_data import KEYS, prepare_tse_data, speakers_file, tse_datasets  # noqa: E402, F401
from custom_modules.models.spex_plus import si_sdr  # noqa: E402
from custom_modules.training.experiment import setup_experiment, train_and_evaluate  # noqa: E402
from custom_modules.training.tse import SpeakerExtractionBrain, speaker_accuracy  # noqa: E402


class SpexPlusBrain(SpeakerExtractionBrain):
    """SpEx+: (mixture, reference) in, target speaker's waveform out (``SpexPlusOutput``)."""

    def estimate_from_outputs(self, outputs):
        """The extracted speech: the short-window estimate s1, (batch, samples)."""
        return outputs.estimates[:, 0]

    def compute_objectives(self, predictions, batch, stage):
        """Training: multi-scale SI-SDR + CE (+ head accuracy). Valid/test: -SI-SDR of s1."""
        target, lengths = batch.target
        if stage == sb.Stage.TRAIN:
            total, weighted_si_sdr, ce = self.hparams.loss(
                predictions.estimates,
                target,
                lengths,
                logits=predictions.speaker_logits,
                speaker_index=batch.speaker_index,
            )
            accuracy = speaker_accuracy(predictions.speaker_logits, batch.speaker_index)
            self.log_train_losses(loss=total, si_sdr=weighted_si_sdr, ce=ce, speaker_acc=accuracy)
            return total
        # Valid/test speakers are unseen: no CE; the output is the short-window s1.
        estimate = self.estimate_from_outputs(predictions)
        self.evaluate_estimates(batch, estimate, stage)
        return -si_sdr(estimate, target, lengths).mean()


# ---- hyperparameters ------------------------------------------------------------------
def load_hparams(hparams_file, overrides):
    """HyperPyYAML load of ``hparams_file`` with ``overrides`` (YAML text or dict)."""
    with open(hparams_file, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides)


def overrides_dict(overrides):
    """Overrides (YAML text from ``sb.parse_arguments``, a dict or None) as a new dict."""
    if isinstance(overrides, str):
        return dict(yaml.safe_load(overrides) or {})
    return dict(overrides or {})


def set_num_speakers(hparams_file, overrides, hparams, num_train_speakers):
    """Resolve ``num_speakers: 0`` to the number of training speakers (reloading the YAML).

    Returns ``(hparams, overrides)``. A value set by the user must cover every
    training speaker (extra classes are allowed: they are never targets).
    """
    requested = int(hparams["num_speakers"])
    if requested == 0:
        overrides = {**overrides_dict(overrides), "num_speakers": num_train_speakers}
        return load_hparams(hparams_file, overrides), overrides
    if requested < num_train_speakers:
        raise ValueError(
            f"num_speakers={requested} but the training set has {num_train_speakers} target "
            f"speakers ({speakers_file(hparams)}); use 0 (automatic) or at least {num_train_speakers}"
        )
    return hparams, overrides


def save_resolved_hparams(hparams_file, overrides, output_folder):
    """Rewrite ``<output_folder>/hyperparams.yaml`` with the final overrides (as SpeechBrain does)."""
    with open(hparams_file, encoding="utf-8") as fin:
        resolved = resolve_references(fin, overrides).getvalue()
    header = f"# Generated by {Path(__file__).name} from:\n# {Path(hparams_file).resolve()}\n"
    atomic_write_text(Path(output_folder) / "hyperparams.yaml", header + resolved)


if __name__ == "__main__":
    hparams, run_opts = setup_experiment(sys.argv[1:])
    # Manifests, speakers and triplet sets: once, on the main process.
    progress = not run_opts.noprogressbar
    sb.utils.distributed.run_on_main(
        prepare_tse_data, args=[hparams], kwargs={"progress": progress}
    )
    speakers = read_json(speakers_file(hparams))
    # The head's size is known only now: reload the YAML with it and record it.
    hparams_file, _, overrides = sb.parse_arguments(sys.argv[1:])
    hparams, overrides = set_num_speakers(hparams_file, overrides, hparams, len(speakers))
    if sb.utils.distributed.if_main_process():
        save_resolved_hparams(hparams_file, overrides, hparams["output_folder"])
    train_and_evaluate(SpexPlusBrain, hparams, run_opts, *tse_datasets(hparams, speakers))
