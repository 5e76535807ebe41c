"""espeak-ng voices and synthesis for the demo corpus (private helper of ``demo.py``).

A demo "speaker" is one espeak-ng voice: an English base voice (accent), a
voice variant (timbre), a base pitch and a speaking rate. Synthesis runs the
``espeak-ng`` binary (22.05 kHz output on stdout), resamples to 16 kHz with a
polyphase filter, trims the synthesizer's trailing silence, adds a short lead-in
and a very faint noise floor (real recordings are never digitally silent) and
sets the level.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

# English base voices shipped with espeak-ng (mbrola "mb-*" voices need extra packages).
BASE_VOICES = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
    "en-gb-x-gbcwmd", "en-us-nyc",
)  # fmt: skip

# Voice variants that sound like a human talker (whisper, croak, robots etc. are left out;
# "klatt6" and "caleb" are left out because they render exactly like "klatt").
FEMALE_VARIANTS = (
    "f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "aunty", "belinda", "grandma",
    "linda", "steph", "anika",
)  # fmt: skip
MALE_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "klatt", "klatt2", "klatt3", "klatt4",
    "klatt5", "adam", "Alex", "Andy", "benjamin", "boris", "david", "Denis", "ed", "edward",
    "Gene", "grandpa", "Hugo", "iven", "Jacky", "john", "Lee", "Marco", "max", "Michael", "michel",
    "Mike", "norbert", "paul", "quincy", "rob", "robert", "shelby", "travis", "victor", "zac",
)  # fmt: skip

ESPEAK_SR = 22050
NOISE_FLOOR_DB = -72.0  # re full scale; ~6 LSB of 16-bit PCM, far below speech


class EspeakNotFoundError(RuntimeError):
    """espeak-ng is not installed (the message gives the install command)."""


def espeak_install_command() -> str:
    """The exact command that installs espeak-ng on Debian/Ubuntu for this user."""
    sudo = "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "
    return f"{sudo}apt-get install -y espeak-ng"


def find_espeak(binary: str = "espeak-ng") -> str:
    """Absolute path of the espeak-ng binary, or a clear error with the install command.

    Example
    -------
    >>> try:
    ...     find_espeak("no-such-espeak-binary")
    ... except EspeakNotFoundError as err:
    ...     "apt-get install -y espeak-ng" in str(err)
    True
    """
    path = shutil.which(binary)
    if path is None:
        raise EspeakNotFoundError(
            f"'{binary}' was not found on PATH; the demo corpus needs it to synthesize speech. "
            f"Install it with: {espeak_install_command()}  (or run `make demo-corpus`, which "
            "installs it when running as root)"
        )
    return path


def espeak_version(binary: str) -> str:
    """First line of ``espeak-ng --version`` (recorded with the corpus options)."""
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.strip().splitlines()[0] if result.stdout.strip() else "unknown"


@dataclass(frozen=True)
class VoiceProfile:
    """One synthetic talker.

    Attributes
    ----------
    base : str
        espeak-ng English voice (accent), e.g. ``"en-gb-scotland"``.
    variant : str
        espeak-ng voice variant (timbre), e.g. ``"f3"``.
    sex : str
        ``"F"`` or ``"M"`` (from the variant).
    pitch : int
        espeak-ng ``-p`` (0-99, 50 is the voice's default).
    rate : int
        espeak-ng ``-s`` in words per minute.
    level_db : float
        Speech RMS level (dB re full scale) of this talker's recordings.
    """

    base: str
    variant: str
    sex: str
    pitch: int
    rate: int
    level_db: float

    @property
    def voice(self) -> str:
        """The ``-v`` argument of espeak-ng."""
        return f"{self.base}+{self.variant}"

    def describe(self) -> str:
        """Human-readable voice definition (used in SPEAKERS.TXT)."""
        return f"espeak-ng {self.voice} p{self.pitch} s{self.rate}"

    def to_dict(self) -> dict:
        return asdict(self)


def draw_voice_profiles(rng: np.random.Generator, count: int) -> list:
    """``count`` distinct voices: variants without repetition while they last.

    Each voice gets a distinct (base, variant) pair as long as there are enough
    pairs; pitch, rate and level are drawn per voice.

    Example
    -------
    >>> voices = draw_voice_profiles(np.random.default_rng(0), 20)
    >>> len({(v.base, v.variant) for v in voices})
    20
    """
    variants = [(v, "F") for v in FEMALE_VARIANTS] + [(v, "M") for v in MALE_VARIANTS]
    pairs = [(base, v, sex) for v, sex in variants for base in BASE_VOICES]
    # Order: every variant once (random order, random accent) before any variant repeats.
    variant_order = rng.permutation(len(variants))
    first_round = []
    for index in variant_order:
        variant, sex = variants[index]
        first_round.append((BASE_VOICES[int(rng.integers(len(BASE_VOICES)))], variant, sex))
    used = set(first_round)
    rest = [pairs[i] for i in rng.permutation(len(pairs)) if pairs[i] not in used]
    ordered = first_round + rest
    profiles = []
    for index in range(count):
        base, variant, sex = ordered[index % len(ordered)]
        profiles.append(
            VoiceProfile(
                base=base,
                variant=variant,
                sex=sex,
                pitch=int(rng.integers(30, 76)),
                rate=int(rng.integers(140, 186)),
                level_db=round(float(rng.uniform(-30.0, -20.0)), 2),
            )
        )
    return profiles


def run_espeak(binary: str, profile: VoiceProfile, text: str, pitch=None, rate=None):
    """Synthesize ``text`` with espeak-ng; returns (float32 samples, sample rate).

    Raises
    ------
    RuntimeError
        When espeak-ng fails or returns no audio (the message has the command).
    """
    pitch = profile.pitch if pitch is None else pitch
    rate = profile.rate if rate is None else rate
    command = [binary, "-v", profile.voice, "-p", str(pitch), "-s", str(rate), "--stdout", text]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0 or len(result.stdout) < 100:
        raise RuntimeError(
            f"espeak-ng failed (exit {result.returncode}) for {command!r}: "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    samples, sr = sf.read(io.BytesIO(result.stdout), dtype="float32")
    if samples.ndim > 1:
        samples = samples[:, 0]
    return samples, sr


def resample(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling (scipy) between integer rates.

    Example
    -------
    >>> resample(np.zeros(22050, dtype=np.float32), 22050, 16000).shape
    (16000,)
    """
    if orig_sr == target_sr:
        return samples.astype(np.float32)
    divisor = gcd(orig_sr, target_sr)
    out = resample_poly(samples.astype(np.float64), target_sr // divisor, orig_sr // divisor)
    return out.astype(np.float32)


def trim_silence(samples: np.ndarray, threshold_db: float = -45.0) -> np.ndarray:
    """Cut leading/trailing samples quieter than ``threshold_db`` below the peak.

    Example
    -------
    >>> x = np.concatenate([np.zeros(100), np.ones(50), np.zeros(200)])
    >>> trim_silence(x).shape
    (50,)
    """
    magnitude = np.abs(samples)
    peak = magnitude.max() if magnitude.size else 0.0
    if peak <= 0:
        return samples[:0]
    loud = np.flatnonzero(magnitude > peak * 10 ** (threshold_db / 20))
    return samples[loud[0] : loud[-1] + 1]


def set_rms_db(samples: np.ndarray, level_db: float, peak_limit: float = 0.95) -> np.ndarray:
    """Scale to an RMS of ``level_db`` (dB re 1), lowered if the peak would exceed ``peak_limit``.

    Example
    -------
    >>> y = set_rms_db(np.full(10, 0.5), -20.0)
    >>> bool(abs(20 * np.log10(np.sqrt(np.mean(y**2))) + 20.0) < 1e-6)
    True
    """
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms <= 0:
        raise ValueError("cannot set the level of an all-zero signal")
    gain = 10 ** (level_db / 20) / rms
    peak = float(np.max(np.abs(samples))) * gain
    if peak > peak_limit:
        gain *= peak_limit / peak
    return (samples * gain).astype(np.float32)


def synthesize_utterance(
    binary: str,
    profile: VoiceProfile,
    text: str,
    rng: np.random.Generator,
    sr: int = 16000,
) -> np.ndarray:
    """One recording of ``text`` by ``profile`` at ``sr`` Hz (float32, mono).

    Small per-utterance variations of rate, pitch and level (drawn from ``rng``)
    keep a talker's recordings from being identical in delivery.
    """
    rate = int(np.clip(profile.rate + rng.integers(-8, 9), 80, 450))
    pitch = int(np.clip(profile.pitch + rng.integers(-4, 5), 0, 99))
    raw, raw_sr = run_espeak(binary, profile, text, pitch=pitch, rate=rate)
    speech = trim_silence(resample(raw, raw_sr, sr))
    if speech.size == 0:
        raise RuntimeError(f"espeak-ng produced silence for {profile.voice!r}: {text!r}")
    lead_in = np.zeros(int(rng.uniform(0.05, 0.30) * sr), dtype=np.float32)
    tail = np.zeros(int(rng.uniform(0.10, 0.40) * sr), dtype=np.float32)
    speech = np.concatenate([lead_in, speech, tail])
    level_db = profile.level_db + float(rng.uniform(-1.5, 1.5))
    speech = set_rms_db(speech, level_db)
    floor = rng.standard_normal(speech.size).astype(np.float32) * 10 ** (NOISE_FLOOR_DB / 20)
    return (speech + floor).astype(np.float32)
