"""Where a training step's time goes: data, forward, loss, backward, optimizer, validation.

Usage::

    python -m benchmarks.training_step recipes/unet_tcm/hparams/unet_cpu.yaml \\
        --data_folder ../shared/real_corpus [--any_yaml_key value ...] \\
        [--steps 20] [--threads 1 2] [--output_json profile.json]

The recipe's own data preparation runs first (skipped when done) into
``--output_folder`` (default: a ``profile`` folder under the YAML's
``output_folder``). Then, for each thread count:

* data: training mixtures drawn by the recipe's on-the-fly dataset in this
  process, one batch (``batch_size`` mixtures) at a time;
* one optimizer step split into forward, loss, backward and optimizer
  (median over ``--steps`` steps after two warm-up steps, fixed batch);
* validation: model forward and metric scoring (the YAML's
  ``valid_metrics``) per fixed validation utterance, in this process.

It prints each part in ms and as a share of a step, the data time against
the compute time (the data loader's worker hides the data time only when
it is shorter and a core is free for it), and the wall-clock a validation
pass costs in training steps. CPU model, thread count and load are printed
with the figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from benchmarks.machine import BenchmarkRun, add_output_json
from custom_modules.data.recipe_data import enhancement_datasets, prepare_enhancement_data
from custom_modules.evaluation.metrics import MetricComputer


def _timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def profile_steps(hparams, batch, steps: int) -> dict:
    """Median seconds of forward, loss, backward and optimizer over ``steps`` steps."""
    model = hparams["modules"]["model"]
    model.train()
    optimizer = hparams["opt_class"](model.parameters())
    mixture, target = batch
    lengths = torch.ones(mixture.shape[0])
    parts = {"forward": [], "loss": [], "backward": [], "optimizer": []}
    for step in range(steps + 2):
        estimate, forward = _timed(lambda: model(mixture))
        loss, loss_time = _timed(lambda e=estimate: hparams["loss"](e, target, lengths))
        loss = loss[0] if isinstance(loss, tuple) else loss
        _, backward = _timed(loss.backward)
        _, opt = _timed(lambda: (optimizer.step(), optimizer.zero_grad()))
        if step >= 2:  # warm-up: allocator, first-call costs
            for name, value in zip(parts, (forward, loss_time, backward, opt), strict=True):
                parts[name].append(value)
    return {name: statistics.median(values) for name, values in parts.items()}


def profile_data(train_set, batch_size: int, batches: int) -> tuple:
    """Seconds per batch of on-the-fly mixtures, and the last batch (mixture, target)."""
    train_set.set_epoch(1)
    start = time.perf_counter()
    items = [train_set[i] for i in range(batch_size * batches)]
    seconds = (time.perf_counter() - start) / batches
    last = items[-batch_size:]
    mixture = torch.stack([torch.as_tensor(item["mixture"]) for item in last])
    target = torch.stack([torch.as_tensor(item["target"]) for item in last])
    return seconds, (mixture, target)


def profile_validation(hparams, valid_set, utterances: int) -> dict:
    """Seconds per validation utterance: model forward and metric scoring."""
    model = hparams["modules"]["model"].eval()
    forward, scoring = [], []
    with MetricComputer(
        num_workers=0, sr=hparams["sample_rate"], metrics=hparams["valid_metrics"]
    ) as computer:
        for index in range(min(utterances, len(valid_set))):
            item = valid_set[index]
            with torch.inference_mode():
                estimate, seconds = _timed(lambda it=item: model(it["mixture"][None])[0])
            forward.append(seconds)
            _, seconds = _timed(
                lambda e=estimate, it=item: computer.compute(
                    [e.double().numpy()], [it["target"].double().numpy()], ids=["x"]
                )
            )
            scoring.append(seconds)
    return {"forward": statistics.median(forward), "metrics": statistics.median(scoring)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("hparams_file")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--data_batches", type=int, default=5, help="timed data batches")
    parser.add_argument("--valid_utterances", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    add_output_json(parser)
    args, rest = parser.parse_known_args(argv)
    _, _, overrides = sb.parse_arguments([args.hparams_file, *rest])
    with open(args.hparams_file, encoding="utf-8") as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    if "--output_folder" not in rest:
        hparams["prep_folder"] = str(Path(hparams["output_folder"]) / "profile" / "prepared")
    run = BenchmarkRun("training_step", args)
    prepare_enhancement_data(hparams)
    train_set, valid_set, _ = enhancement_datasets(hparams)
    batch_size = hparams["batch_size"]
    results = {"threads": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        data, batch = profile_data(train_set, batch_size, args.data_batches)
        step = profile_steps(hparams, batch, args.steps)
        valid = profile_validation(hparams, valid_set, args.valid_utterances)
        compute = sum(step.values())
        results["threads"][threads] = {"data_per_batch": data, "step": step, "valid": valid}
        valid_pass = (valid["forward"] + valid["metrics"]) * len(valid_set)
        print(f"\n{threads} thread(s), batch {batch_size} x {hparams['crop_sec']} s:")
        for name, value in step.items():
            print(f"  {name:<10} {1e3 * value:8.1f} ms  {100 * value / compute:5.1f} %")
        print(f"  {'step':<10} {1e3 * compute:8.1f} ms")
        print(f"  data       {1e3 * data:8.1f} ms per batch ({data / compute:.2f} x the step)")
        print(
            f"  validation {1e3 * valid['forward']:.1f} ms forward + {1e3 * valid['metrics']:.1f} "
            f"ms metrics per utterance; a {len(valid_set)}-utterance pass = {valid_pass:.1f} s "
            f"= {valid_pass / compute:.0f} steps (metric workers divide the metric part)"
        )
    run.finish(results)
    return results


if __name__ == "__main__":
    main()
