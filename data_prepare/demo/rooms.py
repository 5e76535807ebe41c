"""Shoebox room impulse responses for the demo corpus (private helper of ``demo.py``).

Rooms are simulated with the image source method of pyroomacoustics (no ray
tracing, so it is fast and deterministic). The wall absorption from Sabine's
formula does not give the requested RT60 in an image-source shoebox (the decay
is usually slower, especially in flat rooms), so the absorption is calibrated:
a few simulations adjust the design RT60 by a secant step in log-log space until
the measured RT60 (T30, Schroeder backward integration, extrapolated to 60 dB)
is within 5 % of the target. The image order is fixed from the target RT60 so
that the calibration only moves the absorption. Both the target and the
measured RT60 of every RIR are returned.
"""

from __future__ import annotations

import numpy as np
import pyroomacoustics as pra
from pyroomacoustics.experimental import measure_rt60

SPEED_OF_SOUND = 343.0
MAX_ABSORPTION = 0.95


def sabine_absorption(rt60: float, dims) -> float:
    """Uniform energy absorption giving ``rt60`` by Sabine's formula in a shoebox.

    Example
    -------
    >>> round(sabine_absorption(0.5, [5.0, 4.0, 3.0]), 3)
    0.206
    """
    length, width, height = dims
    volume = length * width * height
    surface = 2 * (length * width + length * height + width * height)
    return float(24 * np.log(10) * volume / (SPEED_OF_SOUND * surface * rt60))


def draw_room(rng: np.random.Generator, rt60_range=(0.2, 0.8), num_sources=1, num_mics=1):
    """Random room geometry, target RT60 and source/microphone positions.

    Geometry follows the SLR26 ``smallroom`` ranges (floor sides 3-10 m, height
    2.4-4.5 m); rooms whose Sabine absorption for the target RT60 would be
    implausibly high are redrawn. Sources (talker height 1.2-1.9 m) are 0.5-3 m
    from the microphone (0.7-1.6 m high), at least 0.5 m from every wall.
    Microphones of a multi-microphone room form a pair 10-30 cm apart.

    Example
    -------
    >>> room = draw_room(np.random.default_rng(0), num_sources=2)
    >>> len(room["sources"]), len(room["mics"])
    (2, 1)
    """
    rt60 = float(rng.uniform(*rt60_range))
    while True:
        dims = rng.uniform([3.0, 3.0, 2.4], [10.0, 10.0, 4.5])
        if sabine_absorption(rt60, dims) <= 0.6:
            break
    margin = 0.5
    mic = np.array(
        [rng.uniform(margin, dims[0] - margin), rng.uniform(margin, dims[1] - margin), 0.0]
    )
    mic[2] = rng.uniform(0.7, 1.6)
    mics = [mic]
    if num_mics > 1:
        for _ in range(num_mics - 1):
            spacing = rng.uniform(0.1, 0.3)
            angle = rng.uniform(0, 2 * np.pi)
            offset = spacing * np.array([np.cos(angle), np.sin(angle), 0.0])
            candidate = np.clip(mic + offset, margin, dims - margin)
            mics.append(candidate)
    sources = []
    while len(sources) < num_sources:
        source = np.array(
            [
                rng.uniform(margin, dims[0] - margin),
                rng.uniform(margin, dims[1] - margin),
                rng.uniform(1.2, min(1.9, dims[2] - margin)),
            ]
        )
        if 0.5 <= np.linalg.norm(source - mic) <= 3.0:
            sources.append(source)
    return {
        "rt60_target": rt60,
        "dims": dims.tolist(),
        "sources": [s.tolist() for s in sources],
        "mics": [m.tolist() for m in mics],
    }


def _simulate(dims, absorption, max_order, sources, mics, sr):
    """RIRs as nested lists ``[mic][source]`` of float64 arrays."""
    room = pra.ShoeBox(
        dims,
        fs=sr,
        materials=pra.Material(float(absorption)),
        max_order=int(max_order),
        air_absorption=False,
        use_rand_ism=False,
    )
    for source in sources:
        room.add_source(source)
    room.add_microphone_array(np.array(mics, dtype=float).T)
    room.compute_rir()
    return [[np.asarray(h, dtype=np.float64) for h in per_mic] for per_mic in room.rir]


def measured_rt60(rir: np.ndarray, sr: int) -> float:
    """T30-based RT60 (seconds) of one impulse response (pyroomacoustics)."""
    return float(measure_rt60(rir, fs=sr, decay_db=30))


def calibrated_room_rirs(room: dict, sr: int, tolerance=0.05, max_iterations=5):
    """Simulate a drawn room with its absorption calibrated to the target RT60.

    Arguments
    ---------
    room : dict
        From ``draw_room``.
    sr : int
        Sample rate of the RIRs.
    tolerance : float
        Relative RT60 error accepted (first source, first microphone).
    max_iterations : int
        Calibration simulations at most; the closest one is kept.

    Returns
    -------
    (list, dict)
        RIRs ``[mic][source]`` (float64, unnormalised, trailing zeros cut) and
        the room facts (absorption, image order, design RT60).
    """
    target = room["rt60_target"]
    dims = room["dims"]
    _, max_order = pra.inverse_sabine(target, dims, c=SPEED_OF_SOUND)
    design = target
    tried = []  # (log design, log measured, absorption)
    for _ in range(max_iterations):
        absorption = min(sabine_absorption(design, dims), MAX_ABSORPTION)
        rir = _simulate(dims, absorption, max_order, room["sources"][:1], room["mics"][:1], sr)
        measured = measured_rt60(rir[0][0], sr)
        tried.append((np.log(design), np.log(measured), absorption))
        if abs(measured / target - 1) <= tolerance or absorption >= MAX_ABSORPTION:
            break
        if len(tried) == 1:
            slope = 1.0
        else:
            (x0, y0, _), (x1, y1, _) = tried[-2], tried[-1]
            slope = (y1 - y0) / (x1 - x0) if x1 != x0 else 1.0
            slope = float(np.clip(slope, 0.3, 3.0))  # keep the secant step sane
        design = float(np.exp(tried[-1][0] + (np.log(target) - tried[-1][1]) / slope))
    best = min(tried, key=lambda item: abs(item[1] - np.log(target)))
    absorption = best[2]
    rirs = _simulate(dims, absorption, max_order, room["sources"], room["mics"], sr)
    facts = {
        "absorption": round(float(absorption), 5),
        "max_order": int(max_order),
        "rt60_design": round(float(np.exp(best[0])), 4),
    }
    return [[_cut_tail(h) for h in per_mic] for per_mic in rirs], facts


def _cut_tail(rir: np.ndarray, floor_db: float = -90.0) -> np.ndarray:
    """Drop the tail once the remaining energy is ``floor_db`` below the total."""
    energy = np.cumsum(rir[::-1] ** 2)[::-1]
    keep = np.flatnonzero(energy > energy[0] * 10 ** (floor_db / 10))
    return rir[: keep[-1] + 1] if keep.size else rir
