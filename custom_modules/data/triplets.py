"""Target-speaker-extraction triplets: mixture, reference (enrollment) and target.

Shared by the triplet writer and the on-the-fly dataset of
``custom_modules.data.librispeech_mixtures`` so that both draw exactly the same way.

Recipe of one triplet (:meth:`TripletMaker.make`)
-------------------------------------------------
1. Speakers: the target speaker is drawn uniformly among the speakers with at
   least two utterances (the others can only be interferers; see
   :class:`SpeakerPool`), then two *different* utterances of it (target and
   reference), then an interferer speaker uniformly among the other speakers
   and one of its utterances. Uniform over speakers keeps the classes of the
   speaker-classification head balanced.
2. Segments (length policy):

   * ``"shortest"``: ``n = min(len_target, len_interferer, max_sec)``; a
     random ``n``-sample segment of each (offsets recorded);
   * ``"longest"``: each source is cut to ``max_sec`` at a random offset
     when longer; the shorter one is zero-padded at its end to the longer
     one's length.

   The reference is a random ``ref_max_sec`` segment of its utterance (whole
   when shorter or ``ref_max_sec`` is None).
3. Levels: each source (target, interferer, reference, noise) is
   loudness-normalised on its own segment to ``loudness_lufs`` (ITU-R
   BS.1770 integrated loudness, ``pyloudnorm``). The interferer is then
   attenuated by the target-to-interferer ratio ``tir ~ U(tir_db_range)``:
   it sits at ``loudness_lufs - tir``. Noise (optional) sits at
   ``loudness_lufs - snr``, ``snr ~ U(snr_db_range)``: TIR and SNR are
   loudness differences (LU) to the target.
4. ``mix = target + interferer (+ noise)``.
5. Peak policy (``peak_limit``, for 16-bit files): if any sample of the mix
   or of a source exceeds ``peak_limit`` (0.99) in magnitude, mix, target,
   interferer and noise are scaled *together* by ``peak_limit / peak`` (the
   mix stays their exact sum); ``clip_gain_db`` (<= 0) records it, and
   ``target_lufs`` / ``interferer_lufs`` are the final levels. The
   reference is scaled alone by the same rule (``ref_clip_gain_db``). At
   -20 LUFS and 0 dB TIR about half the mixes of real LibriSpeech speech
   need it (by up to ~6 dB), so float output (``peak_limit=None``, the
   writer's default) keeps every source at exactly ``loudness_lufs``
   instead; mix samples may then exceed 1.

Loudness of short signals: the BS.1770 meter needs one 400 ms block. A
signal shorter than that is measured on a cyclic repetition of itself up to
one block (its loudness if it were looped), see
:func:`custom_modules.audio.loudness.integrated_loudness`. A source too quiet to
measure (every block under the -70 LUFS absolute gate) makes the draw start
again; after ``max_attempts`` such draws a ``RuntimeError`` names the files.

Everything is computed in float64. Randomness comes only from the
``numpy.random.Generator`` passed to :meth:`TripletMaker.make`.

The triplet options (level, TIR and SNR ranges, length policy, longest
segments) live in one place: a recipe YAML builds
:meth:`TripletMaker.from_manifests` as a partial constructor (``triplet_maker``)
and its data pipeline adds each split's manifests and longest mixture; the
writer (:func:`custom_modules.data.triplet_writer.write_triplets`) and the
on-the-fly dataset (:class:`custom_modules.data.datasets.OnTheFlyTripletDataset`)
take the built maker.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
import pyloudnorm

from custom_modules.audio.files import load_manifest, read_audio
from custom_modules.audio.loudness import ABSOLUTE_GATE_LUFS, normalize_loudness
from custom_modules.data.ranges import check_range, draw_uniform

logger = logging.getLogger(__name__)

LENGTH_POLICIES = ("shortest", "longest")
CLIP_PEAK = 0.99


@dataclass
class Utterance:
    """One file of a pool: id, resolved path, frame count (from the manifest) and speaker."""

    id: str
    path: str
    frames: int
    speaker: str | None = None


@dataclass
class SpeakerPool:
    """Utterances grouped by speaker, from a speech manifest.

    ``target_speakers`` (sorted) have at least two utterances and can be
    targets (a reference must be a *different* utterance); speakers with a
    single utterance are kept as interferers only and listed in
    ``single_utterance_speakers``.
    """

    utterances: dict = field(default_factory=dict)  # speaker -> list[Utterance]
    speakers: list = field(default_factory=list)  # all, sorted
    target_speakers: list = field(default_factory=list)
    single_utterance_speakers: list = field(default_factory=list)
    digest: str = ""

    @classmethod
    def from_manifest(cls, manifest_path, data_root=None, sr=16000) -> SpeakerPool:
        """Pool of a speech manifest (entries need ``path``, ``duration``, ``speaker``).

        Raises
        ------
        ValueError
            Naming the manifest when an entry lacks a field, has another
            sample rate or an unresolved path, when it has fewer than two
            speakers, or when no speaker has two utterances.
        """
        utterances = _manifest_utterances(manifest_path, data_root, sr, need_speaker=True)
        by_speaker = {}
        for utt in utterances:
            by_speaker.setdefault(utt.speaker, []).append(utt)
        speakers = sorted(by_speaker)
        targets = [s for s in speakers if len(by_speaker[s]) >= 2]
        singles = [s for s in speakers if len(by_speaker[s]) < 2]
        if len(speakers) < 2:
            raise ValueError(
                f"{manifest_path}: {len(speakers)} speaker(s); a triplet needs a target "
                "and a different interfering speaker"
            )
        if not targets:
            raise ValueError(
                f"{manifest_path}: no speaker has two utterances, so no reference can "
                "differ from its target utterance"
            )
        if singles:
            logger.warning(
                "%s: %d speaker(s) with a single utterance are used as interferers only: %s",
                manifest_path,
                len(singles),
                ", ".join(singles[:10]) + (" ..." if len(singles) > 10 else ""),
            )
        return cls(by_speaker, speakers, targets, singles, _utterances_digest(utterances))


def _manifest_utterances(manifest_path, data_root, sr, need_speaker) -> list:
    """Checked, id-sorted :class:`Utterance` list of a manifest."""
    manifest = load_manifest(manifest_path, data_root=data_root)
    if not manifest:
        raise ValueError(f"{manifest_path}: empty manifest")
    utterances = []
    for key in sorted(manifest):
        entry = manifest[key]
        fields = ("path", "duration", "speaker") if need_speaker else ("path", "duration")
        missing = [name for name in fields if entry.get(name) is None]
        if missing:
            raise ValueError(f"{manifest_path}: entry {key!r} has no {', '.join(missing)}")
        if "{" in entry["path"]:
            raise ValueError(
                f"{manifest_path}: entry {key!r} path {entry['path']!r} has an unresolved "
                "placeholder; pass data_root="
            )
        if int(entry.get("sr", sr)) != sr:
            raise ValueError(
                f"{manifest_path}: entry {key!r} is at {entry['sr']} Hz, expected {sr} Hz "
                "(prepare the manifest with sample_rate={sr})"
            )
        frames = int(np.floor(float(entry["duration"]) * sr + 0.5))
        if frames <= 0:
            raise ValueError(f"{manifest_path}: entry {key!r} has duration {entry['duration']}")
        speaker = None if entry.get("speaker") is None else str(entry["speaker"])
        utterances.append(Utterance(key, entry["path"], frames, speaker))
    return utterances


def _utterances_digest(utterances) -> str:
    """SHA-1 of ids, paths, lengths and speakers (identifies a pool for skip-if-done)."""
    digest = hashlib.sha1()
    for utt in utterances:
        digest.update(f"{utt.id}\t{utt.path}\t{utt.frames}\t{utt.speaker}\n".encode())
    return digest.hexdigest()


def noise_pool(manifest_path, data_root=None, sr=16000) -> tuple:
    """``(utterances, digest)`` of a noise manifest (entries need ``path`` and ``duration``)."""
    utterances = _manifest_utterances(manifest_path, data_root, sr, need_speaker=False)
    return utterances, _utterances_digest(utterances)


def _max_frames(seconds, sr, name):
    if seconds is None:
        return None
    frames = int(round(float(seconds) * sr))
    if frames <= 0:
        raise ValueError(f"{name}={seconds} gives no samples at {sr} Hz")
    return frames


class TripletMaker:
    """Draws (mix, reference, target, interferer) triplets; see the module docstring.

    Arguments
    ---------
    pool : SpeakerPool
        Speech utterances by speaker.
    sr : int
        Sample rate of every file.
    loudness_lufs : float
        Level of every source before the TIR/SNR gains.
    tir_db_range : (float, float)
        Target-to-interferer loudness ratio range, dB.
    length_policy : str
        ``"shortest"`` or ``"longest"``.
    max_sec, ref_max_sec : float or None
        Longest segment taken of a target/interferer, of a reference.
    noises : list of Utterance, optional
        Noise files; noise is added to every mix (needs ``snr_db_range``).
    snr_db_range : (float, float), optional
        Target-to-noise loudness ratio range, dB; not used without ``noises``
        (a recipe's maker holds it whether or not its data has noise).
    max_attempts : int
        Draws allowed per triplet when sources are too quiet to measure.
    peak_limit : float or None
        Peak policy of the module docstring; ``None``: no scaling.

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
    >>> maker = TripletMaker(SpeakerPool.from_manifest(folder / "speech.json"))
    >>> signals, meta = maker.make(np.random.default_rng(1))
    >>> signals["mix"].shape, meta["target_speaker"], meta["interferer_speaker"]
    ((16000,), 'A', 'B')

    A recipe builds it from manifests (its YAML's ``triplet_maker``); without a
    noise manifest the SNR range is not used:

    >>> maker = TripletMaker.from_manifests(folder / "speech.json", max_sec=0.5,
    ...                                     snr_db_range=(5, 15))
    >>> maker.make(np.random.default_rng(1))[0]["mix"].shape, maker.snr_db_range
    ((8000,), None)
    >>> maker.describe()["speech_sha1"] == maker.pool.digest
    True
    """

    def __init__(
        self,
        pool,
        sr=16000,
        loudness_lufs=-20.0,
        tir_db_range=(0.0, 0.0),
        length_policy="shortest",
        max_sec=None,
        ref_max_sec=None,
        noises=None,
        snr_db_range=None,
        max_attempts=10,
        peak_limit=None,
    ):
        if length_policy not in LENGTH_POLICIES:
            raise ValueError(
                f"length_policy must be one of {LENGTH_POLICIES}, got {length_policy!r}"
            )
        if not np.isfinite(float(loudness_lufs)) or float(loudness_lufs) >= 0:
            raise ValueError(f"loudness_lufs must be a finite negative level, got {loudness_lufs}")
        if noises is not None and snr_db_range is None:
            raise ValueError("noise needs both a noise manifest and snr_db_range")
        if noises is not None and not noises:
            raise ValueError("the noise manifest has no files")
        if snr_db_range is not None:
            snr_db_range = check_range(snr_db_range, "snr_db_range")
        self.pool = pool
        self.sr = int(sr)
        self.loudness_lufs = float(loudness_lufs)
        self.tir_db_range = check_range(tir_db_range, "tir_db_range")
        self.snr_db_range = None if noises is None else snr_db_range
        self.length_policy = length_policy
        self.max_sec, self.ref_max_sec = max_sec, ref_max_sec
        self.max_frames = _max_frames(max_sec, self.sr, "max_sec")
        self.ref_max_frames = _max_frames(ref_max_sec, self.sr, "ref_max_sec")
        self.noises = noises
        self.max_attempts = int(max_attempts)
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.peak_limit = _checked_peak_limit(peak_limit)
        self.meter = pyloudnorm.Meter(self.sr)
        # Where the pool and the noises came from (set by from_manifests; the writer records it).
        self.speech_manifest = self.noise_manifest = self.noise_digest = None

    @classmethod
    def from_manifests(cls, speech_manifest, noise_manifest=None, data_root=None, sr=16000,
                       **options) -> TripletMaker:  # fmt: skip
        """The maker of a speech manifest (and a noise manifest): a recipe YAML's partial.

        Arguments
        ---------
        speech_manifest : str or Path
            Entries with ``path``, ``duration`` and ``speaker``, at ``sr``.
        noise_manifest : str or Path, optional
            Noise files (entries with ``path`` and ``duration``); without it
            no noise is added (``snr_db_range`` is then not used).
        data_root : str, optional
            Resolves ``{data_root}`` (default: recorded by data preparation).
        sr : int
            Sample rate of the manifests.
        **options
            The other arguments of :class:`TripletMaker` (``loudness_lufs``,
            ``tir_db_range``, ``length_policy``, ``max_sec``, ``ref_max_sec``,
            ``snr_db_range``, ``max_attempts``, ``peak_limit``).

        See the class example.
        """
        pool = SpeakerPool.from_manifest(speech_manifest, data_root=data_root, sr=sr)
        noises, noise_digest = None, None
        if noise_manifest is not None:
            noises, noise_digest = noise_pool(noise_manifest, data_root=data_root, sr=sr)
        maker = cls(pool, sr=sr, noises=noises, **options)
        maker.speech_manifest = str(speech_manifest)
        if noise_manifest is not None:
            maker.noise_manifest, maker.noise_digest = str(noise_manifest), noise_digest
        return maker

    def with_peak_limit(self, peak_limit) -> TripletMaker:
        """A copy drawing the same triplets with another peak policy (module docstring)."""
        other = copy.copy(self)
        other.peak_limit = _checked_peak_limit(peak_limit)
        return other

    def describe(self) -> dict:
        """The options and the files of the maker, JSON-ready (a written set records them)."""
        return {
            "sr": self.sr,
            "loudness_lufs": self.loudness_lufs,
            "tir_db_range": list(self.tir_db_range),
            "length_policy": self.length_policy,
            "max_sec": self.max_sec,
            "ref_max_sec": self.ref_max_sec,
            "snr_db_range": None if self.snr_db_range is None else list(self.snr_db_range),
            "speech_manifest": self.speech_manifest,
            "speech_sha1": self.pool.digest,
            "noise_manifest": self.noise_manifest,
            "noise_sha1": self.noise_digest,
            "num_speakers": len(self.pool.speakers),
            "single_utterance_speakers": self.pool.single_utterance_speakers,
        }

    def set_tir_db_range(self, tir_db_range) -> None:
        """Draw the target-to-interferer ratio from ``tir_db_range`` (dB) from now on."""
        self.tir_db_range = check_range(tir_db_range, "tir_db_range")

    # -- drawing ----------------------------------------------------------

    def _draw_utterances(self, rng):
        """(target, reference, interferer) utterances."""
        pool = self.pool
        target_speaker = pool.target_speakers[int(rng.integers(len(pool.target_speakers)))]
        own = pool.utterances[target_speaker]
        target_index, ref_index = rng.choice(len(own), size=2, replace=False)
        others = len(pool.speakers) - 1
        position = int(rng.integers(others))
        # Skip the target speaker in the sorted list of all speakers.
        if position >= pool.speakers.index(target_speaker):
            position += 1
        interferer_utts = pool.utterances[pool.speakers[position]]
        interferer = interferer_utts[int(rng.integers(len(interferer_utts)))]
        return own[int(target_index)], own[int(ref_index)], interferer

    def _read(self, utt, offset, length):
        """``length`` samples of ``utt`` from ``offset`` (fewer if the file is shorter)."""
        samples, _ = read_audio(utt.path, start=offset, stop=offset + length, expected_sr=self.sr)
        return samples.astype(np.float64)

    @staticmethod
    def _offset(rng, frames, length):
        return int(rng.integers(0, frames - length + 1)) if frames > length else 0

    def _cap(self, frames, cap):
        return frames if cap is None else min(frames, cap)

    def _sources(self, rng, target, interferer):
        """Target and interferer segments (float64, same length) and their offsets."""
        if self.length_policy == "shortest":
            length = self._cap(min(target.frames, interferer.frames), self.max_frames)
            t_off, i_off = (
                self._offset(rng, target.frames, length),
                self._offset(rng, interferer.frames, length),
            )
            t_sig, i_sig = self._read(target, t_off, length), self._read(interferer, i_off, length)
            # A manifest duration can be a sample off: cut both to what was read.
            length = min(t_sig.size, i_sig.size)
            return t_sig[:length], i_sig[:length], t_off, i_off
        t_len = self._cap(target.frames, self.max_frames)
        i_len = self._cap(interferer.frames, self.max_frames)
        t_off, i_off = (
            self._offset(rng, target.frames, t_len),
            self._offset(rng, interferer.frames, i_len),
        )
        return self._read(target, t_off, t_len), self._read(interferer, i_off, i_len), t_off, i_off

    def _noise(self, rng, length):
        """A noise segment of ``length`` samples (looped when the file is shorter)."""
        noise = self.noises[int(rng.integers(len(self.noises)))]
        offset = self._offset(rng, noise.frames, length)
        samples = self._read(noise, offset, length)
        if samples.size < length:
            samples = np.resize(samples, length)  # repeats the file cyclically
        return samples, noise, offset

    def make(self, rng, want_interferer=True):
        """Draw one triplet.

        Arguments
        ---------
        rng : numpy.random.Generator
            The only source of randomness.
        want_interferer : bool
            Return the interferer (as in the mix) too.

        Returns
        -------
        (dict, dict)
            Signals ``{"mix", "ref", "target"[, "interferer"][, "noise"]}``
            (float64) and JSON-ready metadata (utterance ids, files, offsets
            in samples, gains in dB, final loudness in LUFS, TIR, SNR).

        Raises
        ------
        RuntimeError
            When ``max_attempts`` draws in a row had a source too quiet to measure.
        """
        problems = []
        for attempt in range(1, self.max_attempts + 1):
            result = self._try_make(rng, problems)
            if result is not None:
                signals, meta = result
                meta["attempts"] = attempt
                if not want_interferer:
                    signals.pop("interferer")
                return signals, meta
        raise RuntimeError(
            f"TripletMaker: {self.max_attempts} draws in a row had a source too quiet to "
            f"measure its loudness (below {ABSOLUTE_GATE_LUFS} LUFS): {'; '.join(problems[:5])}"
        )

    def _try_make(self, rng, problems):
        target, ref, interferer = self._draw_utterances(rng)
        t_sig, i_sig, t_off, i_off = self._sources(rng, target, interferer)
        ref_len = self._cap(ref.frames, self.ref_max_frames)
        ref_off = self._offset(rng, ref.frames, ref_len)
        r_sig = self._read(ref, ref_off, ref_len)
        tir_db = draw_uniform(rng, self.tir_db_range, "tir_db_range")
        level = self.loudness_lufs
        t_sig, t_gain = normalize_loudness(t_sig, self.sr, level, self.meter)
        i_sig, i_gain = normalize_loudness(i_sig, self.sr, level - tir_db, self.meter)
        r_sig, r_gain = normalize_loudness(r_sig, self.sr, level, self.meter)
        for utt, gain in ((target, t_gain), (interferer, i_gain), (ref, r_gain)):
            if gain is None:
                problems.append(f"{utt.path} (segment)")
                return None
        t_len, i_len = t_sig.size, i_sig.size
        length = max(t_len, i_len)
        t_sig = np.pad(t_sig, (0, length - t_len))
        i_sig = np.pad(i_sig, (0, length - i_len))
        meta = {
            "target_speaker": target.speaker,
            "interferer_speaker": interferer.speaker,
            "target_id": target.id,
            "target_file": target.path,
            "target_offset": t_off,
            "target_length": t_len,
            "target_gain_db": t_gain,
            "interferer_id": interferer.id,
            "interferer_file": interferer.path,
            "interferer_offset": i_off,
            "interferer_length": i_len,
            "interferer_gain_db": i_gain,
            "ref_id": ref.id,
            "ref_file": ref.path,
            "ref_offset": ref_off,
            "ref_length": int(r_sig.size),
            "ref_gain_db": r_gain,
            "tir_db": tir_db,
        }
        signals = {"target": t_sig, "interferer": i_sig}
        if self.noises is not None:
            snr_db = draw_uniform(rng, self.snr_db_range, "snr_db_range")
            n_sig, noise, n_off = self._noise(rng, length)
            n_sig, n_gain = normalize_loudness(n_sig, self.sr, level - snr_db, self.meter)
            if n_gain is None:
                problems.append(f"{noise.path} (noise segment at {n_off})")
                return None
            signals["noise"] = n_sig
            meta.update(
                noise_id=noise.id,
                noise_file=noise.path,
                noise_offset=n_off,
                noise_gain_db=n_gain,
                snr_db=snr_db,
            )
        signals["mix"] = sum(signals.values())
        clip_gain_db = _clip_scale(signals, self.peak_limit)
        ref_signals = {"ref": r_sig}
        ref_clip_gain_db = _clip_scale(ref_signals, self.peak_limit)
        signals["ref"] = ref_signals["ref"]
        meta.update(
            clip_gain_db=clip_gain_db,
            ref_clip_gain_db=ref_clip_gain_db,
            target_lufs=level + clip_gain_db,
            interferer_lufs=level - tir_db + clip_gain_db,
            ref_lufs=level + ref_clip_gain_db,
        )
        if self.noises is not None:
            meta["noise_lufs"] = level - meta["snr_db"] + clip_gain_db
        return signals, meta


def _checked_peak_limit(peak_limit):
    if peak_limit is not None and not 0 < float(peak_limit) <= 1:
        raise ValueError(f"peak_limit must be in (0, 1] or None, got {peak_limit}")
    return None if peak_limit is None else float(peak_limit)


def _clip_scale(signals: dict, peak_limit) -> float:
    """Scale every signal of ``signals`` in place by one factor so none peaks above ``peak_limit``.

    Returns the gain in dB (0.0 when nothing needed scaling or ``peak_limit`` is None).
    """
    if peak_limit is None:
        return 0.0
    peak = max(float(np.max(np.abs(s))) for s in signals.values())
    if peak <= peak_limit:
        return 0.0
    scale = peak_limit / peak
    for key in signals:
        signals[key] = signals[key] * scale
    return float(20.0 * np.log10(scale))
