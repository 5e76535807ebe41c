"""Brains of target speaker extraction: diagnostics, curriculum, schedules, pretraining; SpEx+.

:class:`SpeakerExtractionBrain` is an :class:`custom_modules.training.brain.EnhancementBrain`
whose model takes ``(mixture, reference, reference_lengths)``;
:class:`SpexPlusBrain` adds SpEx+'s ``estimate_from_outputs`` and
``compute_objectives`` (shared by ``recipes/spex_plus/train.py`` and its
evaluation command, :mod:`custom_modules.inference.tse_evaluation`), and
:func:`resolve_num_speakers` sizes the speaker head from the prepared data
(``num_speakers: 0`` in the YAML). What
``SpeakerExtractionBrain`` brings, each read from the recipe YAML:

* **Speaker accuracy**: :func:`speaker_accuracy` of the speaker head on the
  training batches; the recipe logs it with its loss components
  (``log_train_losses(..., speaker_acc=...)``), so its mean over the epoch is
  in ``train_log.txt`` and TensorBoard with the train stats (and
  ``train_step/speaker_acc`` every ``log_every_n_steps``).
* **Learning rate** (``lr_policy``): ``plateau`` (``lr_scheduler``, e.g.
  halve when the validation loss stalls, once per epoch) or
  ``warmup_cosine`` (``lr_schedule``, linear warm-up of ``lr_warmup_steps``
  then cosine decay to ``lr * lr_final_ratio`` over the training budget,
  every optimizer step, as the enhancement recipes).
* **TIR curriculum** (``train_mode: onthefly``): at the start of every
  epoch the training triplets' TIR range is
  ``TirCurriculum(tir_curriculum_start, tir_db_range,
  tir_curriculum_fraction).range_at(progress)``; its bounds are logged with
  the train stats (``tir_db_low``, ``tir_db_high``). Validation and test
  sets stay at ``tir_db_range``.
* **Reference checks** at test: ``test_metrics`` may list
  ``si_snr_zero_ref`` (the same mixtures extracted with an all-zero
  reference) and ``si_snr_other_ref`` (with the reference of another test
  triplet whose target speaker differs, when the set records speakers; a
  custom directory does not, so there it is simply another triplet's
  reference). Their SI-SDR and SI-SDRi are reported next to the normal
  ones: equal figures mean the extractor ignores the reference.
* **Speaker-branch pretraining** (``speaker_pretrain_steps`` > 0): before
  the first epoch of a fresh run (not on resume), the twin encoder, the
  speaker encoder and the head are trained alone on speaker classification
  of the training speakers' utterances
  (:func:`custom_modules.training.speaker_pretraining.pretrain_speaker_branch`;
  ``speaker_pretrain_lr``, ``speaker_pretrain_batch_size``, crops of
  ``ref_crop_sec``). Not counted in ``max_train_minutes``.
"""

from __future__ import annotations

import logging
import math

import speechbrain as sb
import torch

from custom_modules.data.tse_data import TirCurriculum, speakers_file, speech_manifest_path
from custom_modules.evaluation.metrics import MetricError, si_snr
from custom_modules.training.brain import EnhancementBrain, trim_batch
from custom_modules.training.losses import si_sdr

logger = logging.getLogger(__name__)

LR_POLICIES = ("plateau", "warmup_cosine")
# test_metrics names -> the reference used instead of the triplet's own.
REFERENCE_CHECKS = {"si_snr_zero_ref": "zero", "si_snr_other_ref": "other"}


def speaker_accuracy(logits, speaker_index) -> torch.Tensor:
    """Fraction of items whose top logit is the target speaker (items labelled -1 left out).

    NaN when there are no logits or no known labels.

    Example
    -------
    >>> logits = torch.tensor([[2.0, 0.1], [0.3, 1.0], [5.0, 0.0]])
    >>> float(speaker_accuracy(logits, torch.tensor([0, 0, -1])))
    0.5
    """
    if logits is None or speaker_index is None:
        return torch.tensor(math.nan)
    labels = torch.as_tensor(speaker_index, device=logits.device).long()
    known = labels >= 0
    if not known.any():
        return torch.tensor(math.nan)
    return (logits.detach()[known].argmax(dim=-1) == labels[known]).float().mean()


def _score(estimate, target) -> float:
    try:
        return si_snr(estimate, target)
    except MetricError:
        return math.nan


class OtherReferences:
    """For every item of a test set, the reference of another item (of another target speaker).

    Item ``i`` gets the reference of the first item after it (cyclically)
    whose ``target_speaker`` differs, when the set's data records speakers
    (triplet sets do); otherwise simply of the next item. A set of one item
    has none (its score is NaN).

    Arguments
    ---------
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        The test set (outputs ``id`` and ``reference``).
    """

    def __init__(self, dataset):
        if not hasattr(dataset, "data_ids") or not hasattr(dataset, "data"):
            raise ValueError("si_snr_other_ref needs a DynamicItemDataset test set")
        self.dataset = dataset
        ids = list(dataset.data_ids)
        speakers = [dataset.data[key].get("target_speaker") for key in ids]
        self.partner = {}
        for i, key in enumerate(ids):
            for shift in range(1, len(ids)):
                j = (i + shift) % len(ids)
                if speakers[i] is None or speakers[j] is None or speakers[i] != speakers[j]:
                    self.partner[key] = j
                    break

    def batch(self, ids, device):
        """``(references (batch, samples), relative lengths)`` for ``ids``; None if one has none."""
        if any(key not in self.partner for key in ids):
            return None
        signals = [self.dataset[self.partner[key]]["reference"] for key in ids]
        longest = max(int(s.numel()) for s in signals)
        padded = torch.zeros(len(signals), longest)
        for row, signal in enumerate(signals):
            padded[row, : signal.numel()] = signal
        lengths = torch.tensor([s.numel() / longest for s in signals])
        return padded.to(device), lengths.to(device)


class SpeakerExtractionBrain(EnhancementBrain):
    """EnhancementBrain for ``model(mixture, reference, reference_lengths)`` (module docstring)."""

    LOCAL_METRICS = tuple(REFERENCE_CHECKS)

    def compute_forward(self, batch, stage):
        """Run the model on the batch's mixture and reference."""
        batch = batch.to(self.device)
        mixture, _ = batch.mixture
        reference, reference_lengths = batch.reference
        return self.modules.model(mixture, reference, reference_lengths)

    # ---- learning rate ------------------------------------------------------------
    def step_lr_schedule(self):
        """The per-step schedule only with ``lr_policy: warmup_cosine``."""
        return super().step_lr_schedule() if self.hparams.lr_policy == "warmup_cosine" else None

    # ---- fit start: checks and speaker pretraining -------------------------------
    def on_fit_start(self):
        """Check the options, resume or pretrain the speaker branch (fresh runs only)."""
        if self.hparams.lr_policy not in LR_POLICIES:
            raise ValueError(
                f"lr_policy must be one of {LR_POLICIES}, got {self.hparams.lr_policy!r}"
            )
        super().on_fit_start()
        steps = int(self.hparams.speaker_pretrain_steps)
        fresh = self.optimizer_step == 0 and self.hparams.epoch_counter.current == 0
        if steps > 0 and fresh:
            self.hparams.epoch_counter.start()  # pretraining counts against the budget
            self.pretrain_speaker_branch(min(steps, self.debug_batches) if self.debug else steps)

    def pretrain_speaker_branch(self, steps):
        """Speaker classification of the training speakers' utterances (see the module docstring)."""
        from custom_modules.audio.files import read_json
        from custom_modules.training.speaker_pretraining import (
            SpeakerCrops,
            pretrain_speaker_branch,
        )

        hparams = self.hparams
        speakers = read_json(f"{hparams.prep_folder}/train_speakers.json")
        crops = SpeakerCrops(
            speech_manifest_path(hparams.prep_folder, "train"),
            speakers,
            sr=hparams.sample_rate,
            crop_sec=hparams.ref_crop_sec,
            loudness_lufs=hparams.loudness_lufs,
        )

        def on_step(step, ce, accuracy):
            if step % hparams.log_every_n_steps == 0:
                values = {"speaker_pretrain/ce": ce, "speaker_pretrain/accuracy": accuracy}
                self.log_scalars(values, step)

        self.ensure_tensorboard()
        summary = pretrain_speaker_branch(
            self.modules.model, crops, steps, hparams.speaker_pretrain_batch_size,
            hparams.speaker_pretrain_lr, seed=hparams.seed, device=self.device,
            on_step=on_step,
        )  # fmt: skip
        hparams.train_logger.log_stats(
            stats_meta={"speaker pretraining steps": summary["steps"]},
            train_stats={"ce": summary["ce"], "speaker_acc": summary["accuracy"]},
        )
        return summary

    # ---- stages --------------------------------------------------------------------
    def on_stage_start(self, stage, epoch=None):
        """As the base class; then the epoch's TIR range of the training triplets."""
        super().on_stage_start(stage, epoch)
        if stage == sb.Stage.TRAIN:
            self.tir_range = self.apply_tir_curriculum()

    def apply_tir_curriculum(self):
        """Set the on-the-fly training set's TIR range for the current progress; returns it.

        None when the curriculum is off (``tir_curriculum_fraction: 0``).
        """
        curriculum = TirCurriculum(
            self.hparams.tir_curriculum_start,
            self.hparams.tir_db_range,
            self.hparams.tir_curriculum_fraction,
        )
        if not curriculum.enabled:
            return None
        dataset = getattr(self, "onthefly_dataset", None)
        if dataset is None or not hasattr(dataset, "set_tir_db_range"):
            raise ValueError("tir_curriculum_fraction > 0 needs train_mode: onthefly")
        progress = self.hparams.epoch_counter.progress(
            self.step, self.hparams.train_batches_per_epoch
        )
        tir_range = curriculum.range_at(progress)
        dataset.set_tir_db_range(tir_range)
        return tir_range

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Plateau learning-rate step on validation; TIR range with the train stats."""
        if stage == sb.Stage.VALID and self.hparams.lr_policy == "plateau":
            loss = self.stage_loss_over_ranks(stage_loss)  # each rank scored its own share
            _, new_lr = self.hparams.lr_scheduler([self.optimizer], epoch, loss)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
        super().on_stage_end(stage, stage_loss, epoch)
        if stage == sb.Stage.TRAIN and getattr(self, "tir_range", None) is not None:
            self.train_stats.update(tir_db_low=self.tir_range[0], tir_db_high=self.tir_range[1])

    # ---- reference checks at test ---------------------------------------------------
    def evaluate(self, test_set, *args, **kwargs):
        """As ``Brain.evaluate``; prepares the other-speaker references when asked for."""
        self.other_references = None
        if "si_snr_other_ref" in self.hparams.test_metrics:
            self.other_references = OtherReferences(test_set)
        return super().evaluate(test_set, *args, **kwargs)

    def reference_check_estimate(self, batch, kind):
        """The estimate of the batch's mixtures with a zero or another speaker's reference."""
        mixture, _ = batch.mixture
        reference, lengths = batch.reference
        if kind == "zero":
            reference = torch.zeros_like(reference)
        else:
            others = self.other_references.batch(list(batch.id), reference.device)
            if others is None:
                return None
            reference, lengths = others
        with torch.no_grad():
            return self.estimate_from_outputs(self.modules.model(mixture, reference, lengths))

    def evaluate_estimates(self, batch, estimate, stage):
        """As the base class; on test also the reference checks listed in ``test_metrics``."""
        self.reference_checks = {}
        if stage == sb.Stage.TEST:
            _, lengths = batch.mixture
            for name, kind in REFERENCE_CHECKS.items():
                if name in self.hparams.test_metrics:
                    other = self.reference_check_estimate(batch, kind)
                    self.reference_checks[name] = (
                        None if other is None else trim_batch(other, lengths)
                    )
        super().evaluate_estimates(batch, estimate, stage)

    def local_metrics(self, mixtures, targets, estimates):
        """``{check: (SI-SDR with the altered reference, SI-SDR of the mixture)}`` per utterance."""
        rows = [{} for _ in estimates]
        for name, others in getattr(self, "reference_checks", {}).items():
            for i, (row, mix, tgt) in enumerate(zip(rows, mixtures, targets, strict=True)):
                score = math.nan if others is None else _score(others[i], tgt)
                row[name] = (score, _score(mix, tgt))
        return rows


class SpexPlusBrain(SpeakerExtractionBrain):
    """SpEx+: (mixture, reference) in, target speaker's waveform out (``SpexPlusOutput``).

    Training minimises ``hparams.loss`` (multi-scale negative SI-SDR plus the
    weighted cross-entropy of the speaker head); validation and test score the
    short-window output ``s1`` only (the speakers are unseen: no CE).
    """

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
        estimate = self.estimate_from_outputs(predictions)
        self.evaluate_estimates(batch, estimate, stage)
        return -si_sdr(estimate, target, lengths).mean()


def resolve_num_speakers(hparams, num_train_speakers: int) -> int:
    """Size the speaker head of ``hparams["model"]`` from the prepared training speakers.

    ``num_speakers: 0`` (the recipe YAMLs) adds a head of ``num_train_speakers``
    classes (:meth:`custom_modules.models.spex_plus.SpexPlus.add_speaker_head`:
    the same weights as a model built with that number); the YAML is neither
    reloaded nor rewritten, so the run's ``hyperparams.yaml`` keeps 0 and loading
    a checkpoint sizes the head. A value set by the user must cover every
    training speaker (extra classes are allowed: they are never targets).

    Returns
    -------
    int
        The number of classes of the head.
    """
    requested = int(hparams["num_speakers"])
    if requested == 0:
        hparams["model"].add_speaker_head(num_train_speakers)
        return num_train_speakers
    if requested < num_train_speakers:
        raise ValueError(
            f"num_speakers={requested} but the training set has {num_train_speakers} target "
            f"speakers ({speakers_file(hparams)}); use 0 (automatic) or at least {num_train_speakers}"
        )
    return requested
