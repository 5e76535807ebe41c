"""SpEx+ on real-speech layouts and its ablation hooks (custom_modules/training/tse.py, custom_modules/data/tse_data.py, speaker pretraining).

* the plain corpus layout's speaker split (speaker-disjoint, MANIFEST.tsv
  speakers, the split of ``prepare_plain``) and its triplets (reference = another
  utterance of the target speaker), for both training modes;
* the TIR curriculum (range at progress 0, mid, end; applied to the on-the-fly set);
* the speaker-accuracy logging of the recipe's Brain;
* the zero / other-speaker reference checks of the evaluation, on a tiny model;
* the learning-rate policies and speaker-branch pretraining (fresh runs only).

Everything runs on tiny synthetic "speech" (harmonic voices) and tiny models.
"""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataset import DynamicItemDataset

from custom_modules.audio.files import load_manifest, read_json
from custom_modules.data.datasets import CustomDirDataset, OnTheFlyTripletDataset
from custom_modules.data.librispeech_mixtures import prepare_speech_splits, write_triplets
from custom_modules.data.triplets import TripletMaker
from custom_modules.data.tse_data import (
    TirCurriculum,
    check_train_mode,
    prepare_tse_data,
    tse_datasets,
)
from custom_modules.evaluation.metrics import si_snr
from custom_modules.training.experiment import load_hparams
from custom_modules.training.schedules import WarmupCosineSchedule
from custom_modules.training.speaker_pretraining import SpeakerCrops, pretrain_speaker_branch
from custom_modules.training.tse import (
    OtherReferences,
    SpeakerExtractionBrain,
    SpexPlusBrain,
    speaker_accuracy,
)
from data_prepare.plain import assign_splits, speech_items

# Autouse fixture: each test runs torch on one thread (see test_spex_plus.py).
from tests.data.test_librispeech_mixtures import voiced, write_corpus
from tests.models.test_spex_plus import one_thread  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "spex_plus"
CPU_YAML = RECIPE / "hparams" / "spex_plus_cpu.yaml"
SR = 16000
TINY = {
    "num_filters": 8,
    "encoder_kernel_sizes": [8, 16, 32],
    "bottleneck_channels": 8,
    "hidden_channels": 16,
    "embedding_dim": 8,
    "speaker_hidden_channels": 8,
    "speaker_block_channels": [8, 8, 8],
    "num_stacks": 1,
    "blocks_per_stack": 2,
}


def write_plain_corpus(root, num_speakers=8, utterances=3, seed=0):
    """speech/SPK<i>/<j>.flac (own pitch range per speaker); MANIFEST.tsv names them spk_<i>."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_speakers):
        folder = root / "speech" / f"SPK{i}"
        folder.mkdir(parents=True)
        for j in range(utterances):
            path = folder / f"{j:03d}.flac"
            sf.write(str(path), voiced(rng, rng.uniform(0.8, 1.4), -25), SR)
            rows.append({"file": f"speech/SPK{i}/{j:03d}.flac", "speaker": f"spk_{i}"})
    with open(root / "MANIFEST.tsv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "speaker"], delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def plain_corpus(tmp_path_factory):
    return write_plain_corpus(tmp_path_factory.mktemp("plain") / "corpus")


def speakers_of(manifest):
    return {entry["speaker"] for entry in load_manifest(manifest).values()}


# ---- plain layout: speakers and triplets -------------------------------------------------
def test_plain_speaker_split_is_speaker_disjoint_and_that_of_prepare_plain(plain_corpus, tmp_path):
    paths = prepare_speech_splits(plain_corpus, tmp_path / "speech", valid_ratio=0.2,
                                  test_ratio=0.2, seed=3, num_workers=1)  # fmt: skip
    split_speakers = {split: speakers_of(path) for split, path in paths.items()}
    assert [len(split_speakers[s]) for s in ("train", "valid", "test")] == [4, 2, 2]
    assert set.union(*split_speakers.values()) == {f"spk_{i}" for i in range(8)}  # MANIFEST.tsv
    assert sum(len(s) for s in split_speakers.values()) == 8  # no speaker in two splits
    # The same speaker split as prepare_plain's (speech_items + assign_splits, same seed).
    items = speech_items(plain_corpus.resolve())
    assign_splits(items, 0.2, 0.2, 3)
    for split, found in split_speakers.items():
        assert found == {item.fields["speaker"] for item in items if item.split == split}
    # Every utterance of a speaker is on its side.
    assert len(load_manifest(paths["train"])) == 4 * 3


def test_librispeech_layout_keeps_its_official_splits(tmp_path):
    root = write_corpus(tmp_path / "libri")
    paths = prepare_speech_splits(root, tmp_path / "speech", num_workers=1)
    assert speakers_of(paths["valid"]) == {"201", "202"}
    assert speakers_of(paths["test"]) == {"301", "302"}


def test_plain_triplets_reference_another_utterance_of_the_target(plain_corpus, tmp_path):
    paths = prepare_speech_splits(plain_corpus, tmp_path / "speech", valid_ratio=0.2,
                                  test_ratio=0.2, seed=3, num_workers=1)  # fmt: skip
    speech = load_manifest(paths["train"])
    maker = TripletMaker.from_manifests(paths["train"], max_sec=0.5, ref_max_sec=0.6)
    written = write_triplets(maker, tmp_path / "triplets", num_triplets=10, seed=1, progress=False)
    onthefly = OnTheFlyTripletDataset(maker, length=10, seed=2)
    drawn = [onthefly.maker.make(np.random.default_rng(i))[1] for i in range(10)]
    for meta in [*load_manifest(written).values(), *drawn]:
        assert meta["ref_id"] != meta["target_id"]
        assert speech[meta["ref_id"]]["speaker"] == meta["target_speaker"]
        assert speech[meta["target_id"]]["speaker"] == meta["target_speaker"]
        assert meta["interferer_speaker"] != meta["target_speaker"]


def tse_hparams(data_folder, prep_folder, **overrides):
    """The data keys of spex_plus_cpu.yaml, tiny sets."""
    hparams = {
        "data_folder": str(data_folder), "prep_folder": str(prep_folder), "skip_prep": False,
        "librispeech_splits": ["train-clean-100", "dev-clean", "test-clean"],
        "valid_ratio": 0.2, "test_ratio": 0.2, "split_seed": 3, "sample_rate": SR,
        "add_noise": False, "crop_sec": 0.5, "eval_crop_sec": 0.6, "train_mode": "onthefly",
        "triplet_maker": functools.partial(TripletMaker.from_manifests, ref_max_sec=0.5,
                                           snr_db_range=[5.0, 15.0]),
        "num_train_triplets": 4, "train_set_seed": 1, "num_valid_examples": 2,
        "num_test_examples": 2, "valid_set_seed": 2, "test_set_seed": 3, "prep_workers": 1,
        "seed": 0, "tir_curriculum_fraction": 0.0,
    }  # fmt: skip
    return {**hparams, **overrides}


@pytest.mark.parametrize("train_mode", ["onthefly", "fixed"])
def test_tse_data_from_a_plain_root(plain_corpus, tmp_path, train_mode):
    hparams = tse_hparams(plain_corpus, tmp_path / "prep", train_mode=train_mode)
    prepare_tse_data(hparams, progress=False)
    speakers = read_json(tmp_path / "prep" / "train_speakers.json")
    assert len(speakers) == 4 and all(s.startswith("spk_") for s in speakers)
    train, valid, test = tse_datasets(hparams, speakers)
    assert isinstance(train, OnTheFlyTripletDataset) == (train_mode == "onthefly")
    item = train[0]
    assert {"mixture", "reference", "target", "speaker_index"} <= set(item)
    assert 0 <= item["speaker_index"] < 4
    assert len(valid) == 2 and len(test) == 2
    train_speakers = set(speakers)
    for split in ("valid", "test"):
        entries = load_manifest(tmp_path / "prep" / f"triplets_{split}" / "manifest.json")
        assert all(e["target_speaker"] not in train_speakers for e in entries.values())


def test_train_mode_checks():
    with pytest.raises(ValueError, match="train_mode must be"):
        check_train_mode({"train_mode": "online", "tir_curriculum_fraction": 0})
    with pytest.raises(ValueError, match="needs train_mode: onthefly"):
        check_train_mode({"train_mode": "fixed", "tir_curriculum_fraction": 0.3})


# ---- TIR curriculum -------------------------------------------------------------------
def test_tir_curriculum_ranges():
    curriculum = TirCurriculum([5.0, 10.0], [0.0, 0.0], fraction=0.4)
    assert curriculum.range_at(0.0) == (5.0, 10.0)
    assert curriculum.range_at(0.2) == pytest.approx((2.5, 5.0))  # halfway through
    assert curriculum.range_at(0.4) == (0.0, 0.0)
    assert curriculum.range_at(1.0) == (0.0, 0.0)
    widening = TirCurriculum([5.0, 10.0], [-5.0, 5.0], fraction=1.0)
    assert widening.range_at(0.5) == pytest.approx((0.0, 7.5))
    off = TirCurriculum([5.0, 10.0], [-5.0, 5.0], fraction=0.0)
    assert not off.enabled and off.range_at(0.0) == (-5.0, 5.0)
    with pytest.raises(ValueError, match="tir_curriculum_fraction"):
        TirCurriculum([5, 10], [0, 0], fraction=1.5)
    with pytest.raises(ValueError, match="tir_curriculum_start"):
        TirCurriculum([10, 5], [0, 0], fraction=0.5)


class FakeCounter:
    def __init__(self, progress):
        self.value = progress

    def progress(self, step_in_epoch, batches_per_epoch):
        return self.value


def test_tir_curriculum_is_applied_to_the_onthefly_set(plain_corpus, tmp_path):
    paths = prepare_speech_splits(plain_corpus, tmp_path / "speech", valid_ratio=0.2,
                                  test_ratio=0.2, seed=3, num_workers=1)  # fmt: skip
    maker = TripletMaker.from_manifests(paths["train"], max_sec=0.5, ref_max_sec=0.5)
    dataset = OnTheFlyTripletDataset(maker, length=4)
    hparams = SimpleNamespace(tir_curriculum_start=[5.0, 10.0], tir_db_range=[0.0, 0.0],
                              tir_curriculum_fraction=0.5, train_batches_per_epoch=4)  # fmt: skip
    brain = SimpleNamespace(hparams=hparams, onthefly_dataset=dataset, step=0)
    for progress, expected in ((0.0, (5.0, 10.0)), (0.25, (2.5, 5.0)), (0.9, (0.0, 0.0))):
        hparams.epoch_counter = FakeCounter(progress)
        assert SpeakerExtractionBrain.apply_tir_curriculum(brain) == pytest.approx(expected)
        tirs = [dataset.maker.make(np.random.default_rng(i))[1]["tir_db"] for i in range(5)]
        assert all(expected[0] <= tir <= expected[1] for tir in tirs), tirs
    brain.onthefly_dataset = None  # a fixed training set cannot follow a curriculum
    with pytest.raises(ValueError, match="onthefly"):
        SpeakerExtractionBrain.apply_tir_curriculum(brain)
    hparams.tir_curriculum_fraction = 0.0
    assert SpeakerExtractionBrain.apply_tir_curriculum(brain) is None


# ---- the recipe's Brain on a tiny model --------------------------------------------------
def tiny_brain(tmp_path, **overrides):
    values = {
        **TINY, "num_speakers": 3, "output_folder": str(tmp_path / "run"),
        "data_folder": str(tmp_path), "metric_workers": 0, "use_tensorboard": False,
        "num_examples_to_save": 0, "num_worst_examples_to_save": 0, **overrides,
    }  # fmt: skip
    hparams = load_hparams(CPU_YAML, values)
    return SpexPlusBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts={"device": "cpu"},
        checkpointer=hparams["checkpointer"],
    )


def voices(seed, seconds, count):
    """``count`` random voices (float32 tensors)."""
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(voiced(rng, seconds, -25).astype(np.float32)) for _ in range(count)]


def test_speaker_accuracy_is_logged_with_the_train_losses(tmp_path):
    assert float(speaker_accuracy(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), [0, 0])) == 0.5
    assert math.isnan(float(speaker_accuracy(None, [0])))
    assert math.isnan(float(speaker_accuracy(torch.zeros(1, 2), [-1])))
    brain = tiny_brain(tmp_path)
    mixtures, references = voices(0, 0.4, 3), voices(1, 0.3, 3)
    items = [
        {"id": f"u{i}", "mixture": mixtures[i], "reference": references[i],
         "target": mixtures[(i + 1) % 3], "speaker_index": i}
        for i in range(3)
    ]  # fmt: skip
    batch = PaddedBatch(items)
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    outputs = brain.compute_forward(batch, sb.Stage.TRAIN)
    brain.compute_objectives(outputs, batch, sb.Stage.TRAIN)
    expected = float((outputs.speaker_logits.argmax(-1) == torch.arange(3)).float().mean())
    assert brain.train_components.means()["speaker_acc"] == pytest.approx(expected)
    brain.on_stage_end(sb.Stage.TRAIN, 1.0, 1)
    assert brain.train_stats["speaker_acc"] == pytest.approx(expected)  # -> train_log, TensorBoard


def write_custom_dir(folder):
    """Three triplets of three different voices (mix/, refs/, targets/)."""
    rng = np.random.default_rng(4)
    for uid, seconds in (("a", 0.5), ("b", 0.45), ("c", 0.55)):
        target, interferer = voiced(rng, seconds, -26), voiced(rng, seconds, -26)
        for sub, suffix, samples in (("mix", "mixed", target + interferer),
                                     ("refs", "ref", voiced(rng, 0.4, -26)),
                                     ("targets", "target", target)):  # fmt: skip
            (folder / sub).mkdir(parents=True, exist_ok=True)
            sf.write(str(folder / sub / f"{uid}-{suffix}.wav"), samples, SR, subtype="FLOAT")
    return folder


def test_zero_and_other_reference_checks_on_a_tiny_model(tmp_path):
    brain = tiny_brain(tmp_path)
    folder = write_custom_dir(tmp_path / "custom")
    keys = {"mix": "mixture", "ref": "reference"}
    dataset = CustomDirDataset(folder, sr=SR, keys=keys)
    brain.evaluate(dataset, max_key="si_snr", test_loader_kwargs={"batch_size": 1})
    summary = brain.test_summary
    model = brain.modules.model.eval()
    items = {item["id"]: item for item in dataset}
    ids = sorted(items)
    expected = {"normal": [], "zero": [], "other": [], "mixture": []}
    with torch.no_grad():
        for i, uid in enumerate(ids):
            mix, ref, tgt = (items[uid][k][None] for k in ("mixture", "reference", "target"))
            other = items[ids[(i + 1) % 3]]["reference"][None]  # no speakers: the next triplet
            for name, reference in (("normal", ref), ("zero", torch.zeros_like(ref)),
                                    ("other", other)):  # fmt: skip
                estimate = model(mix, reference).estimates[0, 0].double().numpy()
                expected[name].append(si_snr(estimate, tgt[0].double().numpy()))
            expected["mixture"].append(si_snr(mix[0].double().numpy(), tgt[0].double().numpy()))
    assert summary["num_utterances"] == 3
    for name, key in (("normal", "si_snr"), ("zero", "si_snr_zero_ref"),
                      ("other", "si_snr_other_ref")):  # fmt: skip
        assert summary[f"{key}_estimate"] == pytest.approx(np.mean(expected[name]), abs=1e-3)
        assert summary[f"{key}_mixture"] == pytest.approx(np.mean(expected["mixture"]), abs=1e-3)
        delta = np.mean(expected[name]) - np.mean(expected["mixture"])
        assert summary[f"{key}_delta"] == pytest.approx(delta, abs=1e-3)
    # The model reads its reference: another reference changes the output.
    assert expected["zero"] != pytest.approx(expected["normal"], abs=1e-6)
    table = (tmp_path / "run" / "test_report" / "results_table.md").read_text()
    assert "SI-SDR, zero reference" in table and "other speaker's reference" in table


def test_other_references_pair_different_speakers():
    data = {f"u{i}": {"target_speaker": s, "ref": float(i)} for i, s in enumerate("AABC")}
    dataset = DynamicItemDataset(data, output_keys=["id", "ref"])
    partner = OtherReferences(dataset).partner
    assert partner == {"u0": 2, "u1": 2, "u2": 3, "u3": 0}
    lonely = DynamicItemDataset({"x": {"target_speaker": "A"}}, output_keys=["id"])
    assert OtherReferences(lonely).batch(["x"], "cpu") is None  # scored NaN


# ---- learning-rate policy and speaker pretraining ------------------------------------------
def test_lr_policy_selects_the_schedule(tmp_path):
    brain = tiny_brain(tmp_path)
    brain.hparams.lr_policy = "plateau"
    assert brain.step_lr_schedule() is None
    brain.hparams.lr_policy = "warmup_cosine"
    assert isinstance(brain.step_lr_schedule(), WarmupCosineSchedule)
    brain.hparams.lr_policy = "cosine"
    with pytest.raises(ValueError, match="lr_policy must be one of"):
        brain.on_fit_start()


def speaker_manifest(folder, num_speakers=3, utterances=3):
    """Speech manifest of clearly different voices (low to high pitch)."""
    from custom_modules.audio.files import atomic_write_json

    rng = np.random.default_rng(5)
    entries = {}
    for s in range(num_speakers):
        for u in range(utterances):
            t = np.arange(int(0.6 * SR)) / SR
            f0 = 100.0 * (1.8**s) * (1 + 0.03 * rng.normal())
            audio = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
            audio = (0.05 * audio * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
            path = folder / f"s{s}_{u}.wav"
            sf.write(str(path), audio, SR)
            entries[f"s{s}_{u}"] = {"path": str(path), "duration": 0.6, "sr": SR,
                                    "speaker": f"S{s}"}  # fmt: skip
    atomic_write_json(folder / "speech.json", entries)
    return folder / "speech.json"


def test_speaker_pretraining_trains_the_speaker_branch_only(tmp_path):
    brain = tiny_brain(tmp_path)
    model = brain.modules.model
    crops = SpeakerCrops(speaker_manifest(tmp_path), ["S0", "S1", "S2"], crop_sec=0.4)
    signals, lengths, labels = crops.batch(np.random.default_rng(9), 12)

    def held_out_ce():
        model.eval()
        with torch.no_grad():
            ce = torch.nn.functional.cross_entropy(
                model.classify(model.embed(signals, lengths)), labels
            )
        return float(ce)

    before_ce = held_out_ce()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    summary = pretrain_speaker_branch(model, crops, steps=30, batch_size=6, lr=3e-3, seed=1)
    assert summary["steps"] == 30 and summary["accuracy"] > 0.5, summary
    assert held_out_ce() < before_ce
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert any(n.startswith("speaker_encoder.") for n in changed)
    assert any(n.startswith("speaker_head.") for n in changed)
    assert not any(n.startswith(("extractor.", "decoders.")) for n in changed), changed
    assert all(p.grad is None for p in model.parameters())  # nothing leaks into joint training


def test_speaker_pretraining_runs_on_fresh_runs_only(tmp_path, monkeypatch):
    brain = tiny_brain(tmp_path, speaker_pretrain_steps=7)
    calls = []
    monkeypatch.setattr(brain, "pretrain_speaker_branch", calls.append)
    brain.on_fit_start()
    assert calls == [7]
    brain.optimizer_step = 12  # as after resuming from a checkpoint
    brain.on_fit_start()
    assert calls == [7]
    off = tiny_brain(tmp_path / "off", speaker_pretrain_steps=0)
    monkeypatch.setattr(off, "pretrain_speaker_branch", calls.append)
    off.on_fit_start()
    assert calls == [7]
