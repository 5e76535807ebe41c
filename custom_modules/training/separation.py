"""A Brain for source-separation recipes (``C`` sources ``s1 ... sC``, PIT scoring).

:class:`SeparationBrain` is :class:`custom_modules.training.brain.EnhancementBrain`
(logging, TensorBoard and W&B, checkpoint by ``checkpoint_key``, the test CSV, summary,
table, web page and the first and worst examples) for ``C`` sources instead of one target, plus the validation-loss learning-rate
scheduler ``hparams.lr_scheduler``. Its scores are those of
:mod:`custom_modules.evaluation.bss_eval` (SI-SNR and BSS Eval SDR, and their
improvements over the mixture).
"""

from __future__ import annotations

import numpy as np
import speechbrain as sb
import torch

from custom_modules.evaluation.bss_eval import separation_scores
from custom_modules.training.brain import EnhancementBrain, trim_batch
from custom_modules.training.reporting import as_float

PARTS = ("mixture", "estimate", "delta")


class SeparationBrain(EnhancementBrain):
    """EnhancementBrain for ``num_sources`` sources ``s1 ... sC`` with PIT scoring.

    Batches carry ``id``, ``mixture`` and ``s1`` ... ``sC`` (padded
    waveforms), optionally ``tir_db`` (reported in the CSV's
    ``input_snr_db`` column: the level of ``s1`` relative to ``s2``).
    Recipes write ``compute_forward`` (estimates ``(batch, samples, C)``)
    and ``compute_objectives``, which gets the references from
    :meth:`batch_sources` and, on validation and test, calls
    :meth:`evaluate_separation`.

    Hyperparameters read, besides EnhancementBrain's (except
    ``metric_workers``: scores are computed in this process):
    ``num_sources``, ``lr_scheduler`` (called with the validation loss after
    every epoch, e.g. ``speechbrain.nnet.schedulers.ReduceLROnPlateau``).
    """

    def batch_sources(self, batch):
        """Reference sources ``(batch, samples, C)`` on the device, and relative lengths."""
        keys = [f"s{i + 1}" for i in range(self.hparams.num_sources)]
        sources = torch.stack([getattr(batch, key).data for key in keys], dim=-1)
        return sources.to(self.device), getattr(batch, keys[0]).lengths

    def _utterances(self, batch, estimates, metrics):
        """Per utterance: (id, PIT scores, named signals with estimates matched to sources)."""
        mixture, lengths = batch.mixture
        sources, _ = self.batch_sources(batch)
        num = sources.shape[-1]
        mixtures = trim_batch(mixture, lengths)
        refs = [trim_batch(sources[..., j], lengths) for j in range(num)]
        ests = [trim_batch(estimates[..., j], lengths) for j in range(num)]
        for b, uid in enumerate(batch.id):
            src = np.stack([r[b] for r in refs])
            est = np.stack([e[b] for e in ests])
            scores = separation_scores(est, src, mixtures[b], metrics=metrics)
            signals = {"mixture": mixtures[b]}
            signals.update({f"source{j + 1}": src[j] for j in range(num)})
            signals.update({f"estimate{j + 1}": est[scores["perm"][j]] for j in range(num)})
            yield uid, scores, signals

    def evaluate_separation(self, batch, estimates, stage):
        """Score a validation/test batch; on TEST, fill the report rows and write examples."""
        test = stage == sb.Stage.TEST
        metrics = self.hparams.test_metrics if test else self.hparams.valid_metrics
        levels = getattr(batch, "tir_db", None)
        levels = [None] * len(batch.id) if levels is None else list(levels)
        for (uid, scores, signals), level in zip(
            self._utterances(batch, estimates, metrics), levels, strict=True
        ):
            if test:
                row = {"id": uid, "input_snr_db": as_float(level), "errors": scores["errors"]}
                row.update({f"{k}_{p}": scores[f"{k}_{p}"] for k in metrics for p in PARTS})
                self.test_rows.append(row)
                (kept,) = self.take_examples([uid], [signals])
                self.offer_worst_example(row, kept)
            else:
                self.metric_records.append(
                    {"id": uid, **{k: scores[f"{k}_estimate"] for k in metrics}}
                )
                if not self.valid_audio_logged:
                    self._log_audio("valid", signals, self.current_epoch)
                    self.valid_audio_logged = True

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Every ``tensorboard_audio_every`` steps: a training example (sources and estimates)."""
        if not self.logs_media() or self.optimizer_step % self.hparams.tensorboard_audio_every:
            return
        _, _, signals = next(self._utterances(batch, outputs.detach(), ("si_snr",)))
        self._log_audio("train", signals, self.optimizer_step)

    def on_stage_start(self, stage, epoch=None):
        """As EnhancementBrain, without metric worker processes (scores are computed here)."""
        if not hasattr(self, "metric_computer"):
            self.metric_computer = None  # EnhancementBrain builds one only when absent
        super().on_stage_start(stage, epoch)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Update the learning rate from the validation loss, then log/checkpoint/report."""
        if stage == sb.Stage.VALID:
            # Every rank scored its own share: the mean over all keeps one learning rate.
            mean_loss = self.stage_loss_over_ranks(stage_loss)
            _, next_lr = self.hparams.lr_scheduler([self.optimizer], epoch, mean_loss)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, next_lr)
        super().on_stage_end(stage, stage_loss, epoch)
