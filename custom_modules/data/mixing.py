"""On-the-fly noisy-reverberant mixtures (PoCoNet-style), fixed sets and a Dataset.

Recipe of one example (``RandomMixtureSampler.sampler``)
--------------------------------------------------------
1. A speech crop ``x`` is drawn. With probability ``prob_rir_sig`` it is
   convolved with a random RIR ``h``: the *speech in the mixture* is then
   ``x * h`` and the *target* (what the network must output) is, following
   ``reverb_target``:

   * ``"dry"``: the direct path, i.e. ``x`` delayed by the RIR's main tap and
     with its polarity, so that it is time-aligned with the speech in the
     mixture (a causal model cannot undo the propagation delay);
   * ``"early"``: ``x * early_rir(h)``, direct path + 50 ms of reflections;
   * ``"decay"``: ``x * decay_rir(h)``, late reverberation attenuated by an
     extra exponential decay (partial dereverberation);
   * ``"reverberant"``: ``x * h`` itself (denoising only).

   Without a RIR the speech in the mixture and the target are both ``x``.
   RIRs are scaled to a unit main tap; this cancels out below but makes the
   silent-target check meaningful.
2. Speech and target are scaled by one common factor that sets the target
   RMS to ``normalization_rms_db``.
3. A noise crop is convolved with another random RIR with probability
   ``prob_rir_noise`` and set to RMS ``normalization_rms_db + g``,
   ``g ~ U(noise_gain_range_db)``.
4. ``mixture = speech + noise``; mixture and target (and the components)
   are multiplied by one gain from ``U(mixture_gain_range_db)``.
5. Clipping policy: if ``max|mixture| > 1`` after the mixture gain, mixture,
   target and components are all scaled by ``0.99 / max|mixture|`` (1 %
   headroom so that 16-bit export does not clip either); ``clip_scale`` is
   recorded and ``num_clipped`` counts it (``num_generated`` counts all).

SNR here is **target vs noise**: ``snr_db = -g`` exactly (the gains of
steps 4 and 5 apply to both). With ``reverb_target="reverberant"``,
``mixture - target`` is the noise: no speech leaks into it.

Silent targets: when a RIR's main tap falls after the end of the crop, the
target (or the reverberant noise) can be (near) silent; such draws are
rejected if more than ``max_attenuation_db`` below the dry crop and redrawn,
up to ``max_attempts`` times, then a ``RuntimeError`` names the files.

Everything is computed in float64 and cast to float32 at the very end, so
levels and SNR are exact to ~1e-6 dB in the float32 output.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import scipy.fft

from custom_modules.audio.levels import eval_rms_db, gain_to_mult
from custom_modules.audio.rir import decay_rir, early_rir, estimate_rt60
from custom_modules.audio.seeding import derive_seed_sequences

# The Dataset and the fixed-set writer live in a helper module (file size);
# they are part of this module's interface.
from custom_modules.data.fixed_sets import OnTheFlyDataset, fixed_set_digest, write_fixed_set
from custom_modules.data.ranges import draw_uniform

REVERB_TARGETS = ("dry", "early", "decay", "reverberant")
CLIP_HEADROOM = 0.99


@dataclass
class MixtureExample:
    """One mixture with its parts (float32) and metadata.

    ``mixture == speech + noise`` up to float32 rounding, where ``speech`` is
    the (possibly reverberant) speech in the mixture; ``target`` is what the
    network must output (equal to ``speech`` for a reverberant target or
    without RIR). ``speech``/``noise`` are None when not requested.
    """

    mixture: np.ndarray
    target: np.ndarray
    speech: np.ndarray | None
    noise: np.ndarray | None
    metadata: dict


class RandomMixtureSampler:
    """Random noisy (and reverberant) mixture and its target; see module docstring.

    Arguments
    ---------
    sig_sampler : custom_modules.data.sampling.SignalSampler
        Speech crops.
    noise_sampler : custom_modules.data.sampling.SignalSampler
        Noise crops of the same length.
    rir_sampler : custom_modules.data.sampling.RirSampler or None
        RIRs (``None`` only if both RIR probabilities are 0).
    prob_rir_sig, prob_rir_noise : float
        Probability of reverberating the speech / the noise.
    normalization_rms_db : float
        Target RMS (dB re RMS 1) before the mixture gain.
    noise_gain_range_db : (float, float)
        Noise level relative to the target, dB (SNR = minus this gain).
    mixture_gain_range_db : (float, float)
        Gain applied to mixture and target, dB.
    reverb_target : str
        One of ``"dry"``, ``"early"``, ``"decay"``, ``"reverberant"``.
    sr : int
        Sample rate (checked against the samplers).
    rng : int, numpy.random.SeedSequence or None
        Seed of the whole sampler (itself and its sub-samplers), see ``reseed``.
    early_sec : float
        Early part kept by ``"early"`` after the main tap.
    decay_rt60_sec, early_reverb_sec : float
        Parameters of ``decay_rir`` for ``"decay"``.
    max_attenuation_db : float
        A target (or reverberant noise) more than this below its dry crop
        is redrawn.
    max_attempts : int
        Bound on redraws per example.
    rir_cache_size : int
        Processed RIRs kept in memory.
    noise_augmentation : callable or None
        ``noise_augmentation(crop, rng) -> crop`` applied to every noise crop
        before its RIR (e.g. ``noise_augmentation.RandomNoiseAugmentation``:
        training only; the fixed sets are written without it).

    Example
    -------
    >>> import soundfile as sf
    >>> from custom_modules.data.sampling import RirSampler, SignalSampler
    >>> folder, rng = getfixture("tmp_path"), np.random.default_rng(0)
    >>> sf.write(str(folder / "s.wav"), rng.normal(0, 0.1, 32000), 16000)
    >>> sf.write(str(folder / "n.wav"), rng.normal(0, 0.1, 32000), 16000)
    >>> sf.write(str(folder / "r.wav"), rng.normal(size=4000) * np.exp(-np.arange(4000) / 400), 16000)
    >>> mixer = RandomMixtureSampler(
    ...     SignalSampler([str(folder / "s.wav")], crop_size_sec=1.0),
    ...     SignalSampler([str(folder / "n.wav")], crop_size_sec=1.0),
    ...     RirSampler([str(folder / "r.wav")]), rng=0)
    >>> mixture, target = mixer.sampler()
    >>> mixture.shape, target.shape, mixture.dtype
    ((16000,), (16000,), dtype('float32'))
    """

    def __init__(
        self,
        sig_sampler,
        noise_sampler,
        rir_sampler=None,
        prob_rir_sig=0.5,
        prob_rir_noise=0.5,
        normalization_rms_db=-20.0,
        noise_gain_range_db=(-5.0, 5.0),
        mixture_gain_range_db=(-25.0, 5.0),
        reverb_target="decay",
        sr=16000,
        rng=None,
        early_sec=0.050,
        decay_rt60_sec=0.3,
        early_reverb_sec=0.020,
        max_attenuation_db=40.0,
        max_attempts=10,
        rir_cache_size=64,
        noise_augmentation=None,
    ):
        if reverb_target not in REVERB_TARGETS:
            raise ValueError(
                f"reverb_target must be one of {REVERB_TARGETS}, got {reverb_target!r}"
            )
        for name, prob in (("prob_rir_sig", prob_rir_sig), ("prob_rir_noise", prob_rir_noise)):
            if not 0.0 <= float(prob) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {prob}")
        if rir_sampler is None and (prob_rir_sig > 0 or prob_rir_noise > 0):
            raise ValueError("rir_sampler is None but a RIR probability is > 0")
        for name, sub in (("sig_sampler", sig_sampler), ("noise_sampler", noise_sampler)):
            if sub.sr != sr:
                raise ValueError(f"{name} works at {sub.sr} Hz but the mixer at {sr} Hz")
        if rir_sampler is not None and rir_sampler.sr != sr:
            raise ValueError(f"rir_sampler works at {rir_sampler.sr} Hz but the mixer at {sr} Hz")
        if sig_sampler.crop_size != noise_sampler.crop_size:
            raise ValueError(
                f"speech crops have {sig_sampler.crop_size} samples but noise crops "
                f"{noise_sampler.crop_size}; use the same crop_size_sec"
            )
        if not np.isfinite(normalization_rms_db):
            raise ValueError(f"normalization_rms_db must be finite, got {normalization_rms_db}")
        self.sig_sampler = sig_sampler
        self.noise_sampler = noise_sampler
        self.rir_sampler = rir_sampler
        self.prob_rir_sig = float(prob_rir_sig)
        self.prob_rir_noise = float(prob_rir_noise)
        self.normalization_rms_db = float(normalization_rms_db)
        self.noise_gain_range_db = tuple(float(v) for v in noise_gain_range_db)
        self.mixture_gain_range_db = tuple(float(v) for v in mixture_gain_range_db)
        self.reverb_target = reverb_target
        self.sr = int(sr)
        self.early_sec = float(early_sec)
        self.decay_rt60_sec = float(decay_rt60_sec)
        self.early_reverb_sec = float(early_reverb_sec)
        self.max_attenuation_db = float(max_attenuation_db)
        self.max_attempts = int(max_attempts)
        self.rir_cache_size = int(rir_cache_size)
        self.noise_augmentation = noise_augmentation
        self._rir_cache = OrderedDict()
        self._rt60_cache = {}
        self.num_generated = 0
        self.num_clipped = 0
        # Validate the ranges once (raises on a bad range).
        probe = np.random.default_rng(0)
        draw_uniform(probe, self.noise_gain_range_db, "noise_gain_range_db")
        draw_uniform(probe, self.mixture_gain_range_db, "mixture_gain_range_db")
        self.reseed(rng)

    @property
    def crop_size(self) -> int:
        """Length of every example in samples."""
        return self.sig_sampler.crop_size

    def reseed(self, seed) -> None:
        """Reseed the mixer and its sub-samplers from one seed.

        Four independent children of ``seed`` (int, ``SeedSequence`` or
        ``None``) seed the speech, noise and RIR samplers and the mixer's
        own generator, so one seed reproduces everything.
        """
        sig_seed, noise_seed, rir_seed, own_seed = derive_seed_sequences(seed, 4)
        self.sig_sampler.reseed(sig_seed)
        self.noise_sampler.reseed(noise_seed)
        if self.rir_sampler is not None:
            self.rir_sampler.reseed(rir_seed)
        self.rng = np.random.default_rng(own_seed)

    def describe(self) -> dict:
        """All parameters and the sub-samplers' descriptions (JSON-ready)."""
        # Only when set, so that the digests of fixed sets written without it are unchanged.
        augmentation = {}
        if self.noise_augmentation is not None:
            describe = getattr(self.noise_augmentation, "describe", None)
            augmentation["noise_augmentation"] = (
                describe() if describe else repr(self.noise_augmentation)
            )
        return {
            **augmentation,
            "class": type(self).__name__,
            "prob_rir_sig": self.prob_rir_sig,
            "prob_rir_noise": self.prob_rir_noise,
            "normalization_rms_db": self.normalization_rms_db,
            "noise_gain_range_db": list(self.noise_gain_range_db),
            "mixture_gain_range_db": list(self.mixture_gain_range_db),
            "reverb_target": self.reverb_target,
            "sr": self.sr,
            "early_sec": self.early_sec,
            "decay_rt60_sec": self.decay_rt60_sec,
            "early_reverb_sec": self.early_reverb_sec,
            "max_attenuation_db": self.max_attenuation_db,
            "max_attempts": self.max_attempts,
            "sig_sampler": self.sig_sampler.describe(),
            "noise_sampler": self.noise_sampler.describe(),
            "rir_sampler": None if self.rir_sampler is None else self.rir_sampler.describe(),
        }

    # -- RIRs -------------------------------------------------------------

    def _rt60(self, index: int, rir: np.ndarray):
        """RT60 from the RIR manifest, else estimated once and cached (None if impossible)."""
        known = self.rir_sampler.rt60s[index]
        if known is not None:
            return float(known)
        if index not in self._rt60_cache:
            try:
                self._rt60_cache[index] = estimate_rt60(rir, self.sr)
            except ValueError:
                self._rt60_cache[index] = None  # too short/noisy a decay to fit
        return self._rt60_cache[index]

    def _processed_rir(self, index: int) -> dict:
        """Unit-main-tap RIR, spectra of it and of the target kernel (LRU-cached per RIR).

        Convolutions are done here as products of float32 spectra at an FFT
        size fixed per RIR (crop + RIR - 1, so the first ``crop_size``
        samples equal ``convolve_same_length``'s to float32 precision): a
        cached RIR costs one forward FFT per signal instead of three, and
        the "early"/"decay" target reuses the speech spectrum.
        """
        cached = self._rir_cache.get(index)
        if cached is not None:
            self._rir_cache.move_to_end(index)
            return cached
        raw = self.rir_sampler.load(index).astype(np.float64)
        # Trailing exact zeros change nothing but the FFT size: drop them.
        raw = raw[: int(np.flatnonzero(raw)[-1]) + 1]
        main = int(np.argmax(np.abs(raw)))
        rir = raw / abs(raw[main])
        if self.reverb_target == "early":
            kernel = early_rir(rir, early_sec=self.early_sec, sr=self.sr)
        elif self.reverb_target == "decay":
            kernel = decay_rir(
                rir,
                decay_rt60_sec=self.decay_rt60_sec,
                early_reverb_sec=self.early_reverb_sec,
                sr=self.sr,
            )
        else:
            kernel = None  # "dry" is a shift, "reverberant" reuses the wet speech
        nfft = scipy.fft.next_fast_len(self.crop_size + rir.size - 1, real=True)
        processed = {
            "rir": rir,
            "main": main,
            "sign": float(np.sign(rir[main])),
            "nfft": nfft,
            "rir_spectrum": scipy.fft.rfft(rir.astype(np.float32), nfft),
            "kernel_spectrum": None
            if kernel is None
            else scipy.fft.rfft(kernel.astype(np.float32), nfft),
        }
        self._rir_cache[index] = processed
        if len(self._rir_cache) > self.rir_cache_size:
            self._rir_cache.popitem(last=False)
        return processed

    def _convolve(self, signal_spectrum, kernel_spectrum, nfft) -> np.ndarray:
        """First ``crop_size`` samples of a linear convolution, as float64."""
        full = scipy.fft.irfft(signal_spectrum * kernel_spectrum, nfft)
        return full[: self.crop_size].astype(np.float64)

    def _draw_rir(self, probability: float):
        """``(processed, info)`` of a RIR with probability ``probability``, else ``(None, None)``."""
        if self.rng.random() >= probability:
            return None, None
        index = self.rir_sampler.sample_good_index()  # skips RIRs unreadable since prep
        processed = self._processed_rir(index)
        info = {
            "id": self.rir_sampler.ids[index],
            "path": self.rir_sampler.paths[index],
            "rt60": self._rt60(index, processed["rir"]),
            "main_tap": processed["main"],
        }
        return processed, info

    # -- ingredients ------------------------------------------------------

    def _draw_speech(self):
        """Speech in the mixture, target (float64) and metadata, redrawing silent targets."""
        tried = []
        for attempt in range(1, self.max_attempts + 1):
            crop, crop_info = self.sig_sampler.sampler(return_info=True)
            dry = crop.astype(np.float64)
            processed, rir_info = self._draw_rir(self.prob_rir_sig)
            if processed is None:
                wet, target, target_type = dry, dry, "dry"
                target_db = crop_info["rms_db"]
            else:
                nfft = processed["nfft"]
                spectrum = scipy.fft.rfft(crop, nfft)
                wet = self._convolve(spectrum, processed["rir_spectrum"], nfft)
                target_type = self.reverb_target
                if target_type == "reverberant":
                    target = wet
                elif target_type == "dry":
                    target = np.zeros_like(dry)
                    shift = processed["main"]
                    if shift < dry.size:
                        target[shift:] = processed["sign"] * dry[: dry.size - shift]
                else:
                    target = self._convolve(spectrum, processed["kernel_spectrum"], nfft)
                target_db = eval_rms_db(target)
            if target_db >= crop_info["rms_db"] - self.max_attenuation_db:
                meta = {
                    "speech": crop_info["segments"],
                    "speech_rms_db": crop_info["rms_db"],
                    "speech_rir": rir_info,
                    "target_type": target_type,
                    "speech_attempts": attempt,
                }
                return wet, target, target_db, meta
            tried.append(f"{crop_info['segments'][0]['path']} with RIR {rir_info['path']}")
        raise RuntimeError(
            f"RandomMixtureSampler: {self.max_attempts} targets in a row were more than "
            f"{self.max_attenuation_db} dB below their dry speech (RIR main tap after the end "
            f"of the crop?); tried: {'; '.join(tried[:5])}"
        )

    def _draw_noise(self):
        """Noise (float64, possibly reverberant), its level and metadata."""
        tried = []
        for attempt in range(1, self.max_attempts + 1):
            crop, crop_info = self.noise_sampler.sampler(return_info=True)
            crop_db = crop_info["rms_db"]
            if self.noise_augmentation is not None:
                augmented = self.noise_augmentation(crop, self.rng)
                if augmented is not crop:  # re-measured only when the crop changed
                    crop, crop_db = augmented, eval_rms_db(augmented)
            processed, rir_info = self._draw_rir(self.prob_rir_noise)
            if processed is None:
                noise, noise_db = crop.astype(np.float64), crop_db
            else:
                nfft = processed["nfft"]
                noise = self._convolve(scipy.fft.rfft(crop, nfft), processed["rir_spectrum"], nfft)
                noise_db = eval_rms_db(noise)
            if noise_db >= crop_db - self.max_attenuation_db:
                meta = {
                    "noise": crop_info["segments"],
                    "noise_rms_db": crop_info["rms_db"],
                    "noise_rir": rir_info,
                    "noise_attempts": attempt,
                }
                return noise, noise_db, meta
            tried.append(f"{crop_info['segments'][0]['path']} with RIR {rir_info['path']}")
        raise RuntimeError(
            f"RandomMixtureSampler: {self.max_attempts} reverberant noises in a row were more "
            f"than {self.max_attenuation_db} dB below their dry noise; tried: {'; '.join(tried[:5])}"
        )

    # -- public -----------------------------------------------------------

    def _generate(self, components: bool) -> MixtureExample:
        """One example; ``speech``/``noise`` are None unless ``components``."""
        wet, target, target_db, meta = self._draw_speech()
        noise, noise_db, noise_meta = self._draw_noise()
        meta.update(noise_meta)
        noise_gain_db = draw_uniform(self.rng, self.noise_gain_range_db, "noise_gain_range_db")
        mixture_gain_db = draw_uniform(
            self.rng, self.mixture_gain_range_db, "mixture_gain_range_db"
        )

        speech_gain_db = self.normalization_rms_db - target_db
        noise_scale_db = self.normalization_rms_db + noise_gain_db - noise_db
        mixture_mult = gain_to_mult(mixture_gain_db)
        speech_scale = gain_to_mult(speech_gain_db) * mixture_mult
        noise_scale = gain_to_mult(noise_scale_db) * mixture_mult
        mixture = wet * speech_scale
        mixture += noise * noise_scale

        peak = max(float(mixture.max()), -float(mixture.min()))
        clip_scale = 1.0
        if peak > 1.0:
            clip_scale = CLIP_HEADROOM / peak
            self.num_clipped += 1
        self.num_generated += 1

        meta.update(
            {
                "snr_db": -noise_gain_db,
                "noise_gain_db": noise_gain_db,
                "speech_gain_db": speech_gain_db,
                "mixture_gain_db": mixture_gain_db,
                "clip_scale": clip_scale,
                # Exact by construction (saves a pass over the target).
                "target_rms_db": self.normalization_rms_db
                + mixture_gain_db
                + 20.0 * float(np.log10(clip_scale)),
            }
        )

        def scaled32(signal, scale):
            # Scale in float64 and cast to float32 in one pass.
            return np.multiply(
                signal, scale, out=np.empty(signal.shape, np.float32), casting="unsafe"
            )

        return MixtureExample(
            mixture=scaled32(mixture, clip_scale),
            target=scaled32(target, speech_scale * clip_scale),
            speech=scaled32(wet, speech_scale * clip_scale) if components else None,
            noise=scaled32(noise, noise_scale * clip_scale) if components else None,
            metadata=meta,
        )

    def sample_example(self) -> MixtureExample:
        """One example with its components and metadata (see ``MixtureExample``)."""
        return self._generate(components=True)

    def sampler(self, return_metadata=False):
        """``(mixture, target)`` float32 of ``crop_size`` samples, or with metadata.

        The metadata dict holds the speech/noise segments (file id, path,
        start, stop), the RIRs (id, path, RT60, main tap) or ``None``, the
        target type, ``snr_db``, the gains in dB, ``clip_scale`` and levels.
        """
        example = self._generate(components=False)
        if return_metadata:
            return example.mixture, example.target, example.metadata
        return example.mixture, example.target


__all__ = [
    "REVERB_TARGETS",
    "MixtureExample",
    "OnTheFlyDataset",
    "RandomMixtureSampler",
    "fixed_set_digest",
    "write_fixed_set",
]
