"""Pretraining of the SpEx+ speaker branch alone: speaker classification of clean utterances.

Before joint training, the reference path (twin speech encoder, speaker
encoder, linear speaker head) can be trained for ``steps`` Adam steps on the
cross-entropy of the training speakers, from crops of their own utterances,
drawn exactly like references (:class:`SpeakerCrops`: speaker uniform among
the classes, one of its utterances, a random ``crop_sec`` segment,
loudness-normalised to ``loudness_lufs``). The extractor and decoders are not
touched; joint training then starts from a speaker encoder that already
separates the training speakers. :class:`custom_modules.training.tse.SpeakerExtractionBrain`
runs it once at the start of a fresh run (``speaker_pretrain_steps > 0``).

Everything random comes from ``seed``: every DDP rank computes the same
updates, so their copies of the model stay equal.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyloudnorm
import torch
import torch.nn.functional as F

from custom_modules.audio.files import read_audio
from custom_modules.audio.loudness import normalize_loudness
from custom_modules.data.triplets import SpeakerPool

logger = logging.getLogger(__name__)

# Parts of SpexPlus trained by the pretraining (the reference path and the head).
SPEAKER_BRANCH = ("encoder", "speaker_encoder", "speaker_head")


def unwrapped(model):
    """The model inside a DDP / DataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def speaker_branch_parameters(model) -> list:
    """Parameters of the twin encoder, the speaker encoder and the speaker head."""
    model = unwrapped(model)
    if getattr(model, "speaker_head", None) is None:
        raise ValueError("speaker pretraining needs a speaker head (num_speakers > 0)")
    return [p for name in SPEAKER_BRANCH for p in getattr(model, name).parameters()]


class SpeakerCrops:
    """Batches of labelled utterance crops of the training speakers.

    Arguments
    ---------
    speech_manifest : str or Path
        Speech manifest with ``speaker`` fields (the training split).
    speakers : list of str
        The classes of the speaker head, in order; utterances of other
        speakers are not used.
    sr : int
        Sample rate of the files.
    crop_sec : float
        Longest crop (whole utterance when shorter), as ``ref_crop_sec``.
    loudness_lufs : float
        Level of every crop.
    data_root : str, optional
        Resolves ``{data_root}`` in the manifest.

    Example
    -------
    >>> import json, soundfile as sf
    >>> folder, rng = getfixture("tmp_path"), np.random.default_rng(0)
    >>> entries = {}
    >>> for name, speaker in (("a1", "A"), ("a2", "A"), ("b1", "B")):
    ...     sf.write(str(folder / f"{name}.wav"), rng.normal(0, 0.05, 16000), 16000)
    ...     entries[name] = {"path": str(folder / f"{name}.wav"), "duration": 1.0,
    ...                      "sr": 16000, "speaker": speaker}
    >>> _ = (folder / "speech.json").write_text(json.dumps(entries))
    >>> crops = SpeakerCrops(folder / "speech.json", ["A", "B"], crop_sec=0.5)
    >>> signals, lengths, labels = crops.batch(np.random.default_rng(1), 3)
    >>> tuple(signals.shape), lengths.tolist(), sorted(set(labels.tolist())) <= [0, 1]
    ((3, 8000), [1.0, 1.0, 1.0], True)
    """

    def __init__(self, speech_manifest, speakers, sr=16000, crop_sec=3.0, loudness_lufs=-20.0,
                 data_root=None):  # fmt: skip
        pool = SpeakerPool.from_manifest(speech_manifest, data_root=data_root, sr=sr)
        self.sr = int(sr)
        self.classes = [
            (label, pool.utterances[speaker])
            for label, speaker in enumerate(speakers)
            if pool.utterances.get(speaker)
        ]
        if not self.classes:
            raise ValueError(f"{speech_manifest}: none of the {len(speakers)} speakers has speech")
        self.crop = max(1, int(round(float(crop_sec) * self.sr)))
        self.loudness_lufs = float(loudness_lufs)
        self.meter = pyloudnorm.Meter(self.sr)

    def _crop(self, rng):
        """``(label, float32 crop)``; quiet crops (no measurable loudness) are drawn again."""
        for _ in range(10):
            label, utterances = self.classes[int(rng.integers(len(self.classes)))]
            utt = utterances[int(rng.integers(len(utterances)))]
            length = min(utt.frames, self.crop)
            offset = int(rng.integers(0, utt.frames - length + 1))
            samples, _ = read_audio(utt.path, start=offset, stop=offset + length,
                                    expected_sr=self.sr)  # fmt: skip
            samples, gain = normalize_loudness(
                samples.astype(np.float64), self.sr, self.loudness_lufs, self.meter
            )
            if gain is not None:
                return label, samples.astype(np.float32)
        raise RuntimeError("10 crops in a row were too quiet to measure their loudness")

    def batch(self, rng, batch_size):
        """``(signals (batch, samples), relative lengths (batch,), labels (batch,))``."""
        drawn = [self._crop(rng) for _ in range(int(batch_size))]
        longest = max(crop.size for _, crop in drawn)
        signals = torch.zeros(len(drawn), longest)
        for row, (_, crop) in enumerate(drawn):
            signals[row, : crop.size] = torch.from_numpy(crop)
        lengths = torch.tensor([crop.size / longest for _, crop in drawn])
        labels = torch.tensor([label for label, _ in drawn], dtype=torch.long)
        return signals, lengths, labels


def pretrain_speaker_branch(model, crops, steps, batch_size, lr, seed=0, device="cpu",
                            max_grad_norm=5.0, on_step=None) -> dict:  # fmt: skip
    """Train the speaker branch of ``model`` alone on speaker classification.

    Arguments
    ---------
    model : SpexPlus
        With a speaker head (possibly wrapped by DDP).
    crops : SpeakerCrops
        The training speakers' utterances.
    steps, batch_size : int
        Adam steps and crops per step.
    lr : float
        Adam learning rate.
    seed : int
        Seed of the crops.
    device : str or torch.device
        Where the model is.
    max_grad_norm : float
        Gradient-norm clipping (0: none).
    on_step : callable, optional
        ``on_step(step, ce, accuracy)`` after every step (e.g. TensorBoard).

    Returns
    -------
    dict
        ``steps``, ``seconds``, and the mean ``ce`` / ``accuracy`` over the
        last tenth of the steps (at least one).
    """
    model_ = unwrapped(model)
    params = speaker_branch_parameters(model_)
    optimizer = torch.optim.Adam(params, lr=float(lr))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 104729]))
    was_training = model_.training
    model_.train()
    history = []
    start = time.monotonic()
    for step in range(1, int(steps) + 1):
        signals, lengths, labels = crops.batch(rng, batch_size)
        signals, lengths, labels = signals.to(device), lengths.to(device), labels.to(device)
        logits = model_.classify(model_.embed(signals, lengths))
        ce = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        ce.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        accuracy = float((logits.detach().argmax(dim=-1) == labels).float().mean())
        history.append((float(ce.detach()), accuracy))
        if on_step is not None:
            on_step(step, history[-1][0], accuracy)
    model_.zero_grad(set_to_none=True)  # nothing leaks into the joint training's first step
    model_.train(was_training)
    tail = history[-max(1, len(history) // 10) :] or [(float("nan"), float("nan"))]
    summary = {
        "steps": int(steps),
        "seconds": time.monotonic() - start,
        "ce": float(np.mean([ce for ce, _ in tail])),
        "accuracy": float(np.mean([acc for _, acc in tail])),
    }
    logger.info(
        "speaker pretraining: %d steps in %.1f s; last %d steps: CE %.3f, accuracy %.3f",
        summary["steps"], summary["seconds"], len(tail), summary["ce"], summary["accuracy"],
    )  # fmt: skip
    return summary
