"""Underfitting or mismatch? Score a run on mixtures drawn from its TRAINING data.

Draws a fixed set with the run's own training mixer (training manifests, training
gain ranges, ``eval_crop_sec`` crops) into ``--out``, enhances it with the run's
best checkpoint and prints the mean improvements overall, per speech condition
(dry / reverberant) and per noise source kind (the noise manifest's ``source``:
recorded files, generated babble, generated synthetic noise). A model that
improves its own training distribution little underfits (more steps, more
capacity, a better objective); one that improves it much more than the test split
meets a mismatch (other noises, rooms or speakers).

Run (enhancement recipes with a ``mixer``, e.g. UNet-TCM, spectral mask, DCUNet)::

    python -m scripts.fit_check --run results/real_unet_tcm --num_examples 40

Writes ``<out>/fit_check.json`` (per utterance and the means) atomically.
"""

import argparse
import json
import sys
from pathlib import Path

import soundfile as sf
import torch

from custom_modules.audio.files import atomic_write_text, load_manifest
from custom_modules.data.fixed_sets import write_fixed_set
from custom_modules.data.recipe_data import build_mixer, split_manifest
from custom_modules.evaluation.metrics import utterance_metrics
from custom_modules.inference.run_loading import load_run
from custom_modules.training.reporting import summarize_by_condition

METRICS = ("si_snr", "stoi", "pesq")


def source_kind(source: str) -> str:
    """Short name of a noise manifest's ``source`` field.

    Example
    -------
    >>> [source_kind(s) for s in ("generated/babble", "generated/synthetic_noise", "noise")]
    ['babble', 'synthetic_noise', 'recorded']
    """
    source = str(source)
    return source.split("/", 1)[1] if source.startswith("generated/") else "recorded"


def group_means(records, key) -> dict:
    """``{group: {"n": count, "<metric>_<part>": mean}}`` over records grouped by ``key``.

    The means of the test reports (:func:`summarize_by_condition`: non-finite values left out).

    Example
    -------
    >>> rows = [{"c": "a", "si_snr_mixture": 0.0, "si_snr_estimate": 1.0, "si_snr_delta": 1.0},
    ...         {"c": "a", "si_snr_mixture": 0.0, "si_snr_estimate": 3.0, "si_snr_delta": 3.0}]
    >>> group_means(rows, "c")["a"]["si_snr_delta"]
    2.0
    """
    metrics = [m for m in METRICS if records and f"{m}_delta" in records[0]]
    groups = summarize_by_condition(records, metrics, key)
    return {name: {"n": part.pop("num_utterances"), **part} for name, part in groups.items()}


def score_training_fit(run, num_examples=40, seed=77, out=None, data_folder=None):
    """Draw, enhance and score ``num_examples`` training-distribution mixtures."""
    loaded = load_run(run)
    hparams = dict(loaded.hparams)
    if data_folder is not None:
        hparams["data_folder"] = str(data_folder)
    if "mixer" not in hparams:
        raise SystemExit(
            f"{run}: the recipe has no on-the-fly mixer to draw training mixtures with"
        )
    hparams["crop_sec"] = hparams.get("eval_crop_sec", hparams["crop_sec"])
    out = Path(out) if out else Path(run) / "fit_check"
    manifest = write_fixed_set(
        build_mixer(hparams, "train"), out / "mixtures", num_examples, seed, prefix="fit_"
    )
    noise_entries = load_manifest(
        split_manifest(hparams, "noise", "train"), data_root=hparams["data_folder"]
    )
    sources = {key: source_kind(entry.get("source", "")) for key, entry in noise_entries.items()}
    sr = loaded.sample_rate
    records = []
    for key, entry in load_manifest(manifest).items():
        mixture, _ = sf.read(entry["mixture"], dtype="float32")
        target, _ = sf.read(entry["target"], dtype="float32")
        with torch.inference_mode():
            estimate = loaded.model(torch.from_numpy(mixture)[None])[0].numpy()
        after = utterance_metrics(key, estimate, target, sr, METRICS)
        before = utterance_metrics(key, mixture, target, sr, METRICS)
        noise_ids = [segment.get("id") for segment in entry.get("noise") or []]
        record = {
            "id": key,
            "split": "train",
            "condition": "dry" if entry.get("speech_rir") is None else "reverberant",
            "noise_source": sources.get(noise_ids[0], "unknown") if noise_ids else "unknown",
        }
        for metric in METRICS:  # NaN where a metric failed (left out of the means)
            record[f"{metric}_mixture"] = before[metric]
            record[f"{metric}_estimate"] = after[metric]
            record[f"{metric}_delta"] = after[metric] - before[metric]
        records.append(record)
    summary = {
        "run": str(run),
        "checkpoint": loaded.describe(),
        "num_examples": len(records),
        "seed": seed,
        "all": group_means(records, "split")["train"],
        "by_condition": group_means(records, "condition"),
        "by_noise_source": group_means(records, "noise_source"),
        "per_utterance": records,
    }
    atomic_write_text(out / "fit_check.json", json.dumps(summary, indent=2))
    return summary


def format_table(summary) -> str:
    """Markdown table of the means (overall, per condition, per noise source)."""
    lines = [
        "| group | n | ΔSI-SDR (dB) | ΔSTOI | ΔPESQ |",
        "|---|---|---|---|---|",
    ]
    rows = [("all", summary["all"])]
    rows += [(f"condition: {k}", v) for k, v in summary["by_condition"].items()]
    rows += [(f"noise: {k}", v) for k, v in summary["by_noise_source"].items()]
    for name, values in rows:
        cells = [f"{values.get(f'{m}_delta', float('nan')):+.3f}" for m in METRICS]
        lines.append(f"| {name} | {values['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="training run folder")
    parser.add_argument("--num_examples", type=int, default=40)
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--out", default=None, help="default: <run>/fit_check")
    parser.add_argument("--data_folder", default=None, help="if the corpus moved")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.num_examples < 1:
        parser.error("--threads and --num_examples must be >= 1")
    torch.set_num_threads(args.threads)
    summary = score_training_fit(args.run, args.num_examples, args.seed, args.out, args.data_folder)
    print(f"{summary['num_examples']} training-distribution mixtures; {summary['checkpoint']}")
    print(format_table(summary))


if __name__ == "__main__":
    sys.exit(main())
