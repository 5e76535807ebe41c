"""Shared ``speechbrain.Brain`` pieces for waveform-in, waveform-out recipes.

Recipes subclass :class:`EnhancementBrain` and write only what is theirs:
``compute_objectives`` (returns the loss; it calls :meth:`log_train_losses`
in training and :meth:`evaluate_estimates` on validation/test batches) and,
when the model is not simply ``model(mixture_waveform)``, ``compute_forward``.

What lives here, so that recipes do not copy each other:

* fresh on-the-fly training mixtures every epoch (``set_epoch`` on the
  training dataset), gradient-norm tracking;
* per-utterance metrics on validation and test in worker processes
  (:class:`custom_modules.evaluation.metrics.MetricComputer`), the checkpoint kept by
  ``hparams.checkpoint_key`` (e.g. max STOI); under DDP each rank scores its
  own block of the validation set and the records are gathered, so the
  metrics and the kept checkpoint equal a single-process run
  (:mod:`custom_modules.training.sharding`);
* TensorBoard scalars (loss components, gradient norm, metrics), audio plus
  spectrogram images of a training example every
  ``hparams.tensorboard_audio_every`` steps and of the first validation
  example every epoch; only on the main process and only when
  ``hparams.use_tensorboard`` is true;
* the same scalars and audio in a Weights & Biases run when
  ``hparams.use_wandb`` is true (:mod:`custom_modules.training.wandb_logging`;
  ``hparams.wandb_logger`` is built, and ``wandb`` imported, only then), with the
  test means and the saved test examples at the end;
* the test report (written by :mod:`custom_modules.training.reporting`): a
  per-utterance CSV, a JSON summary, a printed table, a web page
  (``index.html``) and example triplets (wavs + PNG) of the first
  ``hparams.num_examples_to_save`` test utterances and of the
  ``hparams.num_worst_examples_to_save`` with the lowest improvement of the
  ``checkpoint_key`` metric.

Hyperparameters read (all recipe YAML keys): ``sample_rate``,
``checkpoint_key``, ``valid_metrics``, ``test_metrics``, ``metric_workers``,
``train_logger``, ``use_tensorboard``, ``tensorboard_folder``,
``log_every_n_steps``, ``tensorboard_audio_every``, ``test_report_folder``,
``num_examples_to_save``, ``num_worst_examples_to_save``, ``use_wandb``,
``wandb_logger``.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import if_main_process

from custom_modules.audio.files import read_json
from custom_modules.audio.levels import limit_peak
from custom_modules.evaluation.metrics import MetricComputer, summarize
from custom_modules.evaluation.plotting import spectrogram_image
from custom_modules.training.reporting import (
    ExampleChooser,
    as_float,
    test_summary,
    write_example,
    write_test_report,
)
from custom_modules.training.sharding import (
    ContiguousShardSampler,
    gather_in_rank_order,
    mean_over_ranks,
    rank_and_world_size,
)
from custom_modules.training.wandb_logging import (
    epoch_scalars,
    log_example_media,
    log_test_report,
    log_values,
    scalar_config,
    start_wandb_run,
)

logger = logging.getLogger(__name__)

# Utterances in flight per metric worker before the Brain waits for results.
MAX_PENDING_PER_WORKER = 16


@register_checkpoint_hooks
class RunningMeans:
    """Running sums and counts of named values, saved with every checkpoint.

    ``EnhancementBrain`` averages the training loss components of an epoch
    here. Saved in intra-epoch checkpoints, so that a run resumed in the
    middle of an epoch logs the mean over the whole epoch (as SpeechBrain's
    own ``avg_train_loss``, also restored), not over the resumed part only.
    An end-of-epoch checkpoint restores nothing (the next epoch starts anew).

    Example
    -------
    >>> means = RunningMeans()
    >>> means.add("loss", 1.0); means.add("loss", 2.0)
    >>> means.means()
    {'loss': 1.5}
    """

    def __init__(self):
        self.sums, self.counts = {}, {}

    def reset(self) -> None:
        """Forget every value."""
        self.sums, self.counts = {}, {}

    def add(self, name: str, value: float) -> None:
        """Add one value of ``name``."""
        self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.counts[name] = self.counts.get(name, 0) + 1

    def means(self) -> dict:
        """``{name: mean}`` of the values added since the last reset."""
        return {name: self.sums[name] / self.counts[name] for name in self.sums}

    @mark_as_saver
    def _save(self, path):
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"sums": self.sums, "counts": self.counts}, handle)

    @mark_as_loader
    def _recover(self, path, end_of_epoch=True):
        if end_of_epoch:
            self.reset()
            return
        record = read_json(path)
        self.sums = {k: float(v) for k, v in record["sums"].items()}
        self.counts = {k: int(v) for k, v in record["counts"].items()}


def trim_batch(signals, lengths):
    """Cut a padded batch into a list of 1-D float64 numpy arrays.

    Arguments
    ---------
    signals : torch.Tensor
        ``(batch, samples)``.
    lengths : torch.Tensor
        ``(batch,)`` relative lengths (SpeechBrain convention).

    Example
    -------
    >>> out = trim_batch(torch.ones(2, 10), torch.tensor([1.0, 0.5]))
    >>> [len(x) for x in out]
    [10, 5]
    """
    total = signals.shape[-1]
    arrays = []
    for signal, rel in zip(signals.detach().cpu(), lengths.cpu(), strict=True):
        n = int(round(float(rel) * total))
        arrays.append(signal[:n].double().numpy())
    return arrays


class EnhancementBrain(sb.Brain):
    """Base Brain for enhancement recipes (see the module docstring)."""

    # Metrics scored in this process by ``local_metrics`` (e.g. ones that need
    # the mixture) rather than by the metric workers; subclasses add names.
    LOCAL_METRICS = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Means of the training loss components over the epoch, kept across an
        # intra-epoch resume (optional: checkpoints written before it lack it).
        self.train_components = RunningMeans()
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable(
                "train_components", self.train_components, optional_load=True
            )

    def local_metrics(self, mixtures, targets, estimates):
        """Per-utterance scores of ``LOCAL_METRICS`` (lists of 1-D float64 arrays in).

        Returns one dict per utterance, ``{name: (score of the estimate,
        score of the mixture)}``; none by default.
        """
        return [{} for _ in estimates]

    def compute_forward(self, batch, stage):
        """Default forward of waveform models: ``modules.model(mixture)``.

        ``batch.mixture`` holds ``(batch, samples)`` waveforms; the model's
        output is returned as is (override for other inputs, e.g. features).
        """
        batch = batch.to(self.device)
        mixture, _ = batch.mixture
        return self.modules.model(mixture)

    # ---- data -----------------------------------------------------------
    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """Remember the on-the-fly training dataset so each epoch draws new mixtures."""
        if stage == sb.Stage.TRAIN and hasattr(dataset, "set_epoch"):
            self.onthefly_dataset = dataset
        if (
            stage == sb.Stage.VALID
            and rank_and_world_size()[1] > 1
            and "sampler" not in loader_kwargs
            and not isinstance(dataset, torch.utils.data.DataLoader)
        ):
            # Each rank scores its own block of whole batches (gathered in on_stage_end).
            batch_size = loader_kwargs.get("batch_size", 1)
            loader_kwargs["sampler"] = ContiguousShardSampler(len(dataset), batch_size)
        return super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)

    # ---- training -------------------------------------------------------
    def on_fit_batch_start(self, batch, should_step):
        """In debug mode, log which mixtures this rank drew first (the DDP test reads it)."""
        if self.debug and not self.first_batch_reported:
            self.first_batch_reported = True
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            checksum = float(batch.mixture.data.double().abs().sum())
            logger.info(
                "[rank %d] epoch %d first training batch: ids=%s checksum=%.6f",
                rank,
                self.current_epoch,
                list(batch.id),
                checksum,
            )

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Every ``tensorboard_audio_every`` steps: audio and spectrograms of a training example."""
        if not self.logs_media() or self.optimizer_step % self.hparams.tensorboard_audio_every:
            return
        estimate = self.estimate_from_outputs(outputs)
        mixture, lengths = batch.mixture
        target, _ = batch.target
        signals = {
            name: trim_batch(signal[:1], lengths[:1])[0]
            for name, signal in (("mixture", mixture), ("target", target), ("estimate", estimate))
        }
        self._log_audio("train", signals, self.optimizer_step)

    def estimate_from_outputs(self, outputs):
        """The estimated waveforms ``(batch, samples)`` in ``compute_forward``'s outputs."""
        return outputs

    def optimizers_step(self):
        """Record the gradient norm (before clipping), set the scheduled lr, then step."""
        grads = [p.grad.detach().norm() for p in self.modules.parameters() if p.grad is not None]
        if grads:
            self.last_grad_norm = float(torch.stack(grads).norm())
        schedule = self.step_lr_schedule()
        if schedule is not None:
            progress = self.hparams.epoch_counter.progress(
                self.step, self.hparams.train_batches_per_epoch
            )
            lr = self.hparams.lr * schedule.factor(self.optimizer_step + 1, progress)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        super().optimizers_step()

    def step_lr_schedule(self):
        """The learning-rate schedule applied every optimizer step (``hparams.lr_schedule``), or None."""
        return self.hparams.lr_schedule if hasattr(self.hparams, "lr_schedule") else None

    def log_train_losses(self, **components):
        """Accumulate training loss components; log them (TensorBoard, W&B) every N steps."""
        for name, value in components.items():
            self.train_components.add(name, float(value.detach()))
        if self.step % self.hparams.log_every_n_steps == 0:
            values = {f"train_step/{name}": float(v.detach()) for name, v in components.items()}
            if getattr(self, "last_grad_norm", None) is not None:
                values["train_step/grad_norm"] = self.last_grad_norm
            self.log_scalars(values, self.optimizer_step)

    def log_scalars(self, values, step):
        """``{tag: value}`` at ``step`` to TensorBoard and W&B (those enabled, main process)."""
        if self.tb_writer is not None:
            for tag, value in values.items():
                self.tb_writer.add_scalar(tag, value, step)
        if self.wandb_run is not None:
            log_values(self.wandb_run, values, step)

    # ---- validation / test ----------------------------------------------
    def evaluate_batch(self, batch, stage):
        """As ``Brain.evaluate_batch``; counts the stage's batches (for the mean over ranks)."""
        self.stage_batches += 1
        return super().evaluate_batch(batch, stage)

    def stage_loss_over_ranks(self, stage_loss):
        """The stage loss averaged over the batches of every rank (``stage_loss`` without DDP)."""
        return mean_over_ranks(stage_loss, self.stage_batches)

    def evaluate_estimates(self, batch, estimate, stage):
        """Score a validation/test batch per utterance (in worker processes).

        The batch is submitted to the metric workers without waiting, so the
        model keeps running while earlier utterances are scored; at most
        ``MAX_PENDING_PER_WORKER`` utterances per worker are in flight.

        Arguments
        ---------
        batch : PaddedBatch
            With ``id``, ``mixture`` and ``target`` (padded waveforms).
        estimate : torch.Tensor
            ``(batch, samples)`` estimated waveforms.
        stage : sb.Stage
            VALID or TEST. On TEST the mixture is scored too (for the deltas)
            and the first examples are written to disk.
        """
        mixture, lengths = batch.mixture
        target, _ = batch.target
        estimates = trim_batch(estimate, lengths)
        targets = trim_batch(target, lengths)
        mixtures = trim_batch(mixture, lengths)
        handles = self.metric_computer.submit(estimates, targets, ids=batch.id)
        local = self.local_metrics(mixtures, targets, estimates)
        if stage == sb.Stage.TEST:
            handles += self.metric_computer.submit(mixtures, targets, ids=batch.id)
            snrs = getattr(batch, "snr_db", None)
            conditions = getattr(batch, "condition", None)
            snrs = list(
                zip(
                    [None] * len(batch.id) if snrs is None else list(snrs),
                    [None] * len(batch.id) if conditions is None else list(conditions),
                    strict=True,
                )
            )
            examples = self.take_examples(
                batch.id,
                [
                    {"mixture": mix, "target": tgt, "estimate": est}
                    for mix, tgt, est in zip(mixtures, targets, estimates, strict=True)
                ],
            )
        else:
            snrs, examples = None, None
            if not self.valid_audio_logged:
                signals = {"mixture": mixtures[0], "target": targets[0], "estimate": estimates[0]}
                self._log_audio("valid", signals, self.current_epoch)
                self.valid_audio_logged = True
        self.pending.append((stage, handles, snrs, local, examples))
        self.num_pending += len(handles)
        while self.num_pending > MAX_PENDING_PER_WORKER * max(1, self.hparams.metric_workers):
            self._resolve_oldest()

    def _resolve_oldest(self):
        """Collect the oldest submitted batch into validation records or test rows."""
        stage, handles, snrs, local, examples = self.pending.popleft()
        self.num_pending -= len(handles)
        records = self.metric_computer.collect(handles)
        if stage != sb.Stage.TEST:
            for record, scores in zip(records, local, strict=True):
                record.update({name: pair[0] for name, pair in scores.items()})
            self.metric_records.extend(records)
            return
        half = len(records) // 2
        for est, mix, (snr, condition), scores, signals in zip(
            records[:half], records[half:], snrs, local, examples, strict=True
        ):
            est = {**est, **{name: pair[0] for name, pair in scores.items()}}
            mix = {**mix, **{name: pair[1] for name, pair in scores.items()}}
            row = {"id": est["id"], "input_snr_db": as_float(snr)}
            if condition is not None:
                row["condition"] = condition
            for key in self.hparams.test_metrics:
                row[f"{key}_mixture"] = mix.get(key, math.nan)
                row[f"{key}_estimate"] = est.get(key, math.nan)
                row[f"{key}_delta"] = row[f"{key}_estimate"] - row[f"{key}_mixture"]
            errors = [
                f"{which} {k}: {v}"
                for which, rec in (("estimate", est), ("mixture", mix))
                for k, v in rec.items()
                if k.endswith("_error")
            ]
            row["errors"] = "; ".join(errors)
            self.test_rows.append(row)
            self.offer_worst_example(row, signals)

    def _resolve_all(self):
        while self.pending:
            self._resolve_oldest()

    # ---- test examples ----------------------------------------------------
    def take_examples(self, ids, signals):
        """Save the batch's utterances that are among the first; keep the others' signals.

        Returns, per utterance, its signals while they may still be needed as
        one of the worst (None otherwise); :meth:`offer_worst_example` gets
        them with the utterance's scores. Only the main process saves.
        """
        chooser = self.example_chooser
        kept = []
        for uid, named in zip(ids, signals, strict=True):
            if not if_main_process():
                kept.append(None)
            elif chooser.take_first(uid):
                self.save_example(uid, named)
                kept.append(None)
            else:
                kept.append(named if chooser.num_worst else None)
        return kept

    def offer_worst_example(self, row, signals):
        """A scored test row: ranked by the improvement of ``checkpoint_key`` for the worst."""
        if if_main_process():
            delta = row.get(f"{self.hparams.checkpoint_key}_delta", math.nan)
            self.example_chooser.offer(row["id"], delta, signals)

    def save_example(self, uid, signals):
        """Wavs + spectrogram PNG of one test utterance in ``<test_report_folder>/examples/<uid>``."""
        folder = Path(self.hparams.test_report_folder) / "examples"
        write_example(folder, uid, signals, self.hparams.sample_rate)
        self.example_chooser.record(uid, signals)

    def save_worst_examples(self):
        """Save the worst test utterances not saved yet (end of the test stage)."""
        for uid, _, signals in self.example_chooser.worst():
            if signals is not None:
                self.save_example(uid, signals)

    # ---- TensorBoard and W&B ----------------------------------------------
    def logs_media(self):
        """Whether audio examples are logged anywhere (TensorBoard or W&B, main process)."""
        return self.tb_writer is not None or self.wandb_run is not None

    def _log_audio(self, tag, signals, step):
        """Audio and spectrogram images of one example to TensorBoard and W&B (main process).

        TensorBoard gets them at ``step``; W&B at the optimizer step (its one x-axis).
        """
        sr = self.hparams.sample_rate
        if self.wandb_run is not None:
            log_example_media(self.wandb_run, tag, signals, sr, self.optimizer_step)
        if self.tb_writer is None:
            return
        for name, signal in signals.items():
            tensor = torch.from_numpy(limit_peak(signal)).float().unsqueeze(0)
            self.tb_writer.add_audio(f"{tag}_audio/{name}", tensor, step, sample_rate=sr)
            image = spectrogram_image(signal, sr=sr)
            self.tb_writer.add_image(f"{tag}_spectrogram/{name}", image, step, dataformats="HWC")

    # ---- stage hooks ----------------------------------------------------
    def ensure_tensorboard(self):
        """Create the loggers once: ``self.tensorboard`` / ``self.tb_writer``, ``self.wandb_run``.

        Each is None unless enabled (``use_tensorboard``, ``use_wandb``); the
        writer and the W&B run exist on the main process only.
        """
        if not hasattr(self, "tensorboard"):
            # Built on every rank (its log_stats is a collective); the writer
            # itself exists on the main process only.
            self.tensorboard, self.tb_writer = None, None
            if self.hparams.use_tensorboard:
                from speechbrain.utils.train_logger import TensorboardLogger

                self.tensorboard = TensorboardLogger(self.hparams.tensorboard_folder)
                self.tb_writer = self.tensorboard.writer
            self.wandb_run = None
            if self.hparams.use_wandb:
                config = scalar_config(self.hparams)
                self.wandb_run = start_wandb_run(self.hparams.wandb_logger, config)

    def on_stage_start(self, stage, epoch=None):
        """Reset per-stage accumulators; new mixtures each training epoch."""
        self.current_epoch = epoch or 0
        self.ensure_tensorboard()
        if not hasattr(self, "metric_computer"):
            metrics = dict.fromkeys([*self.hparams.valid_metrics, *self.hparams.test_metrics])
            self.metric_computer = MetricComputer(
                num_workers=self.hparams.metric_workers,
                sr=self.hparams.sample_rate,
                metrics=tuple(m for m in metrics if m not in self.LOCAL_METRICS),
            )
        if stage == sb.Stage.TRAIN:
            if self.step == 0:  # else resumed mid-epoch: keep the restored sums
                self.train_components.reset()
            self.first_batch_reported = False
            if getattr(self, "onthefly_dataset", None) is not None:
                self.onthefly_dataset.set_epoch(self.current_epoch)
        else:
            self.metric_records = []
            self.stage_batches = 0
            self.test_rows = []
            self.pending, self.num_pending = deque(), 0
            self.valid_audio_logged = False
            self.example_chooser = ExampleChooser(
                self.hparams.num_examples_to_save, self.hparams.num_worst_examples_to_save
            )
            worst = self.example_chooser.num_worst
            if (
                stage == sb.Stage.TEST
                and worst
                and self.hparams.checkpoint_key not in (self.hparams.test_metrics)
            ):
                raise ValueError(
                    f"num_worst_examples_to_save: {worst} ranks test utterances by "
                    f"checkpoint_key {self.hparams.checkpoint_key!r}, which is not in "
                    f"test_metrics {list(self.hparams.test_metrics)}: add it or set 0"
                )

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log statistics, keep the best checkpoint, write the test report."""
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            stats.update(self.train_components.means())
            self.train_stats = stats
            return
        self._resolve_all()
        if stage == sb.Stage.VALID:
            # Under DDP: every rank's records, in single-process order, and the loss over all.
            self.metric_records = gather_in_rank_order(self.metric_records)
            stats["loss"] = self.stage_loss_over_ranks(stage_loss)
            summary = summarize(self.metric_records)
            stats.update({k: v for k, v in summary.items() if k in self.hparams.valid_metrics})
            self.valid_stats = stats  # the same on every rank (records gathered above)
            failures = {k: v for k, v in summary.items() if k.endswith("_failures") and v}
            if failures:
                logger.warning(f"Metric failures on validation (reported, not fatal): {failures}")
            lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            if self.tensorboard is not None:
                self.tensorboard.log_stats({"epoch": epoch}, self.train_stats, stats)
            if self.wandb_run is not None:
                values = epoch_scalars(epoch, {"train": self.train_stats, "valid": stats})
                log_values(self.wandb_run, {**values, "lr": lr}, self.optimizer_step)
            key = self.hparams.checkpoint_key
            if not math.isfinite(stats.get(key, math.nan)):
                raise RuntimeError(
                    f"validation metric {key!r} is not finite ({stats.get(key)}); "
                    "cannot select the best checkpoint"
                )
            self.checkpointer.save_and_keep_only(meta=stats, max_keys=[key])
        elif stage == sb.Stage.TEST:
            self._finish_test_report(stats)

    def _finish_test_report(self, stats):
        rows = self.test_rows
        metrics = self.hparams.test_metrics
        summary = test_summary(rows, metrics, stats["loss"])
        self.test_summary = summary
        self.hparams.train_logger.log_stats(
            stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
            test_stats={k: v for k, v in summary.items() if k.endswith("_estimate")},
        )
        if not if_main_process():
            return
        self.save_worst_examples()
        examples = self.example_chooser.examples()
        folder = self.hparams.test_report_folder
        write_test_report(folder, rows, summary, metrics, self.hparams.checkpoint_key, examples)
        if self.wandb_run is not None:
            log_test_report(self.wandb_run, summary, metrics, examples, folder, self.optimizer_step)
            self.wandb_run.finish()
            self.wandb_run = None
