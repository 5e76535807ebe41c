"""Download OpenSLR corpora (and Debian's game sounds) and lay them out as a plain corpus root.

``python -m data_prepare.download NAME [NAME ...] --out DIR`` fetches each
corpus' archives, checks them, extracts them safely and moves the audio into
one *plain corpus root*::

    DIR/speech/<speaker>/**/*.wav|flac   (speaker = first folder under speech/)
    DIR/noise/**/*.wav|flac
    DIR/rir/**/*.wav|flac
    DIR/meta/<name>/...                   (the corpus' text files: README, transcripts, scores)
    DIR/.downloads/                       (archives, partial downloads, scratch, done markers)

Several corpora can be downloaded into the same ``DIR``; each adds its files
(their paths are disjoint), e.g. ``speechocean762`` then ``rirs_noises`` into
``data/real`` gives one root with speech, noise and RIRs.
``python -m data_prepare.download --list`` prints the corpora, sizes and licences.

Corpora (``NAME``: archives -> layout)
---------------------------------------
``speechocean762`` (OpenSLR 101, CC BY 4.0)
    ``speechocean762.tar.gz``: ``speechocean762/WAVE/SPEAKERxxxx/*.WAV``
    (16 kHz read English by 250 Mandarin-L1 speakers, children and adults)
    -> ``speech/SPEAKERxxxx/*.WAV``; every other file of the archive (README,
    ``train/``, ``test/``, ``resource/`` scores) -> ``meta/speechocean762/``.
``mini_librispeech`` (OpenSLR 31, CC BY 4.0)
    ``dev-clean-2.tar.gz`` and ``train-clean-5.tar.gz``:
    ``LibriSpeech/<subset>/<speaker>/<chapter>/*.flac`` (16 kHz) ->
    ``speech/<speaker>/<chapter>/*.flac``, with the ``*.trans.txt`` transcripts
    left beside the audio (not audio: the scanner ignores them). Both subsets
    share ``speech/``: LibriSpeech subsets have disjoint speakers, so no
    speaker folder mixes them (a path claimed twice is refused).
    ``LibriSpeech/*.TXT`` -> ``meta/mini_librispeech/<subset>/``.
``rirs_noises`` (OpenSLR 28, Apache 2.0)
    ``rirs_noises.zip``: ``RIRS_NOISES/real_rirs_isotropic_noises/`` holds the
    real RIRs *and* the isotropic noise recordings of the same rooms; its
    Kaldi list files say which is which (one entry a line, options then the
    path relative to the folder holding ``RIRS_NOISES``)::

        rir_list:   --rir-id <id> --room-id <room> RIRS_NOISES/real_rirs_isotropic_noises/<file>.wav
        noise_list: --noise-id <id> --noise-type isotropic --room-linkage <room> RIRS_NOISES/.../<file>.wav

    Files in ``rir_list`` -> ``rir/real/``, files in ``noise_list`` ->
    ``noise/isotropic/``; a file in neither list (or every file, if the lists
    are missing) is sorted by name like :mod:`data_prepare.rirs` does (a
    ``noise`` token -> isotropic noise, else RIR). ``RIRS_NOISES/pointsource_noises/*.wav``
    (MUSAN free-sound clips, with a ``noise_list`` of ``--noise-type point-source``
    entries) -> ``noise/pointsource/``. ``RIRS_NOISES/simulated_rirs/<size>room/RoomNNN/*.wav``
    (60,000 simulated RIRs, also OpenSLR 26) -> ``rir/simulated/`` only with
    ``--simulated_rirs`` (off by default: they are not extracted).
    Lists and READMEs -> ``meta/rirs_noises/``. Real RIRs may have several
    channels; data preparation keeps channel 0.
``game_sfx`` (Debian bookworm packages; GPL-2+, LGPL-2.1, CC BY-SA 3.0 by package)
    8 ``*-data_*.deb`` packages of free games (``ar`` archives whose
    ``data.tar.xz`` is read): their recorded sound effects, without music and
    voice lines, converted to 16 kHz mono WAV -> ``noise/game_sfx/<package>/...``;
    their ``copyright`` files -> ``meta/game_sfx/<package>/``. About 1,000
    files, 47 minutes; see :mod:`data_prepare.game_sounds`.

Checksums and their sources
---------------------------
Every archive is checked against the md5 its publisher lists, when there is
one, and against its byte size; the sources are recorded beside each pin in
:data:`CORPORA`:

* ``dev-clean-2.tar.gz`` md5 ``6d7ab67ac6a1d2c993d050e16d61080d`` (126,046,265 bytes)
  and ``train-clean-5.tar.gz`` md5 ``5df7d4e78065366204ca6845bb08f490``
  (332,954,390 bytes): OpenSLR's ``https://www.openslr.org/resources/31/md5sum.txt``,
  the same pins as PaddleSpeech's ``dataset/mini_librispeech/mini_librispeech.py``;
  sizes from Kaldi's ``egs/mini_librispeech/s5/local/download_and_untar.sh``.
* ``rirs_noises.zip`` md5 ``e6f48e257286e05de56413b4779d8ffb``: pinned by
  PaddleSpeech (``paddlespeech/audio/datasets/rirs_noises.py``) and WeSpeaker
  (``examples/voxceleb/v2/local/download_data.sh``); size 1,311,166,223 bytes
  as reported by several independent downloads (not published by OpenSLR).
* ``game_sfx``: the md5 and size of each package from Debian bookworm's
  ``Packages`` index (what ``apt-cache show <package>`` prints as MD5sum and Size).
* ``speechocean762.tar.gz``: **no published checksum was found** (OpenSLR 101
  lists none; Kaldi's recipe checks only the size). It is checked against the
  size pinned by Kaldi's ``egs/gop_speechocean762/s5/local/download_and_untar.sh``
  (520,810,923 bytes) and by a full read of the archive (every member
  decompressed, the gzip CRC and length checked); the md5 observed is recorded
  in the done marker.

A checksum mismatch renames the file ``<archive>.bad`` and raises an error
naming the archive and both checksums (run the command again to download it
anew). A server file whose size differs from the pinned one is refused before
downloading. A damaged or truncated archive (which also fails the full read
of extraction) is renamed ``.bad`` the same way; nothing of it is laid out.

Resume, skip-if-done, clean-up
------------------------------
Archives download to ``DIR/.downloads/<archive>.part``; an interrupted
download resumes with an HTTP ``Range: bytes=<n>-`` request (a ``206`` answer
appends, a ``200`` answer means the server cannot resume and the download
starts over, a ``416`` answer means the part is already complete). Dropped
connections are retried ``retries`` times (3) with a growing pause; after
that the ``.part`` file stays and the next run resumes it.

Extraction goes to a scratch folder ``DIR/.downloads/<name>.extract/``
(members with absolute paths, ``..`` components, or links pointing out of the
archive are refused; other links and special files are skipped), then the
files are moved into place (same file system: renames) and the marker
``DIR/.downloads/<name>.done.json`` is written last, atomically (name,
archives with their URLs, sizes and checksums, options, and the list of files
laid out). A later call finds the marker and prints "already downloaded"
without touching the network, unless a recorded file has gone (then the
layout is redone, from a kept archive or a new download) or other options
are asked for. By default each archive is deleted after a successful layout
(``--keep_archives`` keeps them, so that a redone layout does not download
again); ``DIR/.downloads/`` can be deleted once all is done (a later call then
downloads again). The audio scanner of :mod:`data_prepare.common` ignores
hidden folders, so ``.downloads`` never reaches a manifest.

Example
-------
``python -m data_prepare.download speechocean762 rirs_noises --out data/real``
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import http.client
import io
import lzma
import os
import posixpath
import re
import shutil
import stat
import sys
import tarfile
import time
import traceback
import urllib.error
import urllib.request
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from custom_modules.audio.files import AUDIO_EXTENSIONS, atomic_write_json, read_json
from data_prepare import game_sounds

DEFAULT_BASE_URL = "https://www.openslr.org/resources"
DOWNLOADS = ".downloads"
LAYOUT_VERSION = 1
TIMEOUT_S = 60.0
RETRY_WAIT_S = 2.0  # pause before retry k (0-based): RETRY_WAIT_S * 2**k
_CHUNK = 1 << 16
_USER_AGENT = "sb-enhance-download/1 (python urllib)"


class DownloadError(RuntimeError):
    """A download, check or layout that failed; the message says what to do."""


class _Interrupted(Exception):
    """A transfer that stopped early and can be resumed (retried)."""


@dataclass(frozen=True)
class Archive:
    """One archive of a corpus.

    Arguments
    ---------
    filename : str
        File name on the server (``<base_url>/<resource>/<filename>``) and on disk.
    size : int, optional
        Pinned size in bytes; None: not known.
    md5 : str, optional
        Published md5; None: none published (integrity check only).
    source : str
        Where ``md5`` and ``size`` come from.
    url_path : str, optional
        Path under the base URL when it is not ``<resource>/<filename>``
        (Debian's ``pool/main/...``).
    """

    filename: str
    size: int | None
    md5: str | None
    source: str
    url_path: str | None = None


@dataclass(frozen=True)
class Corpus:
    """A downloadable corpus: where it is (OpenSLR resource or mirror), archives and layout."""

    name: str
    title: str
    resource: int | None  # OpenSLR resource number; None: archives give their url_path
    licence: str
    content: str
    archives: tuple[Archive, ...]
    plan: Callable  # plan(scratch, options) -> [(source file, destination relative path)]
    wanted: Callable  # wanted(member path, options) -> bool (False: read but not written)
    base_url: str = DEFAULT_BASE_URL
    where: str = ""  # shown by --list (default: SLR<resource>)


# --------------------------------------------------------------------------- layouts


def _is_audio(name: str) -> bool:
    return name.lower().endswith(AUDIO_EXTENSIONS)


def _files_under(folder: Path) -> list[Path]:
    found = []
    for root, _dirs, files in os.walk(folder):
        found.extend(Path(root) / name for name in files)
    return sorted(found)


def _require_dir(folder: Path, archive: str, scratch_root: Path) -> Path:
    if not folder.is_dir():
        inside = sorted(p.name for p in scratch_root.iterdir()) if scratch_root.is_dir() else []
        raise DownloadError(
            f"{archive}: unexpected layout, no folder {folder.relative_to(scratch_root)} "
            f"inside (top level: {', '.join(inside) or 'nothing'})"
        )
    return folder


def _always(_member: str, _options: dict) -> bool:
    return True


def _plan_speechocean762(scratch: Path, options: dict) -> list[tuple[Path, str]]:
    archive = "speechocean762.tar.gz"
    root = scratch / archive
    corpus = _require_dir(root / "speechocean762", archive, root)
    wave = _require_dir(corpus / "WAVE", archive, root)
    moves = []
    for path in _files_under(corpus):
        rel = path.relative_to(corpus)
        if path.is_relative_to(wave) and _is_audio(path.name):
            inner = path.relative_to(wave)
            if len(inner.parts) < 2:  # no speaker folder: not laid out
                continue
            moves.append((path, f"speech/{inner.as_posix()}"))
        elif not _is_audio(path.name):
            moves.append((path, f"meta/speechocean762/{rel.as_posix()}"))
    return moves


def _plan_mini_librispeech(scratch: Path, options: dict) -> list[tuple[Path, str]]:
    moves = []
    for archive in CORPORA["mini_librispeech"].archives:
        subset = archive.filename.removesuffix(".tar.gz")
        root = scratch / archive.filename
        libri = _require_dir(root / "LibriSpeech", archive.filename, root)
        subset_dir = _require_dir(libri / subset, archive.filename, root)
        for path in _files_under(libri):
            if path.is_relative_to(subset_dir):
                inner = path.relative_to(subset_dir)
                if len(inner.parts) < 2:  # no speaker folder
                    continue
                moves.append((path, f"speech/{inner.as_posix()}"))
            elif not _is_audio(path.name):
                rel = path.relative_to(libri).as_posix()
                moves.append((path, f"meta/mini_librispeech/{subset}/{rel}"))
    return moves


def _list_entries(list_file: Path, corpus_root: Path) -> set[str]:
    """Paths (relative to ``RIRS_NOISES/``) named by a Kaldi rir_list/noise_list."""
    entries = set()
    for line in list_file.read_text(encoding="utf-8", errors="replace").splitlines():
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        parts = PurePosixPath(tokens[-1].replace("\\", "/")).parts
        if "RIRS_NOISES" in parts:
            rel = PurePosixPath(*parts[parts.index("RIRS_NOISES") + 1 :])
        else:  # relative to the list's own folder
            rel = PurePosixPath(list_file.parent.relative_to(corpus_root).as_posix(), *parts)
        entries.add(rel.as_posix())
    return entries


def _name_says_noise(path: Path) -> bool:
    return "noise" in path.stem.lower().split("_")


def _plan_rirs_noises(scratch: Path, options: dict) -> list[tuple[Path, str]]:
    archive = "rirs_noises.zip"
    root = scratch / archive
    corpus = _require_dir(root / "RIRS_NOISES", archive, root)
    real = _require_dir(corpus / "real_rirs_isotropic_noises", archive, root)
    point = _require_dir(corpus / "pointsource_noises", archive, root)
    simulated = corpus / "simulated_rirs"
    rir_list, noise_list = real / "rir_list", real / "noise_list"
    listed_rirs = _list_entries(rir_list, corpus) if rir_list.is_file() else set()
    listed_noises = _list_entries(noise_list, corpus) if noise_list.is_file() else set()
    moves = []
    for path in _files_under(corpus):
        rel = path.relative_to(corpus).as_posix()
        if not _is_audio(path.name):
            moves.append((path, f"meta/rirs_noises/{rel}"))
        elif path.is_relative_to(real):
            inner = path.relative_to(real).as_posix()
            if rel in listed_rirs:
                is_noise = False
            elif rel in listed_noises:
                is_noise = True
            else:
                is_noise = _name_says_noise(path)
            moves.append((path, f"noise/isotropic/{inner}" if is_noise else f"rir/real/{inner}"))
        elif path.is_relative_to(point):
            moves.append((path, f"noise/pointsource/{path.relative_to(point).as_posix()}"))
        elif path.is_relative_to(simulated) and options.get("simulated_rirs"):
            moves.append((path, f"rir/simulated/{path.relative_to(simulated).as_posix()}"))
    return moves


def _rirs_noises_wanted(member: str, options: dict) -> bool:
    """Simulated RIR audio is only written with ``simulated_rirs`` (saves 60,000 files)."""
    parts = PurePosixPath(member).parts
    return options.get("simulated_rirs") or not (
        len(parts) > 2 and parts[1] == "simulated_rirs" and _is_audio(member)
    )


_MINI_LIBRI_SOURCE = (
    "md5: https://www.openslr.org/resources/31/md5sum.txt (also PaddleSpeech "
    "dataset/mini_librispeech/mini_librispeech.py); size: Kaldi "
    "egs/mini_librispeech/s5/local/download_and_untar.sh"
)

CORPORA = {
    "speechocean762": Corpus(
        name="speechocean762",
        title="speechocean762: non-native English read speech",
        resource=101,
        licence="CC BY 4.0",
        content="speech: 5,000 utterances of 250 Mandarin-L1 speakers (16 kHz)",
        archives=(
            Archive(
                "speechocean762.tar.gz",
                size=520_810_923,
                md5=None,
                source="no published checksum found; size: Kaldi "
                "egs/gop_speechocean762/s5/local/download_and_untar.sh (ref_size)",
            ),
        ),
        plan=_plan_speechocean762,
        wanted=_always,
    ),
    "mini_librispeech": Corpus(
        name="mini_librispeech",
        title="Mini LibriSpeech (dev-clean-2, train-clean-5)",
        resource=31,
        licence="CC BY 4.0",
        content="speech: LibriSpeech subsets dev-clean-2 and train-clean-5 (16 kHz flac)",
        archives=(
            Archive(
                "dev-clean-2.tar.gz",
                size=126_046_265,
                md5="6d7ab67ac6a1d2c993d050e16d61080d",
                source=_MINI_LIBRI_SOURCE,
            ),
            Archive(
                "train-clean-5.tar.gz",
                size=332_954_390,
                md5="5df7d4e78065366204ca6845bb08f490",
                source=_MINI_LIBRI_SOURCE,
            ),
        ),
        plan=_plan_mini_librispeech,
        wanted=_always,
    ),
    "rirs_noises": Corpus(
        name="rirs_noises",
        title="Room Impulse Response and Noise Database",
        resource=28,
        licence="Apache 2.0",
        content="rir: 325 real RIRs (+60,000 simulated with --simulated_rirs); "
        "noise: isotropic room noises, 843 point-source noises",
        archives=(
            Archive(
                "rirs_noises.zip",
                size=1_311_166_223,
                md5="e6f48e257286e05de56413b4779d8ffb",
                source="md5: PaddleSpeech paddlespeech/audio/datasets/rirs_noises.py and "
                "WeSpeaker examples/voxceleb/v2/local/download_data.sh; size: observed by "
                "independent downloads (not published)",
            ),
        ),
        plan=_plan_rirs_noises,
        wanted=_rirs_noises_wanted,
    ),
    "game_sfx": Corpus(
        name="game_sfx",
        title="Sound effects of free games packaged by Debian (bookworm)",
        resource=None,
        licence="GPL/CC BY-SA",
        content="noise: about 1,000 recorded sound effects of 8 games (no music, no voices), "
        "as 16 kHz WAV",
        archives=tuple(
            Archive(
                PurePosixPath(pool_path).name,
                size=size,
                md5=md5,
                source="Debian bookworm Packages index (MD5sum, Size)",
                url_path=pool_path,
            )
            for pool_path, size, md5 in game_sounds.PACKAGES
        ),
        plan=game_sounds.plan,
        wanted=game_sounds.wanted,
        base_url=game_sounds.DEBIAN_BASE_URL,
        where="Debian",
    ),
}


# --------------------------------------------------------------------------- download


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, flush=True)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` of a Content-Range header (None where absent or ``*``)."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None), (int(total) if total and total != "*" else None)


def _refuse_size(url: str, filename: str, server: int, pinned: int) -> DownloadError:
    return DownloadError(
        f"{filename}: the server's file ({url}) is {server:,} bytes but {pinned:,} bytes are "
        "pinned for it: the published archive may have changed; nothing was laid out"
    )


def _transfer(url: str, part: Path, filename: str, expected_size, quiet: bool) -> None:
    """One request for ``url`` into ``part`` (appending when the server resumes).

    Raises ``_Interrupted`` when the transfer stops early (to be resumed) and
    ``DownloadError`` for anything a retry cannot fix.
    """
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            _, total = _content_range(err.headers.get("Content-Range"))
            known = total if total is not None else expected_size
            if known is None or known == have:
                return  # the part already holds the whole file
            part.unlink()
            raise _Interrupted(
                f"{part.name} ({have} bytes) does not match the server's file"
            ) from err
        if err.code >= 500:
            raise _Interrupted(f"HTTP {err.code} {err.reason}") from err
        raise DownloadError(
            f"{filename}: download failed, HTTP {err.code} {err.reason} for {url}"
        ) from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise _Interrupted(f"cannot reach {url}: {reason}") from err

    with response:
        if have and response.status == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != have:
                part.unlink()
                raise _Interrupted(f"server resumed at byte {first}, not {have}; starting over")
            mode = "ab"
        else:
            if have:
                _say(f"{filename}: the server does not resume downloads; starting over", quiet)
            have, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if expected_size is not None and total is not None and total != expected_size:
            part.unlink(missing_ok=True)
            raise _refuse_size(url, filename, total, expected_size)
        bar = tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=filename,
            disable=quiet,
            dynamic_ncols=True,
        )
        with open(part, mode) as handle, bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as err:
                    raise _Interrupted(f"connection lost ({type(err).__name__}: {err})") from err
                if not chunk:
                    break
                handle.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    limit = total if total is not None else expected_size
    if limit is not None and size < limit:
        raise _Interrupted(f"connection closed after {size:,} of {limit:,} bytes")
    if limit is not None and size > limit:
        part.unlink()
        raise DownloadError(
            f"{filename}: received {size:,} bytes, more than the {limit:,} expected; "
            "the partial file was deleted, run the command again"
        )


def _fetch(url: str, dest: Path, expected_size, quiet: bool, retries: int) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming and retrying."""
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, dest.name, expected_size, quiet)
            break
        except _Interrupted as err:
            if attempt == retries:
                kept = f"{part} kept: " if part.exists() else ""
                raise DownloadError(
                    f"{dest.name}: download interrupted ({err}); {kept}run the command again "
                    "to resume"
                ) from err
            wait = RETRY_WAIT_S * 2**attempt
            _say(f"{dest.name}: {err}; retrying in {wait:g} s", quiet)
            time.sleep(wait)
    os.replace(part, dest)


def _md5(path: Path, quiet: bool) -> str:
    digest = hashlib.md5()
    bar = tqdm(
        total=path.stat().st_size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"md5 {path.name}",
        disable=quiet,
        dynamic_ncols=True,
    )
    with open(path, "rb") as handle, bar:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _set_aside(path: Path) -> Path:
    bad = path.with_name(path.name + ".bad")
    os.replace(path, bad)
    return bad


def _check(path: Path, archive: Archive, quiet: bool) -> tuple[str | None, str | None]:
    """``(problem, md5)`` of a complete archive file: problem None when size and md5 match."""
    size = path.stat().st_size
    if archive.size is not None and size != archive.size:
        return f"size {size:,} bytes, expected {archive.size:,}", None
    actual = _md5(path, quiet)
    if archive.md5 is not None and actual != archive.md5.lower():
        return f"md5 {actual}, expected {archive.md5}", actual
    return None, actual


def _obtain(archive: Archive, url: str, downloads: Path, quiet: bool, retries: int) -> dict:
    """A verified archive in ``downloads`` (reused or downloaded); its record."""
    path = downloads / archive.filename
    if path.exists():
        problem, md5 = _check(path, archive, quiet)
        if problem is None:
            _say(f"{archive.filename}: using the archive already downloaded", quiet)
            return _archive_record(archive, url, path, md5)
        bad = _set_aside(path)
        _say(f"{archive.filename}: existing file has {problem}; moved to {bad}, downloading", quiet)
    _fetch(url, path, archive.size, quiet, retries)
    problem, md5 = _check(path, archive, quiet)
    if problem is not None:
        bad = _set_aside(path)
        raise DownloadError(
            f"{archive.filename}: checksum mismatch ({problem}; {url}); the file was moved to "
            f"{bad}. Run the command again to download it anew"
        )
    return _archive_record(archive, url, path, md5)


def _archive_record(archive: Archive, url: str, path: Path, md5: str) -> dict:
    return {
        "file": archive.filename,
        "url": url,
        "bytes": path.stat().st_size,
        "md5": md5,
        "md5_expected": archive.md5,
        "checksum_source": archive.source,
    }


# --------------------------------------------------------------------------- extraction


def _member_path(name: str, archive: str) -> PurePosixPath | None:
    """The safe relative path of an archive member, None for the root itself."""
    normalized = name.replace("\\", "/")
    parts = PurePosixPath(normalized).parts
    if normalized.startswith("/") or re.match(r"[A-Za-z]:", normalized) or ".." in parts:
        raise DownloadError(
            f"{archive}: refusing unsafe member {name!r} (absolute path or '..'); "
            "nothing was laid out"
        )
    parts = [p for p in parts if p not in ("", ".")]
    return PurePosixPath(*parts) if parts else None


def _check_link(member: PurePosixPath, target: str, archive: str, from_root=False) -> None:
    """Refuse a link whose target leaves the archive (links themselves are skipped)."""
    target = target.replace("\\", "/")
    base = "" if from_root else posixpath.dirname(member.as_posix())
    resolved = posixpath.normpath(posixpath.join(base, target))
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise DownloadError(
            f"{archive}: refusing member {member.as_posix()!r}, a link pointing outside the "
            f"archive ({target!r}); nothing was laid out"
        )


def _write_member(source, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as handle:
        shutil.copyfileobj(source, handle, _CHUNK)


def _drain(source) -> None:
    while source.read(_CHUNK):
        pass


def _extract_tar(path: Path, dest: Path, wanted, quiet: bool) -> None:
    with tarfile.open(path, mode="r:*") as tar:
        _extract_members(tar, path.name, dest, wanted, quiet)


def _extract_members(
    tar: tarfile.TarFile, name: str, dest: Path, wanted, quiet: bool, check_links: bool = True
) -> None:
    """Write the wanted regular files of ``tar`` under ``dest``; links are never written.

    ``check_links``: refuse the archive when a link points outside it (corpus
    archives have no reason to); Debian packages link to system files
    (``/usr/share/fonts/...``), harmless since links are skipped.
    """
    with tqdm(desc=f"extracting {name}", unit=" files", disable=quiet, dynamic_ncols=True) as bar:
        for member in tar:
            rel = _member_path(member.name, name)
            bar.update(1)
            if rel is None:
                continue
            if member.issym() or member.islnk():
                if check_links:
                    _check_link(rel, member.linkname, name, from_root=member.islnk())
                continue
            if not member.isfile():
                continue  # folders are made as needed; devices and fifos skipped
            source = tar.extractfile(member)
            if wanted(rel.as_posix()):
                _write_member(source, dest / rel)
            else:
                _drain(source)
        # Read to the end of the compressed stream: checks the gzip CRC and length.
        _drain(tar.fileobj)


def _extract_zip(path: Path, dest: Path, wanted, quiet: bool) -> None:
    name = path.name
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        for info in tqdm(infos, desc=f"extracting {name}", unit=" files", disable=quiet):
            rel = _member_path(info.filename, name)
            if rel is None or info.is_dir():
                continue
            mode = info.external_attr >> 16
            if info.create_system == 3 and stat.S_ISLNK(mode):
                _check_link(rel, archive.read(info).decode("utf-8", "replace"), name)
                continue
            with archive.open(info) as source:  # the CRC is checked at the end of the read
                if wanted(rel.as_posix()):
                    _write_member(source, dest / rel)
                else:
                    _drain(source)


class _Slice(io.RawIOBase):
    """At most ``size`` bytes of ``handle`` from where it stands; EOFError if it ends before."""

    def __init__(self, handle, size: int):
        self.handle, self.left = handle, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self.left)
        if wanted == 0:
            return 0
        data = self.handle.read(wanted)
        if not data:
            raise EOFError(f"the file ends {self.left} bytes before the end of its member")
        buffer[: len(data)] = data
        self.left -= len(data)
        return len(data)


def _extract_deb(path: Path, dest: Path, wanted, quiet: bool) -> None:
    """The ``data.tar.*`` member of a Debian package (an ``ar`` archive), read in full."""
    with open(path, "rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise tarfile.ReadError("not a Debian package (no ar archive header)")
        while True:
            header = handle.read(60)
            if not header:
                raise tarfile.ReadError("no data.tar member in the package")
            if len(header) < 60 or header[58:60] != b"`\n":
                raise EOFError("truncated or damaged ar member header")
            member = header[:16].decode("ascii", "replace").strip().rstrip("/")
            try:
                size = int(header[48:58].decode("ascii").strip())
            except ValueError as err:
                raise tarfile.ReadError(f"bad ar member size in {member!r}") from err
            if member.startswith("data.tar"):
                stream = io.BufferedReader(_Slice(handle, size), _CHUNK)
                with tarfile.open(fileobj=stream, mode="r|*") as tar:
                    _extract_members(tar, path.name, dest, wanted, quiet, check_links=False)
                return
            handle.seek(size + size % 2, os.SEEK_CUR)  # members are padded to even sizes


_DAMAGED = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    lzma.LZMAError,
)


def _extract(path: Path, dest: Path, wanted, quiet: bool) -> None:
    """Extract an archive into ``dest``; a damaged one is set aside as ``.bad``."""
    extractor = {".zip": _extract_zip, ".deb": _extract_deb}.get(path.suffix, _extract_tar)
    try:
        extractor(path, dest, wanted, quiet)
    except _DAMAGED as err:
        shutil.rmtree(dest, ignore_errors=True)
        bad = _set_aside(path)
        raise DownloadError(
            f"{path.name}: archive is damaged or truncated ({type(err).__name__}: {err}); "
            f"moved to {bad}, nothing was laid out. Run the command again to download it anew"
        ) from err


# --------------------------------------------------------------------------- main flow


def _read_marker(marker: Path) -> dict | None:
    if not marker.is_file():
        return None
    try:
        record = read_json(marker)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _missing_file(record: dict, out: Path) -> str | None:
    """A recorded file that is gone (or a placeholder when the record is unusable)."""
    files = record.get("files")
    if not isinstance(files, list) or len(files) != record.get("num_files"):
        return "(incomplete record)"
    for rel in files:
        if not (out / rel).is_file():
            return rel
    return None


def _archive_url(base_url: str, corpus: Corpus, archive: Archive) -> str:
    path = archive.url_path or f"{corpus.resource}/{archive.filename}"
    return f"{base_url.rstrip('/')}/{path}"


def download(
    name: str,
    out,
    *,
    base_url: str | None = None,
    keep_archives: bool = False,
    simulated_rirs: bool = False,
    quiet: bool = False,
    retries: int = 3,
    checksums: dict | None = None,
) -> dict:
    """Download corpus ``name`` into the plain corpus root ``out`` (skipped when done).

    Arguments
    ---------
    name : str
        A key of :data:`CORPORA`: "speechocean762", "mini_librispeech", "rirs_noises"
        or "game_sfx".
    out : str or Path
        Corpus root; other corpora may already be there (files are added).
    base_url : str, optional
        Replaces the corpus' own base URL (``https://www.openslr.org/resources``,
        Debian's ``https://deb.debian.org/debian``) with a mirror or a test server;
        archives are fetched from ``<base_url>/<resource number>/<file>`` (Debian
        packages: ``<base_url>/pool/main/...``).
    keep_archives : bool
        Keep the archives in ``out/.downloads/`` after the layout (default: delete).
    simulated_rirs : bool
        ``rirs_noises`` only: also lay out the 60,000 simulated RIRs in ``rir/simulated/``.
    quiet : bool
        No progress bars or messages.
    retries : int
        Resumed retries of a dropped download before giving up.
    checksums : dict, optional
        For tests: archive file name -> md5 (or None: no checksum, integrity
        check only). An entry replaces the pinned md5 *and* the pinned size of
        that archive; the others keep their pins.

    Returns
    -------
    dict
        The done marker's record: ``name``, ``archives`` (url, bytes, md5,
        expected md5 and its source), ``options``, ``num_files``, ``num_audio``
        and ``files`` (paths relative to ``out``).

    Raises
    ------
    DownloadError
        Unknown name, download failure, checksum mismatch, damaged archive,
        unsafe member, unexpected layout; the message names the archive.
    """
    if name not in CORPORA:
        raise DownloadError(f"unknown corpus {name!r}; choose from {', '.join(CORPORA)}")
    corpus = CORPORA[name]
    out = Path(out).expanduser().resolve()
    downloads = out / DOWNLOADS
    marker = downloads / f"{name}.done.json"
    options = {"simulated_rirs": bool(simulated_rirs)} if name == "rirs_noises" else {}
    record = _done_record(marker, out, options, quiet)
    if record is not None:
        shutil.rmtree(downloads / f"{name}.extract", ignore_errors=True)  # an old leftover
        return record

    downloads.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)  # an interrupted redo must not look done
    archives = [
        dataclasses.replace(a, size=None, md5=checksums[a.filename], source="checksums argument")
        if checksums is not None and a.filename in checksums
        else a
        for a in corpus.archives
    ]
    base_url = base_url or corpus.base_url
    archive_records = [
        _obtain(a, _archive_url(base_url, corpus, a), downloads, quiet, retries) for a in archives
    ]
    destinations = _lay_out(corpus, archives, out, options, quiet)
    record = {
        "name": name,
        "title": corpus.title,
        "licence": corpus.licence,
        "layout_version": LAYOUT_VERSION,
        "options": options,
        "archives": archive_records,
        "num_files": len(destinations),
        "num_audio": sum(_is_audio(rel) for rel in destinations),
        "files": sorted(destinations),
    }
    atomic_write_json(marker, record)  # last: the layout is complete
    if not keep_archives:
        for archive in archives:
            (downloads / archive.filename).unlink(missing_ok=True)
    _say(
        f"{name}: {record['num_audio']} audio files laid out in {out} ({_summary(destinations)})",
        quiet,
    )
    return record


def _done_record(marker: Path, out: Path, options: dict, quiet: bool) -> dict | None:
    """The marker's record when the corpus is laid out with ``options`` and complete."""
    name = marker.name.removesuffix(".done.json")
    record = _read_marker(marker)
    if record is None:
        return None
    if record.get("layout_version") != LAYOUT_VERSION or record.get("options") != options:
        _say(f"{name}: laid out before with other options; laying it out again", quiet)
        return None
    missing = _missing_file(record, out)
    if missing is not None:
        _say(f"{name}: {missing} is missing; laying the corpus out again", quiet)
        return None
    _say(f"{name}: already downloaded into {out} ({record['num_files']} files)", quiet)
    return record


def _lay_out(corpus: Corpus, archives, out: Path, options: dict, quiet: bool) -> list[str]:
    """Extract ``archives`` into scratch and move the planned files into ``out``.

    Every archive is read completely before anything moves, so a damaged
    archive leaves ``out`` as it was. Returns the destinations (relative paths).
    """
    downloads = out / DOWNLOADS
    scratch = downloads / f"{corpus.name}.extract"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        for archive in archives:
            _extract(
                downloads / archive.filename,
                scratch / archive.filename,
                lambda member: corpus.wanted(member, options),
                quiet,
            )
        moves = corpus.plan(scratch, options)
        destinations = [rel for _, rel in moves]
        twice = [rel for rel, count in Counter(destinations).items() if count > 1]
        if twice:
            raise DownloadError(f"{corpus.name}: two archive members would both be {twice[0]}")
        if not any(_is_audio(rel) for rel in destinations):
            names = ", ".join(a.filename for a in archives)
            raise DownloadError(f"{corpus.name}: no audio found in {names}")
        for source, rel in moves:
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return destinations


def _summary(destinations) -> str:
    """Audio files per folder, e.g. "speech: 12 (3 speakers), noise/pointsource: 3"."""
    counts, speakers = Counter(), set()
    for rel in destinations:
        if _is_audio(rel):
            parts = rel.split("/")
            counts[parts[0] if parts[0] == "speech" else "/".join(parts[:2])] += 1
            if parts[0] == "speech":
                speakers.add(parts[1])
    return ", ".join(
        f"{folder}: {count}" + (f" ({len(speakers)} speakers)" if folder == "speech" else "")
        for folder, count in sorted(counts.items())
    )


def _size_text(corpus: Corpus) -> str:
    sizes = [a.size for a in corpus.archives]
    if None in sizes:
        return "?"
    return f"{sum(sizes) / 1e9:.2f} GB" if sum(sizes) >= 1e9 else f"{sum(sizes) / 1e6:.0f} MB"


def list_corpora() -> str:
    """The table printed by ``--list``: name, source, size, licence, content."""
    lines = [f"{'NAME':<18}{'SOURCE':<9}{'DOWNLOAD':<10}{'LICENCE':<14}CONTENT"]
    for corpus in CORPORA.values():
        where = corpus.where or f"SLR{corpus.resource}"
        lines.append(
            f"{corpus.name:<18}{where:<9}{_size_text(corpus):<10}"
            f"{corpus.licence:<14}{corpus.content}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prepare.download",
        description="Download OpenSLR corpora and Debian's game sounds (checksums checked, "
        "resumable) and lay them out "
        "as a plain corpus root: DIR/speech/<speaker>/..., DIR/noise/..., DIR/rir/...",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(CORPORA)}")
    parser.add_argument("--out", help="corpus root (several corpora may share it)")
    parser.add_argument("--list", action="store_true", help="print the corpora and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    parser.add_argument(
        "--keep_archives",
        action="store_true",
        help="keep the archives in DIR/.downloads (default: deleted after the layout)",
    )
    parser.add_argument(
        "--simulated_rirs",
        action="store_true",
        help="rirs_noises: also lay out the 60,000 simulated RIRs in rir/simulated/",
    )
    parser.add_argument(
        "--base_url",
        default=None,
        help="a mirror (or test server) in place of each corpus' own base URL "
        f"({DEFAULT_BASE_URL}, {game_sounds.DEBIAN_BASE_URL})",
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    args = parser.parse_args(argv)
    if args.list:
        print(list_corpora())
        return 0
    if not args.names or not args.out:
        parser.error("give one or more NAMEs and --out DIR (or --list)")
    unknown = [n for n in args.names if n not in CORPORA]
    if unknown:
        parser.error(f"unknown corpus {', '.join(unknown)}; choose from {', '.join(CORPORA)}")
    try:
        for name in args.names:
            download(
                name,
                args.out,
                base_url=args.base_url,
                keep_archives=args.keep_archives,
                simulated_rirs=args.simulated_rirs,
                quiet=args.quiet,
            )
    except KeyboardInterrupt:
        print("interrupted: run the command again to resume", file=sys.stderr)
        return 130
    except Exception as err:  # one line for users, the traceback on request
        if args.verbose:
            traceback.print_exc()
        kind = "" if isinstance(err, DownloadError) else f"{type(err).__name__}: "
        message = " ".join(str(err).split())
        print(f"error: {kind}{message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
