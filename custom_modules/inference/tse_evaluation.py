"""Evaluate a trained SpEx+ run on any custom directory of triplets (``recipes/spex_plus/test.py``).

Usage (from the clone's root; ``recipes/spex_plus/test.py`` takes the same arguments)::

    python -m custom_modules.inference.tse_evaluation recipes/spex_plus/hparams/spex_plus.yaml \
        -t <custom dir> [--output_folder <run>] [other YAML overrides] \
        [--chunk_sec 2.0 --chunk_overlap_sec 0.25] [--report_folder <folder>]

* The run is the one the YAML and its overrides designate (its
  ``output_folder``, as for training); its best checkpoint by
  ``checkpoint_key`` (validation SI-SDR) is loaded. The model is rebuilt with
  the ``num_speakers`` and the model sizes (``MODEL_KEYS``, e.g. a width
  ablation's ``--hidden_channels``) the run recorded in its
  ``hyperparams.yaml`` (``num_speakers: 0``, the recipe's default: the
  checkpoint sizes the speaker head). ``--data_folder`` is not needed (nothing
  is prepared).
* The YAML's ``test_metrics`` decide what is scored: with ``si_snr_zero_ref``
  / ``si_snr_other_ref`` (on in the recipe YAMLs) every mixture is also
  extracted with an all-zero reference / the reference of another triplet
  (``custom_modules/training/tse.py``), reported next to the normal SI-SDR(i).
  ``--test_metrics "[si_snr, pesq]"`` leaves them out.
* The custom directory holds ``mix/<ID>-mixed.wav``, ``refs/<ID>-ref.wav``
  and ``targets/<ID>-target.wav`` (see ``custom_modules.data.datasets.CustomDirDataset``;
  files at another rate are resampled on load). Targets are needed to score;
  to extract without targets, use ``infer.py``
  (:mod:`custom_modules.inference.speaker_extraction`).
* Report (default ``<run>/custom_test/<custom dir name>/``): the shared test
  report of the recipes, ``per_utterance.csv`` (SI-SDR of the mixture and of
  the estimate, their difference = SI-SDRi, the same for PESQ), ``summary.json``
  (means), ``results_table.md`` and example wavs; plus ``log.txt`` and
  ``test_log.txt``. Whole utterances are processed (batch size 1).
* ``--chunk_sec``: chunked evaluation as well. Every mixture is also processed
  in chunks of that length overlapping by ``--chunk_overlap_sec`` (crossfaded,
  see ``custom_modules/inference/speaker_extraction.py``), and ``chunked_vs_whole.csv`` / ``chunked_summary.json``
  compare chunked and whole-utterance SI-SDR on the same set.
"""

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import speechbrain as sb
from hyperpyyaml import resolve_references
from ruamel.yaml import YAML

from custom_modules.audio.files import atomic_write_json, atomic_write_text
from custom_modules.data.datasets import CustomDirDataset
from custom_modules.data.tse_data import KEYS
from custom_modules.inference.run_loading import RunFolderError, find_best_checkpoint
from custom_modules.inference.speaker_extraction import chunked_evaluation
from custom_modules.training.experiment import load_hparams, overrides_dict
from custom_modules.training.tse import SpexPlusBrain


def parse_args(argv):
    """Own options; everything else goes to SpeechBrain (hparams file, overrides, run options)."""
    parser = argparse.ArgumentParser(
        description="Evaluate the best checkpoint of a SpEx+ run on a custom directory.",
        usage="%(prog)s HPARAMS_FILE -t CUSTOM_DIR [--output_folder RUN] [YAML overrides]",
        allow_abbrev=False,  # unknown options are YAML overrides, never abbreviations of ours
    )
    parser.add_argument("-t", "--test_dir", required=True, help="folder with mix/, refs/, targets/")
    parser.add_argument("--report_folder", help="default: <run>/custom_test/<custom dir name>")
    parser.add_argument("--chunk_sec", type=float, help="also evaluate chunked processing")
    parser.add_argument("--chunk_overlap_sec", type=float, default=0.25, help="chunk overlap")
    return parser.parse_known_args(argv)


def resolved_tree(hparams_file, overrides):
    """The YAML with references resolved, as a plain tree (no object is built)."""
    with open(hparams_file, encoding="utf-8") as fin:
        return YAML().load(resolve_references(fin, overrides).getvalue())


# Top-level YAML keys of the model's size: the run's recorded values rebuild its model.
MODEL_KEYS = (
    "num_filters",
    "encoder_kernel_sizes",
    "bottleneck_channels",
    "hidden_channels",
    "embedding_dim",
    "speaker_hidden_channels",
    "speaker_block_channels",
    "num_stacks",
    "blocks_per_stack",
    "tcn_kernel_size",
)


def run_model_hparams(output_folder):
    """``num_speakers`` and the ``MODEL_KEYS`` recorded in ``<output_folder>/hyperparams.yaml``.

    Runs older than the top-level model keys record only ``num_speakers``.
    """
    recorded = Path(output_folder) / "hyperparams.yaml"
    if not recorded.is_file():
        raise FileNotFoundError(
            f"{recorded} not found: {output_folder} is not the output folder of a training "
            "run (pass the run's --output_folder and the overrides used for training)"
        )
    tree = YAML().load(recorded.read_text(encoding="utf-8"))  # keeps the !new: tags unbuilt
    values = {key: json.loads(json.dumps(tree[key])) for key in MODEL_KEYS if key in tree}
    return {"num_speakers": int(tree["num_speakers"]), **values}


def write_chunked_report(folder, rows, summary):
    """``chunked_vs_whole.csv`` and ``chunked_summary.json``; prints the comparison."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()})
    atomic_write_text(folder / "chunked_vs_whole.csv", buffer.getvalue())
    atomic_write_json(folder / "chunked_summary.json", summary)
    print(
        f"\nChunked ({summary['chunk_sec']:.2f} s chunks, {summary['overlap_sec']:.2f} s overlap; "
        f"{summary['utterances_longer_than_a_chunk']} of {summary['num_utterances']} "
        "utterances span several chunks) vs whole-utterance processing"
    )
    print("| processing | SI-SDR | SI-SDRi |\n|---|---|---|")
    for name in ("whole", "chunked"):
        print(f"| {name} | {summary[f'si_sdr_{name}']:.3f} | {summary[f'si_sdri_{name}']:+.3f} |")
    print(
        f"SI-SDR of chunked against whole-utterance output: {summary['si_sdr_chunked_vs_whole']:.2f} dB"
    )
    print(f"Per-utterance comparison: {folder / 'chunked_vs_whole.csv'}")


def main(argv=None):
    """Evaluate; returns the shared test summary (and the chunked one when asked)."""
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    test_dir = Path(args.test_dir).resolve()
    hparams_file, run_opts, overrides = sb.parse_arguments(rest)
    overrides = overrides_dict(overrides)
    overrides.setdefault("data_folder", str(test_dir))  # a placeholder: nothing is prepared

    tree = resolved_tree(hparams_file, overrides)
    output_folder = Path(tree["output_folder"])
    recorded = run_model_hparams(output_folder)
    for key, value in recorded.items():  # the run's model, unless the command line says otherwise
        if key == "num_speakers" or key not in overrides:
            overrides[key] = value
    report = Path(args.report_folder or output_folder / "custom_test" / test_dir.name).resolve()
    overrides.update(
        test_report_folder=str(report),
        train_log=str(report / "test_log.txt"),  # the run's train_log.txt is left alone
        use_tensorboard=False,
        use_wandb=False,  # an evaluation, not a training run
    )
    if not test_dir.is_dir():
        raise FileNotFoundError(f"custom directory {test_dir} does not exist")
    if not (test_dir / "targets").is_dir():
        raise FileNotFoundError(
            f"{test_dir / 'targets'} not found: scoring needs targets/<ID>-target.wav "
            "(to extract without targets use recipes/spex_plus/infer.py, "
            "python -m custom_modules.inference.speaker_extraction)"
        )
    dataset = CustomDirDataset(test_dir, sr=tree["sample_rate"], keys=KEYS)

    hparams = load_hparams(hparams_file, overrides)
    sb.create_experiment_directory(report, hyperparams_to_save=hparams_file, overrides=overrides)
    # Refuse to evaluate an untrained model (SpeechBrain would just warn).
    best = find_best_checkpoint(hparams["checkpointer"], hparams["checkpoint_key"])
    print(f"Evaluating {best.path} on {len(dataset)} utterances of {test_dir}")

    brain = SpexPlusBrain(
        modules=hparams["modules"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.evaluate(
        dataset,
        max_key=hparams["checkpoint_key"],
        test_loader_kwargs=hparams["test_loader_options"],
    )
    results = {"summary": brain.test_summary}
    if args.chunk_sec:
        model = brain.modules.model.eval()
        rows, summary = chunked_evaluation(
            model, dataset, hparams["sample_rate"], args.chunk_sec, args.chunk_overlap_sec
        )
        write_chunked_report(report, rows, summary)
        results["chunked"] = summary
    return results


def cli(argv=None) -> int:
    """:func:`main` with one-line errors; returns the exit status."""
    try:
        main(argv)
    except (FileNotFoundError, ValueError, RunFolderError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
