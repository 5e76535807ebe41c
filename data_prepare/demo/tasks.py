"""Work units of the demo corpus generator, run in worker processes (private helper).

Every task is a plain dict (picklable) carrying its own ``numpy.random.SeedSequence``,
so results do not depend on which worker runs a task or in which order: the
tree is identical for any number of workers. Each task writes its own files
(atomically, through ``custom_modules.audio.files.write_audio``) and returns a small
dict of facts for the sidecar files.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from custom_modules.audio.files import write_audio
from data_prepare.demo.noise import mix_babble, synthesize_noise
from data_prepare.demo.rooms import calibrated_room_rirs, measured_rt60
from data_prepare.demo.speech import VoiceProfile, set_rms_db, synthesize_utterance

RIR_PEAK = 0.9  # written RIRs are peak-normalised (16-bit PCM, like SLR26)


def _rms_db(samples) -> float:
    """RMS level in dB re full scale, rounded for the sidecar files."""
    return round(float(10 * np.log10(np.mean(np.square(samples, dtype=np.float64)))), 2)


def run_speech_task(task: dict) -> dict:
    """Synthesize one utterance; write it as DNS-style wav and LibriSpeech flac."""
    rng = np.random.default_rng(task["seed"])
    profile = VoiceProfile(**task["profile"])
    audio = synthesize_utterance(task["espeak"], profile, task["text"], rng, sr=task["sr"])
    # Quantize once: libsndfile's float->PCM conversion differs by 1 LSB between its WAV
    # and FLAC writers, and both layouts must hold exactly the same recording.
    pcm = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
    for path in task["paths"]:
        write_audio(path, pcm, task["sr"])
    return {"duration": round(audio.size / task["sr"], 4)}


def run_noise_task(task: dict) -> dict:
    """Synthesize one noise clip (any kind but babble) at its drawn level."""
    rng = np.random.default_rng(task["seed"])
    n = int(round(task["duration"] * task["sr"]))
    noise = synthesize_noise(task["noise_kind"], n, rng, sr=task["sr"])
    noise = set_rms_db(noise, task["level_db"], peak_limit=0.95)
    write_audio(task["path"], noise, task["sr"])
    return {"duration": round(n / task["sr"], 4), "level_db": _rms_db(noise)}


def run_babble_task(task: dict) -> dict:
    """Synthesize the talkers' utterances and mix them into one babble clip."""
    rng = np.random.default_rng(task["seed"])
    n = int(round(task["duration"] * task["sr"]))
    talkers = []
    for profile_dict, texts in zip(task["talkers"], task["texts"], strict=True):
        profile = VoiceProfile(**profile_dict)
        talkers.append(
            [synthesize_utterance(task["espeak"], profile, text, rng, task["sr"]) for text in texts]
        )
    babble = mix_babble(talkers, n, rng, sr=task["sr"])
    babble = set_rms_db(babble, task["level_db"], peak_limit=0.95)
    write_audio(task["path"], babble, task["sr"])
    return {
        "duration": round(n / task["sr"], 4),
        "level_db": _rms_db(babble),
        "talkers": len(talkers),
    }


def run_room_task(task: dict) -> dict:
    """Simulate one room; write one file per source (channels = microphones)."""
    room = task["room"]
    sr = task["sr"]
    rirs, facts = calibrated_room_rirs(room, sr)
    infos = []
    for source_index, path in enumerate(task["paths"]):
        per_mic = [rirs[mic][source_index] for mic in range(len(rirs))]
        length = max(h.size for h in per_mic)
        channels = np.zeros((length, len(per_mic)))
        for mic, h in enumerate(per_mic):
            channels[: h.size, mic] = h
        channels *= RIR_PEAK / np.max(np.abs(channels))
        write_audio(path, channels[:, 0] if channels.shape[1] == 1 else channels, sr)
        infos.append(
            {
                "rt60_target": round(room["rt60_target"], 4),
                "rt60_measured": round(measured_rt60(channels[:, 0], sr), 4),
                "room_dims": [round(x, 3) for x in room["dims"]],
                "source": [round(x, 3) for x in room["sources"][source_index]],
                "mics": [[round(x, 3) for x in mic] for mic in room["mics"]],
                "sr": sr,
                "channels": channels.shape[1],
                "duration": round(length / sr, 4),
                **facts,
            }
        )
    return {"rirs": infos}


RUNNERS = MappingProxyType(
    {
        "speech": run_speech_task,
        "noise": run_noise_task,
        "babble": run_babble_task,
        "room": run_room_task,
    }
)


def run_task(task: dict):
    """Run one task; returns ``(task id, facts)``. Errors name the task."""
    try:
        return task["id"], RUNNERS[task["kind"]](task)
    except Exception as err:
        raise RuntimeError(f"demo corpus task {task['id']} failed: {err}") from err
