#!/usr/bin/env python3
"""Recipe: SpEx+ target speaker extraction (Ge et al., Interspeech 2020).

Given a mixture of two speakers and a reference (enrolment) utterance of the
target speaker, the model (``custom_modules/models/spex_plus.py``) outputs the
target speaker's speech. Training minimises the multi-scale negative SI-SDR
(0.8 / 0.1 / 0.1) plus 0.5 x the cross-entropy of the speaker-classification
head over the training speakers; validation and test score the short-window
output ``s1`` only (SI-SDR, SI-SDR improvement, PESQ). The best-SI-SDR
checkpoint is evaluated on the test set at the end.

Data (all from ``data_folder``, a folder holding ``LibriSpeech/``, e.g. the
demo corpus): speech manifests by ``data_prepare.librispeech`` (speaker
disjoint: train-clean-100 / dev-clean / test-clean), then triplets by
``data_prepare.librispeech_mixtures.write_triplets``: a fixed training set
(``train_mode: fixed``, ``num_train_triplets``) or fresh triplets every epoch
(``train_mode: onthefly``), and fixed, seeded validation/test sets. The
classes of the speaker head are the training speakers that can be targets
(``<prep_folder>/train_speakers.json``); ``num_speakers: 0`` in the YAML is
replaced by their number here, and the resolved value is what
``hyperparams.yaml`` records (``infer.py``/``test.py`` rebuild the same model).

To run::

    python recipes/spex_plus/train.py recipes/spex_plus/hparams/spex_plus.yaml \
        --data_folder /data            # holds LibriSpeech/

    # CPU size, on the offline demo corpus (python -m data_prepare.demo --out data/demo)
    python recipes/spex_plus/train.py recipes/spex_plus/hparams/spex_plus_cpu.yaml \
        --data_folder data/demo

Then ``test.py`` (any custom directory, chunked evaluation) and ``infer.py``
(one mixture + one enrolment), see the README.
"""

import sys
from pathlib import Path

import speechbrain as sb
import yaml
from hyperpyyaml import load_hyperpyyaml, resolve_references

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone, uninstalled
from custom_modules.brain import EnhancementBrain  # noqa: E402
from custom_modules.datasets import OnTheFlyTripletDataset, triplet_dataset  # noqa: E402
from custom_modules.experiment import setup_experiment, train_and_evaluate  # noqa: E402
from custom_modules.files import atomic_write_json, atomic_write_text, read_json  # noqa: E402
from custom_modules.models.spex_plus import si_sdr  # noqa: E402
from custom_modules.triplets import SpeakerPool  # noqa: E402
from data_prepare.librispeech import prepare_librispeech  # noqa: E402
from data_prepare.librispeech_mixtures import check_speaker_disjoint, write_triplets  # noqa: E402

# Dataset outputs renamed to what EnhancementBrain reads (batch.mixture, batch.target).
KEYS = {"mix": "mixture", "ref": "reference"}
SPLITS = ("train", "valid", "test")


class SpexPlusBrain(EnhancementBrain):
    """SpEx+: (mixture, reference) in, target speaker's waveform out."""

    def compute_forward(self, batch, stage):
        """Run the model; returns ``SpexPlusOutput`` (estimates (batch, 3, samples), logits...)."""
        batch = batch.to(self.device)
        mixture, _ = batch.mixture
        reference, reference_lengths = batch.reference
        return self.modules.model(mixture, reference, reference_lengths)

    def estimate_from_outputs(self, outputs):
        """The extracted speech: the short-window estimate s1, (batch, samples)."""
        return outputs.estimates[:, 0]

    def compute_objectives(self, predictions, batch, stage):
        """Training: multi-scale SI-SDR + CE. Valid/test: -SI-SDR of s1, plus metrics."""
        target, lengths = batch.target
        if stage == sb.Stage.TRAIN:
            total, weighted_si_sdr, ce = self.hparams.loss(
                predictions.estimates,
                target,
                lengths,
                logits=predictions.speaker_logits,
                speaker_index=batch.speaker_index,
            )
            self.log_train_losses(loss=total, si_sdr=weighted_si_sdr, ce=ce)
            return total
        # Valid/test speakers are unseen: no CE; the output is the short-window s1.
        estimate = self.estimate_from_outputs(predictions)
        self.evaluate_estimates(batch, estimate, stage)
        return -si_sdr(estimate, target, lengths).mean()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Halve the learning rate when the validation loss stalls, then log and checkpoint."""
        if stage == sb.Stage.VALID:
            _, new_lr = self.hparams.lr_scheduler([self.optimizer], epoch, stage_loss)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
        super().on_stage_end(stage, stage_loss, epoch)


# ---- data ---------------------------------------------------------------------------
def speakers_file(hparams):
    """Sorted training speakers that can be targets: the classes of the speaker head."""
    return Path(hparams["prep_folder"]) / "train_speakers.json"


def triplet_manifest(hparams, split):
    """Manifest of the written ``split`` triplet set."""
    return Path(hparams["prep_folder"]) / f"triplets_{split}" / "manifest.json"


def speech_manifests(hparams, skip=False):
    """``{split: speech manifest}`` (speaker-disjoint LibriSpeech splits)."""
    paths = prepare_librispeech(
        data_folder=hparams["data_folder"],
        save_folder=Path(hparams["prep_folder"]) / "speech",
        splits=hparams["librispeech_splits"],
        valid_ratio=hparams["valid_ratio"],
        test_ratio=hparams["test_ratio"],
        seed=hparams["split_seed"],
        sample_rate=hparams["sample_rate"],
        skip_prep=skip or hparams["skip_prep"],
    )
    return {split: paths[("speech", split)] for split in SPLITS}


def noise_manifests(hparams, skip=False):
    """``{split: noise manifest}`` (MUSAN layout of data_folder) when ``add_noise``, else {}."""
    if not hparams["add_noise"]:
        return {}
    from data_prepare.musan import prepare_musan

    paths = prepare_musan(
        hparams["data_folder"],
        Path(hparams["prep_folder"]) / "noise",
        seed=hparams["split_seed"],
        sample_rate=hparams["sample_rate"],
        skip_prep=skip or hparams["skip_prep"],
    )
    return {split: paths[("noise", split)] for split in SPLITS}


def prepare_data(hparams, progress=True):
    """Manifests, training speakers and triplet sets (run it through ``run_on_main``)."""
    speech, noise = speech_manifests(hparams), noise_manifests(hparams)
    pools = {split: SpeakerPool.from_manifest(speech[split], sr=hparams["sample_rate"])
             for split in SPLITS}  # fmt: skip
    check_speaker_disjoint({split: pool.speakers for split, pool in pools.items()})
    atomic_write_json(speakers_file(hparams), pools["train"].target_speakers)
    sets = {
        "valid": (
            hparams["num_valid_examples"],
            hparams["valid_set_seed"],
            hparams["eval_crop_sec"],
        ),
        "test": (hparams["num_test_examples"], hparams["test_set_seed"], hparams["eval_crop_sec"]),
    }
    if hparams["train_mode"] == "fixed":
        sets["train"] = (
            hparams["num_train_triplets"],
            hparams["train_set_seed"],
            hparams["crop_sec"],
        )
    elif hparams["train_mode"] != "onthefly":
        raise ValueError(f"train_mode must be 'fixed' or 'onthefly', got {hparams['train_mode']!r}")
    for split, (count, seed, max_sec) in sets.items():
        write_triplets(
            speech[split],
            triplet_manifest(hparams, split).parent,
            num_triplets=count,
            seed=seed,
            sr=hparams["sample_rate"],
            loudness_lufs=hparams["loudness_lufs"],
            tir_db_range=hparams["tir_db_range"],
            length_policy=hparams["length_policy"],
            max_sec=max_sec,
            ref_max_sec=hparams["ref_crop_sec"],
            noise_manifest=noise.get(split),
            snr_db_range=hparams["snr_db_range"] if noise else None,
            progress=progress,
            # Worker processes pay for their start-up only on large sets.
            num_workers=hparams["prep_workers"] if count >= 200 else 1,
        )


def spex_datasets(hparams, speakers):
    """(train, valid, test) datasets with keys id, mixture, reference, target[, speaker_index]."""
    if hparams["train_mode"] == "onthefly":
        noise = noise_manifests(hparams, skip=True)
        train = OnTheFlyTripletDataset(
            speech_manifests(hparams, skip=True)["train"],
            length=hparams["num_train_triplets"],
            seed=hparams["seed"],
            sr=hparams["sample_rate"],
            loudness_lufs=hparams["loudness_lufs"],
            tir_db_range=hparams["tir_db_range"],
            crop_sec=hparams["crop_sec"],
            ref_crop_sec=hparams["ref_crop_sec"],
            length_policy=hparams["length_policy"],
            noise_manifest=noise.get("train"),
            snr_db_range=hparams["snr_db_range"] if noise else None,
            speakers=speakers,
            keys=KEYS,
        )
    else:
        train = triplet_dataset(triplet_manifest(hparams, "train"), speakers=speakers, keys=KEYS)
    # Validation batches sorted by length: less padding (gLN statistics include padding).
    valid = triplet_dataset(triplet_manifest(hparams, "valid"), keys=KEYS)
    valid = valid.filtered_sorted(sort_key="duration")
    test = triplet_dataset(triplet_manifest(hparams, "test"), keys=KEYS)
    return train, valid, test


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
    sb.utils.distributed.run_on_main(prepare_data, args=[hparams], kwargs={"progress": progress})
    speakers = read_json(speakers_file(hparams))
    # The head's size is known only now: reload the YAML with it and record it.
    hparams_file, _, overrides = sb.parse_arguments(sys.argv[1:])
    hparams, overrides = set_num_speakers(hparams_file, overrides, hparams, len(speakers))
    if sb.utils.distributed.if_main_process():
        save_resolved_hparams(hparams_file, overrides, hparams["output_folder"])
    train_and_evaluate(SpexPlusBrain, hparams, run_opts, *spex_datasets(hparams, speakers))
