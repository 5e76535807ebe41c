"""Game sound effects from Debian packages: a large, varied set of recorded noises.

Real noise recordings are what an enhancement model needs most and what is
scarcest offline. Free games packaged by Debian ship thousands of recorded
sound effects (footsteps, water, wind, machinery, animals, impacts, crowds,
vehicles, tools) under free licences, and Debian's mirrors are reachable
where OpenSLR is not. ``python -m data_prepare.download game_sfx --out DIR``
fetches the packages of :data:`PACKAGES` (md5 and size pinned from Debian
bookworm's ``Packages`` index), and this module lays out their sound effects
as plain-corpus noise: ``DIR/noise/game_sfx/<package>/<path>_<extension>.wav``.

What is kept (:func:`wanted`, :func:`plan`)
------------------------------------------
* audio members (``.ogg``, ``.wav``, ``.flac``) of the packages' data;
* not music (a ``music`` folder or file name): music is a different kind of
  interference, and game music is mostly synthesised;
* not speech: voice lines would teach the model that speech is noise —
  Hedgewars' ``voices/`` folders and MegaGlest's unit sounds (``units/``
  folders and ``*_ack*``/``*_select*`` files, spoken acknowledgements);
* files of at least :data:`MIN_SECONDS` and above :data:`MIN_RMS` (−80 dBFS).

Each kept file is converted to 16 kHz mono 16-bit WAV (channels averaged,
``scipy.signal.resample_poly``; a file whose peak would exceed 0.99 after
resampling is scaled to peak 0.9), since the data preparation reads WAV and
FLAC only. The packages' ``copyright`` files go to ``meta/game_sfx/<package>/``
(the licences: GPL-2+, LGPL-2.1, CC BY-SA 3.0 depending on the package).

Example
-------
>>> is_voice("usr/share/games/hedgewars/Data/Sounds/voices/Default/Hello.ogg")
True
>>> wanted("./usr/share/games/wesnoth/1.16/data/core/sounds/bat-flapping.wav", {})
True
>>> wanted("./usr/share/games/widelands/data/music/intro_00.ogg", {})
False
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf

from custom_modules.audio.files import resample, write_audio

SR = 16000
MIN_SECONDS = 0.25
MIN_RMS = 1e-4  # -80 dBFS: (near) digital silence
SOURCE_EXTENSIONS = (".ogg", ".wav", ".flac")
DEBIAN_BASE_URL = "https://deb.debian.org/debian"

# (pool path under the mirror, size in bytes, md5): Debian 12 "bookworm", main,
# from its Packages index (``apt-cache show <package>``: Filename, Size, MD5sum).
PACKAGES = (
    ("pool/main/b/bzflag/bzflag-data_2.4.26-1_all.deb", 8_951_664,
     "307e11786e57693d0ce4297ffdb01c55"),
    ("pool/main/e/extremetuxracer/extremetuxracer-data_0.8.2-1_all.deb", 40_596_136,
     "4ffe0dfb8174f1214ce5bd955f9cbdd4"),
    ("pool/main/h/hedgewars/hedgewars-data_1.0.2-6_all.deb", 145_330_284,
     "9bf2cd270ceb5e9db0bfc1dca6f51b7f"),
    ("pool/main/l/lincity-ng/lincity-ng-data_2.9~git20150314-5_all.deb", 44_782_216,
     "42b254e21ae0628c0d8c4366cc8a0ffb"),
    ("pool/main/m/megaglest-data/megaglest-data_3.13.0-3_all.deb", 242_024_888,
     "bcd77e485b8c49d744c1959a0f015abe"),
    ("pool/main/m/minetest/minetest-data_5.6.1+dfsg+~1.9.0mt8+dfsg-2_all.deb", 3_646_524,
     "1d14224fb5209b9dcbd4d1c7a17d81bf"),
    ("pool/main/w/wesnoth-1.16/wesnoth-1.16-data_1.16.9-1_all.deb", 146_229_044,
     "1d01c82a012cba825f19533650aa7baa"),
    ("pool/main/w/widelands/widelands-data_1.1-3_all.deb", 381_353_540,
     "2dc8a8dcfbc94218c704c4ceab327317"),
)  # fmt: skip

logger = logging.getLogger(__name__)
_SPOKEN_FILE = re.compile(r"_(ack|select)\d*\.[a-z0-9]+$")


def package_name(deb_filename: str) -> str:
    """``wesnoth-1.16-data_1.16.9-1_all.deb`` -> ``wesnoth-1.16-data``."""
    return deb_filename.split("_", 1)[0]


def is_voice(member: str) -> bool:
    """Whether a member path holds spoken lines (never laid out as noise)."""
    lower = member.lower()
    return (
        "/voices/" in lower
        or ("megaglest" in lower and "/units/" in lower)
        or _SPOKEN_FILE.search(lower) is not None
    )


def is_music(member: str) -> bool:
    """Whether a member path is game music (a ``music`` folder or name)."""
    return "music" in member.lower()


def is_copyright(member: str) -> bool:
    parts = PurePosixPath(member).parts
    return len(parts) >= 2 and parts[-1] == "copyright" and "doc" in parts


def wanted(member: str, _options: dict) -> bool:
    """Members worth writing out of a package: sound effects and copyright files."""
    if is_copyright(member):
        return True
    return (
        member.lower().endswith(SOURCE_EXTENSIONS) and not is_voice(member) and not is_music(member)
    )


def to_noise_wav(source: Path, dest: Path) -> bool:
    """Write ``source`` as 16 kHz mono 16-bit WAV at ``dest``; False if too short or silent.

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> sf.write(folder / "a.wav", np.full((22050, 2), 0.1), 44100)
    >>> to_noise_wav(folder / "a.wav", folder / "out" / "a.wav")
    True
    >>> info = sf.info(str(folder / "out" / "a.wav"))
    >>> info.samplerate, info.channels, round(info.duration, 3)
    (16000, 1, 0.5)
    """
    audio, sr = sf.read(str(source), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if mono.size < MIN_SECONDS * sr or np.sqrt(np.mean(mono.astype(np.float64) ** 2)) < MIN_RMS:
        return False
    out = resample(mono, sr, SR)
    peak = float(np.max(np.abs(out)))
    if peak > 0.99:  # resampling overshoot or a clipped original: no wrap-around in PCM
        out = out * (0.9 / peak)
    write_audio(dest, out, SR)
    return True


def _inner_path(rel: PurePosixPath) -> PurePosixPath:
    """A member's path without the ``usr/share/(games/)`` prefix."""
    parts = rel.parts
    for prefix in (("usr", "share", "games"), ("usr", "share")):
        if parts[: len(prefix)] == prefix and len(parts) > len(prefix):
            return PurePosixPath(*parts[len(prefix) :])
    return rel


def plan(scratch: Path, options: dict) -> list[tuple[Path, str]]:
    """Convert the extracted sound effects in ``scratch`` and say where each goes.

    ``scratch/<deb file name>/`` holds each package's wanted members (as
    extracted by ``data_prepare.download``); converted WAVs are written beside
    them under ``scratch/converted/``. Returns ``(file, destination relative to
    the corpus root)`` pairs.
    """
    moves = []
    converted = scratch / "converted"
    for package_dir in sorted(p for p in scratch.iterdir() if p.name.endswith(".deb")):
        package = package_name(package_dir.name)
        for path in sorted(p for p in package_dir.rglob("*") if p.is_file()):
            rel = PurePosixPath(path.relative_to(package_dir).as_posix())
            if is_copyright(rel.as_posix()):
                moves.append((path, f"meta/game_sfx/{package}/copyright"))
                continue
            inner = _inner_path(rel)  # x.ogg -> x_ogg.wav: packages hold x.ogg beside x.wav
            inner = inner.with_name(f"{inner.stem}_{inner.suffix[1:].lower()}.wav")
            dest = converted / package / inner
            try:
                if to_noise_wav(path, dest):
                    moves.append((dest, f"noise/game_sfx/{package}/{inner.as_posix()}"))
            except (sf.LibsndfileError, RuntimeError, ValueError) as err:
                # one undecodable effect among a thousand is skipped, not fatal
                logger.warning("%s: %s: not decodable, skipped (%s)", package, rel, err)
            path.unlink()  # the scratch copy: converted or dropped
    return moves
