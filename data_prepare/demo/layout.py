"""Plan (what goes where) and sidecar files of the demo corpus (private helper of ``demo.py``).

``build_plan`` draws everything random in the main process from one seed
(voices, sentences, noise levels and durations, room geometry) and gives every
task its own child ``SeedSequence``; the tasks then only render audio.
``write_sidecars`` writes the text files of the real layouts (LibriSpeech
``*.trans.txt`` and ``SPEAKERS.TXT``, MUSAN ``ANNOTATIONS``, SLR26/SLR28
``rir_list``) and the demo's own ``demo_info.json`` / ``rir_info.json``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from custom_modules.audio.files import atomic_write_json, atomic_write_text
from data_prepare.demo.noise import NOISE_KINDS
from data_prepare.demo.rooms import draw_room
from data_prepare.demo.speech import draw_voice_profiles
from data_prepare.demo.text import make_sentence, make_transcript

SR = 16000
SLR26_SR = 48000  # the real SLR26 "simulated_rirs_48k" is at 48 kHz
FIRST_SPEAKER_ID = 9001  # above the real LibriSpeech ids
LIBRISPEECH_SPLITS = (("train", "train-clean-100"), ("dev", "dev-clean"), ("test", "test-clean"))
MUSAN_SOURCES = ("free-sound", "sound-bible")
NOISE_LEVEL_DB = (-35.0, -15.0)
SLR26_DIR = Path("impulse_responses_all/SLR26/simulated_rirs_48k/smallroom")
SLR28_DIR = Path("impulse_responses_all/SLR28/RIRS_NOISES/real_rirs_isotropic_noises")


def _speaker_plan(out, size, voices, text_rng, speech_seeds, espeak):
    """Speakers with their chapters/utterances, and one synthesis task per utterance."""
    speakers, tasks = [], []
    speaker_index, book = 0, 0
    counts = {"train": size.train_speakers, "dev": size.dev_speakers, "test": size.test_speakers}
    for split, split_dir in LIBRISPEECH_SPLITS:
        for _ in range(counts[split]):
            speaker_id = FIRST_SPEAKER_ID + speaker_index
            profile = voices[speaker_index]
            chapters = []
            for local in range(size.chapters_per_speaker):
                book += 1
                chapters.append(
                    {"chapter": speaker_id * 100 + local, "book": book, "local": local + 1}
                )
            utterances = []
            for utt in range(size.utts_per_speaker):
                chapter = chapters[utt % len(chapters)]
                index = utt // len(chapters)
                key = f"{speaker_id}-{chapter['chapter']}-{index:04d}"
                sentence = make_sentence(text_rng)
                flac = (
                    Path("LibriSpeech")
                    / split_dir
                    / str(speaker_id)
                    / str(chapter["chapter"])
                    / f"{key}.flac"
                )
                wav = (
                    Path("clean_train/read_speech")
                    / f"book_{chapter['book']:05d}_chp_{chapter['local']:04d}"
                    f"_reader_{speaker_id:05d}_{index}_seg_1.wav"
                )
                utterances.append(
                    {"key": key, "chapter": chapter["chapter"], "text": sentence, "flac": flac}
                )
                tasks.append(
                    {
                        "id": f"speech:{key}",
                        "kind": "speech",
                        "seed": speech_seeds[len(tasks)],
                        "profile": profile.to_dict(),
                        "text": sentence,
                        "paths": [str(out / wav), str(out / flac)],
                        "sr": SR,
                        "espeak": espeak,
                    }
                )
            speakers.append(
                {
                    "id": str(speaker_id),
                    "split": split,
                    "librispeech_split": split_dir,
                    "profile": profile,
                    "chapters": [c["chapter"] for c in chapters],
                    "utterances": utterances,
                }
            )
            speaker_index += 1
    return speakers, tasks


def _noise_plan(out, size, babble_voices, noise_rng, noise_seeds, espeak):
    """Noise clips alternating between the two MUSAN sources; one task per clip."""
    clips, tasks = [], []
    per_source = dict.fromkeys(MUSAN_SOURCES, 0)
    for _ in range(size.noise_clips):
        for kind in NOISE_KINDS:
            source = MUSAN_SOURCES[len(clips) % len(MUSAN_SOURCES)]
            name = f"noise-{source}-{per_source[source]:04d}.wav"
            per_source[source] += 1
            rel = Path("musan/noise") / source / name
            duration = round(float(noise_rng.uniform(*size.noise_seconds)), 3)
            level_db = round(float(noise_rng.uniform(*NOISE_LEVEL_DB)), 2)
            task = {
                "id": f"noise:{rel}",
                "kind": "noise",
                "seed": noise_seeds[len(clips)],
                "noise_kind": kind,
                "duration": duration,
                "level_db": level_db,
                "path": str(out / rel),
                "sr": SR,
            }
            if kind == "babble":
                num_talkers = int(noise_rng.integers(3, min(6, len(babble_voices)) + 1))
                chosen = noise_rng.choice(len(babble_voices), size=num_talkers, replace=False)
                sentences_per_talker = math.ceil(duration / 3.0) + 1
                task.update(
                    kind="babble",
                    talkers=[babble_voices[int(i)].to_dict() for i in chosen],
                    texts=[
                        [make_sentence(noise_rng) for _ in range(sentences_per_talker)]
                        for _ in chosen
                    ],
                    espeak=espeak,
                )
            clips.append({"path": rel, "kind": kind, "source": source})
            tasks.append(task)
    return clips, tasks


def _room_plan(out, size, room_rng, real_room_rng):
    """SLR26 rooms (several sources each, 48 kHz) and SLR28 two-microphone rooms (16 kHz)."""
    rooms, tasks = [], []
    remaining = size.rirs
    room_number = 0
    while remaining > 0:
        room_number += 1
        num_sources = min(size.rirs_per_room, remaining)
        remaining -= num_sources
        room = draw_room(room_rng, num_sources=num_sources)
        name = f"Room{room_number:03d}"
        rels = [SLR26_DIR / name / f"{name}-{s + 1:05d}.wav" for s in range(num_sources)]
        task_id = f"room:SLR26:{name}"
        rooms.append(
            {"set": "SLR26", "room_id": f"smallroom-{name}", "rels": rels, "task_id": task_id}
        )
        tasks.append(
            {
                "id": task_id,
                "kind": "room",
                "room": room,
                "paths": [str(out / rel) for rel in rels],
                "sr": SLR26_SR,
            }
        )
    for number in range(1, size.real_rirs + 1):
        room = draw_room(real_room_rng, num_sources=1, num_mics=2)
        rel = SLR28_DIR / f"demo_type1_rir_room{number:02d}_pair.wav"
        task_id = f"room:SLR28:{number:02d}"
        rooms.append(
            {"set": "SLR28", "room_id": f"demo_room{number:02d}", "rels": [rel], "task_id": task_id}
        )
        tasks.append(
            {
                "id": task_id,
                "kind": "room",
                "room": room,
                "paths": [str(out / rel)],
                "sr": SR,
            }
        )
    return rooms, tasks


def build_plan(out: Path, seed: int, size, espeak: str) -> dict:
    """Everything to generate, drawn from ``seed``; tasks ordered longest first.

    Returns
    -------
    dict
        ``tasks`` (list of task dicts for ``tasks.run_task``), ``speakers``,
        ``babble_voices``, ``noise`` and ``rooms`` (for ``write_sidecars``).
    """
    streams = np.random.SeedSequence(seed).spawn(7)
    voice_seq, text_seq, speech_seq, noise_seq, noise_task_seq, room_seq, real_room_seq = streams
    num_speakers = size.train_speakers + size.dev_speakers + size.test_speakers
    voices = draw_voice_profiles(
        np.random.default_rng(voice_seq), num_speakers + size.babble_voices
    )
    speakers, speech_tasks = _speaker_plan(
        out,
        size,
        voices,
        np.random.default_rng(text_seq),
        speech_seq.spawn(num_speakers * size.utts_per_speaker),
        espeak,
    )
    babble_voices = voices[num_speakers:]
    noise, noise_tasks = _noise_plan(
        out,
        size,
        babble_voices,
        np.random.default_rng(noise_seq),
        noise_task_seq.spawn(size.noise_clips * len(NOISE_KINDS)),
        espeak,
    )
    rooms, room_tasks = _room_plan(
        out, size, np.random.default_rng(room_seq), np.random.default_rng(real_room_seq)
    )
    babble_tasks = [t for t in noise_tasks if t["kind"] == "babble"]
    other_noise = [t for t in noise_tasks if t["kind"] != "babble"]
    return {
        # Longest tasks first so that the pool's workers finish together.
        "tasks": room_tasks + babble_tasks + other_noise + speech_tasks,
        "speakers": speakers,
        "babble_voices": babble_voices,
        "noise": noise,
        "rooms": rooms,
    }


def _write_librispeech_text(out: Path, speakers: list, results: dict) -> None:
    """``<spk>-<chapter>.trans.txt`` per chapter and ``SPEAKERS.TXT``."""
    lines = [";ID    |SEX| SUBSET           |MINUTES| NAME"]
    for speaker in speakers:
        by_chapter = {}
        for utt in speaker["utterances"]:
            by_chapter.setdefault(utt["chapter"], []).append(utt)
        for chapter, utts in by_chapter.items():
            folder = out / utts[0]["flac"].parent
            text = "".join(f"{u['key']} {make_transcript(u['text'])}\n" for u in utts)
            atomic_write_text(folder / f"{speaker['id']}-{chapter}.trans.txt", text)
        seconds = sum(results[f"speech:{u['key']}"]["duration"] for u in speaker["utterances"])
        profile = speaker["profile"]
        lines.append(
            f"{speaker['id']:<6}| {profile.sex} | {speaker['librispeech_split']:<17}|"
            f" {seconds / 60:5.2f} | {profile.describe()}"
        )
    atomic_write_text(out / "LibriSpeech" / "SPEAKERS.TXT", "\n".join(lines) + "\n")


def _write_rir_text(out: Path, rooms: list, results: dict) -> dict:
    """Kaldi-style ``rir_list`` and ``rir_info.json`` per RIR folder; returns all RIR facts."""
    all_infos, per_folder = {}, {}
    for room in rooms:
        folder = SLR26_DIR if room["set"] == "SLR26" else SLR28_DIR
        for rel, info in zip(room["rels"], results[room["task_id"]]["rirs"], strict=True):
            entry = {"path": rel.relative_to(folder).as_posix(), "room_id": room["room_id"], **info}
            # Kaldi's rir_list ids carry the room type prefix ("smallroom-Room001-00001").
            rir_id = f"smallroom-{rel.stem}" if room["set"] == "SLR26" else rel.stem
            per_folder.setdefault(folder, {})[rir_id] = entry
            all_infos[rel.as_posix()] = entry
    for folder, infos in per_folder.items():
        corpus_dir = folder.parent if folder == SLR26_DIR else folder.parent.parent
        lines = [
            f"--rir-id {rir_id} --room-id {info['room_id']} "
            f"{(folder / info['path']).relative_to(corpus_dir).as_posix()}"
            for rir_id, info in infos.items()
        ]
        atomic_write_text(out / folder / "rir_list", "\n".join(lines) + "\n")
        atomic_write_json(out / folder / "rir_info.json", infos)
    return all_infos


def write_sidecars(out: Path, plan: dict, results: dict, options: dict) -> None:
    """Write every text/JSON file of the tree (deterministic: no timestamps)."""
    _write_librispeech_text(out, plan["speakers"], results)
    noise_info = {}
    annotations = {source: [] for source in MUSAN_SOURCES}
    for clip in plan["noise"]:
        facts = results[f"noise:{clip['path']}"]
        noise_info[clip["path"].as_posix()] = {"kind": clip["kind"], **facts}
        annotations[clip["source"]].append(
            f"{clip['path'].stem} {clip['kind']} (synthetic demo noise, RMS {facts['level_db']} dB)"
        )
    for source, lines in annotations.items():
        if lines:
            atomic_write_text(
                out / "musan" / "noise" / source / "ANNOTATIONS", "\n".join(lines) + "\n"
            )
    rir_info = _write_rir_text(out, plan["rooms"], results)
    speakers = {
        s["id"]: {
            "split": s["split"],
            "librispeech_split": s["librispeech_split"],
            "voice": s["profile"].to_dict(),
            "chapters": s["chapters"],
            "utterances": len(s["utterances"]),
        }
        for s in plan["speakers"]
    }
    atomic_write_json(
        out / "demo_info.json",
        {
            "options": options,
            "speakers": speakers,
            "babble_voices": [v.to_dict() for v in plan["babble_voices"]],
            "noise": noise_info,
            "rirs": rir_info,
        },
    )
