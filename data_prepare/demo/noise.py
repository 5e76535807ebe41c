"""Synthetic noise kinds for the demo corpus (private helper of ``demo.py``).

Each generator returns ``n`` float64 samples at ``sr`` Hz with an arbitrary
level (the caller sets the level); all randomness comes from the given
``numpy.random.Generator``.

Kinds (stationary to strongly non-stationary):

* ``white``: flat spectrum.
* ``pink``: power ∝ 1/f (-3 dB/octave).
* ``brown``: power ∝ 1/f² (-6 dB/octave), high-passed at 20 Hz (no drift).
* ``hum``: 50 or 60 Hz mains hum with decaying (odd-emphasised) harmonics, a slow
  level wobble and a faint hiss.
* ``clatter``: sparse impacts (damped resonances + a click), partly in clusters,
  over a quiet background, like dishes and cutlery.
* ``traffic``: low-passed rumble with slow modulation and passing vehicles
  (bell-shaped swells of low-passed noise).
* ``babble``: 3-6 talkers (voices that are never target speakers), built by
  ``mix_babble`` from synthesized utterances.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
from scipy.signal import butter, sosfilt

NOISE_KINDS = ("white", "pink", "brown", "hum", "babble", "clatter", "traffic")


def colored_noise(n: int, exponent: float, rng: np.random.Generator, sr=16000, f_min=20.0):
    """Gaussian noise with power spectral density ∝ 1/f**exponent above ``f_min``.

    Example
    -------
    >>> colored_noise(1000, 1.0, np.random.default_rng(0)).shape
    (1000,)
    """
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, d=1.0 / sr)
    shape = np.zeros_like(freqs)
    above = freqs >= f_min
    shape[above] = freqs[above] ** (-exponent / 2.0)
    return np.fft.irfft(spectrum * shape, n=n)


def white_noise(n, rng, sr=16000):
    """Flat-spectrum Gaussian noise."""
    return rng.standard_normal(n)


def pink_noise(n, rng, sr=16000):
    """1/f noise."""
    return colored_noise(n, 1.0, rng, sr)


def brown_noise(n, rng, sr=16000):
    """1/f² noise, high-passed at 20 Hz."""
    return colored_noise(n, 2.0, rng, sr)


def hum_noise(n, rng, sr=16000):
    """Mains hum: fundamental 50/60 Hz (slightly off-nominal) with harmonics up to ~3 kHz."""
    t = np.arange(n) / sr
    fundamental = float(rng.choice([50.0, 60.0])) * (1 + rng.uniform(-0.002, 0.002))
    odd_boost = rng.uniform(1.0, 3.0)  # transformer buzz is rich in odd harmonics
    decay = rng.uniform(0.6, 1.4)
    signal = np.zeros(n)
    harmonic = 1
    while harmonic * fundamental < min(3000.0, sr / 2 - 100):
        amplitude = harmonic ** (-decay) * (odd_boost if harmonic % 2 else 1.0)
        amplitude *= rng.uniform(0.5, 1.5)
        phase = rng.uniform(0, 2 * np.pi)
        signal += amplitude * np.sin(2 * np.pi * harmonic * fundamental * t + phase)
        harmonic += 1
    wobble = 1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 2 * np.pi))
    signal *= wobble
    hiss = white_noise(n, rng) * np.std(signal) * 10 ** (-35 / 20)
    return signal + hiss


def _impact(rng, sr):
    """One impact: a few damped resonances plus a short noise click."""
    length = int(rng.uniform(0.03, 0.2) * sr)
    t = np.arange(length) / sr
    sound = np.zeros(length)
    for _ in range(int(rng.integers(3, 7))):
        frequency = rng.uniform(700.0, min(7000.0, sr / 2 - 500))
        time_constant = rng.uniform(0.004, 0.06)
        sound += (
            rng.uniform(0.3, 1.0)
            * np.exp(-t / time_constant)
            * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi))
        )
    click_len = max(2, int(rng.uniform(0.001, 0.004) * sr))
    sound[:click_len] += rng.standard_normal(click_len) * np.abs(sound).max()
    return sound


def clatter_noise(n, rng, sr=16000):
    """Impulsive clatter: Poisson-timed impacts, a third of them in short clusters."""
    signal = pink_noise(n, rng, sr)
    signal *= 10 ** (-40 / 20) / (np.std(signal) + 1e-12)  # quiet room background
    rate_per_sec = rng.uniform(0.8, 3.0)
    num_events = max(1, int(rng.poisson(rate_per_sec * n / sr)))
    onsets = np.sort(rng.integers(0, n, size=num_events))
    for onset in onsets:
        repeats = int(rng.integers(2, 6)) if rng.random() < 0.33 else 1
        start = int(onset)
        for _ in range(repeats):
            if start >= n:
                break
            impact = _impact(rng, sr) * 10 ** (rng.uniform(-20, 0) / 20)
            end = min(n, start + impact.size)
            signal[start:end] += impact[: end - start]
            start += int(rng.uniform(0.03, 0.15) * sr)
    return signal


def _lowpass(x, cutoff, sr, order=4):
    sos = butter(order, min(cutoff, 0.45 * sr), btype="lowpass", fs=sr, output="sos")
    return sosfilt(sos, x)


def traffic_noise(n, rng, sr=16000):
    """Traffic-like noise: modulated low rumble plus passing vehicles."""
    t = np.arange(n) / sr
    rumble = _lowpass(brown_noise(n, rng, sr) + 0.3 * pink_noise(n, rng, sr), 600.0, sr)
    rumble /= np.std(rumble) + 1e-12
    modulation = 1 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.03, 0.15) * t + rng.uniform(0, 6.3))
    signal = 0.5 * rumble * modulation
    # Passing vehicles: Gaussian swells every few seconds, some overlapping.
    duration = n / sr
    num_vehicles = max(1, int(rng.poisson(duration / rng.uniform(3.0, 7.0))))
    for _ in range(num_vehicles):
        center = rng.uniform(0, duration)
        width = rng.uniform(0.8, 2.5)
        envelope = np.exp(-0.5 * ((t - center) / width) ** 2)
        if envelope.max() < 1e-3:
            continue
        vehicle = _lowpass(pink_noise(n, rng, sr), rng.uniform(700.0, 2500.0), sr)
        vehicle /= np.std(vehicle) + 1e-12
        signal += rng.uniform(0.5, 2.0) * envelope * vehicle
    return signal


def mix_babble(utterances_by_talker, n, rng, sr=16000):
    """Sum of talkers, each a stream of their utterances with short pauses.

    Arguments
    ---------
    utterances_by_talker : list of list of numpy.ndarray
        One list of utterances (same sample rate) per talker.
    n : int
        Output length in samples.
    rng : numpy.random.Generator
        Pauses, start offsets and talker levels.
    sr : int
        Sample rate (for the pause lengths).

    Example
    -------
    >>> talkers = [[np.ones(100)], [np.ones(50), np.ones(70)], [np.ones(30)]]
    >>> mix_babble(talkers, 400, np.random.default_rng(0)).shape
    (400,)
    """
    babble = np.zeros(n)
    for utterances in utterances_by_talker:
        stream = []
        length = 0
        index = 0
        while length < n:
            utterance = utterances[index % len(utterances)]
            pause = np.zeros(int(rng.uniform(0.05, 0.5) * sr))
            stream.extend([utterance, pause])
            length += utterance.size + pause.size
            index += 1
        talker = np.roll(np.concatenate(stream)[:n], int(rng.integers(n)))
        talker = talker / (np.sqrt(np.mean(talker**2)) + 1e-12)
        babble += talker * 10 ** (rng.uniform(-4, 4) / 20)
    return babble


GENERATORS = MappingProxyType(
    {
        "white": white_noise,
        "pink": pink_noise,
        "brown": brown_noise,
        "hum": hum_noise,
        "clatter": clatter_noise,
        "traffic": traffic_noise,
    }
)


def synthesize_noise(kind: str, n: int, rng: np.random.Generator, sr: int = 16000) -> np.ndarray:
    """``n`` samples of a non-babble noise ``kind`` (see ``NOISE_KINDS``).

    Example
    -------
    >>> synthesize_noise("hum", 1600, np.random.default_rng(0)).shape
    (1600,)
    """
    if kind not in GENERATORS:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {sorted(GENERATORS)}")
    return GENERATORS[kind](n, rng, sr)
