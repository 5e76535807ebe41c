"""data_prepare.download against a local HTTP server serving small fixture archives.

Nothing reaches the internet: a ThreadingHTTPServer on 127.0.0.1 serves tar.gz
and zip archives built at test time with the real archives' inner layouts
(tiny wav/flac files). The handler supports ``Range`` requests, can drop the
connection after a number of bytes (once) and can ignore ``Range``. Checksums
of the fixtures differ from the pinned ones, so the tests pass them with
``checksums=``.
"""

import dataclasses
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prepare import download as dl
from data_prepare.common import scan_audio

REPO = Path(__file__).resolve().parents[2]
REAL = "RIRS_NOISES/real_rirs_isotropic_noises"
POINT = "RIRS_NOISES/pointsource_noises"
SIM = "RIRS_NOISES/simulated_rirs"


# --------------------------------------------------------------------------- fixture archives


def _audio(seed, fmt="WAV", channels=1, frames=1600, sr=16000, scale=0.5):
    """Uniform noise in ``fmt`` (WAV and FLAC 16-bit, OGG Vorbis); ``scale=0``: digital silence."""
    samples = np.random.default_rng(seed).uniform(-scale, scale, (frames, channels))
    buffer = io.BytesIO()
    sf.write(buffer, samples, sr, format=fmt, subtype="VORBIS" if fmt == "OGG" else "PCM_16")
    return buffer.getvalue()


def _tar(members, extra=(), compression="gz"):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buffer.getvalue()


def _zip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _rir_list_line(i, name):
    return f"--rir-id {i:05d} --room-id {i:03d} {REAL}/{name}\n"


@pytest.fixture(scope="module")
def archives():
    """File name -> bytes of the four fixture archives."""
    speechocean = {
        "speechocean762/README.md": b"speechocean762 fixture\n",
        "speechocean762/train/text": b"000010011 WE CALL IT BEAR\n",
        "speechocean762/resource/scores.json": b"{}\n",
        "speechocean762/WAVE/SPEAKER0001/000010011.WAV": _audio(1),
        "speechocean762/WAVE/SPEAKER0001/000010012.WAV": _audio(2),
        "speechocean762/WAVE/SPEAKER0003/000030012.WAV": _audio(3),
    }
    dev = {
        "LibriSpeech/README.TXT": b"LibriSpeech\n",
        "LibriSpeech/SPEAKERS.TXT": b"1272 | M | dev-clean | 14.0 | John\n",
        "LibriSpeech/dev-clean-2/1272/128104/1272-128104-0000.flac": _audio(4, "FLAC"),
        "LibriSpeech/dev-clean-2/1272/128104/1272-128104.trans.txt": b"1272-128104-0000 HI\n",
        "LibriSpeech/dev-clean-2/1462/170138/1462-170138-0000.flac": _audio(5, "FLAC"),
    }
    train = {
        "LibriSpeech/README.TXT": b"LibriSpeech\n",
        "LibriSpeech/train-clean-5/19/198/19-198-0001.flac": _audio(6, "FLAC"),
        "LibriSpeech/train-clean-5/19/198/19-198.trans.txt": b"19-198-0001 HELLO\n",
    }
    real_rirs = [
        "air_type1_air_binaural_aula_carolina_1_1_3_90_3.wav",
        "RVB2014_type1_rir_largeroom1_far_angla.wav",
    ]
    rirs = {
        "RIRS_NOISES/README": b"RIRS_NOISES fixture\n",
        f"{REAL}/{real_rirs[0]}": _audio(7),
        f"{REAL}/{real_rirs[1]}": _audio(8, channels=2),
        f"{REAL}/RVB2014_type1_noise_largeroom1_1.wav": _audio(9),
        # listed as an isotropic noise although its name has no "noise" token: the list decides
        f"{REAL}/RWCP_type4_bgsound_1.wav": _audio(10),
        # in neither list: sorted by name
        f"{REAL}/RWCP_type2_noise_cirline_ofc_2.wav": _audio(11),
        f"{REAL}/RWCP_type2_rir_cirline_ofc_imp070.wav": _audio(12),
        f"{REAL}/rir_list": "".join(_rir_list_line(i, n) for i, n in enumerate(real_rirs, 1)),
        f"{REAL}/noise_list": (
            f"--noise-id 00001 --noise-type isotropic --room-linkage 002 "
            f"{REAL}/RVB2014_type1_noise_largeroom1_1.wav\n"
            f"--noise-id 00002 --noise-type isotropic --room-linkage 009 "
            f"{REAL}/RWCP_type4_bgsound_1.wav\n"
        ),
        f"{POINT}/noise-free-sound-0000.wav": _audio(13),
        f"{POINT}/noise-free-sound-0001.wav": _audio(14),
        f"{POINT}/noise_list": (
            f"--noise-id noise-free-sound-0000 --noise-type point-source --bg-fg-type foreground "
            f"{POINT}/noise-free-sound-0000.wav\n"
        ),
        f"{SIM}/README": b"simulated\n",
        f"{SIM}/smallroom/rir_list": f"--rir-id 1 --room-id 1 {SIM}/smallroom/Room001/x.wav\n",
        f"{SIM}/smallroom/Room001/Room001-00001.wav": _audio(15),
        f"{SIM}/largeroom/Room001/Room001-00001.wav": _audio(16),
    }
    rirs = {k: v.encode() if isinstance(v, str) else v for k, v in rirs.items()}
    return {
        "speechocean762.tar.gz": _tar(speechocean),
        "dev-clean-2.tar.gz": _tar(dev),
        "train-clean-5.tar.gz": _tar(train),
        "rirs_noises.zip": _zip(rirs),
        **_game_debs(),
    }


def _ar(members):
    """An ``ar`` archive (the container of a Debian package) of name -> bytes."""
    out = [b"!<arch>\n"]
    for name, data in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n"
        out += [header.encode("ascii"), data, b"\n" if len(data) % 2 else b""]
    return b"".join(out)


GAME = "./usr/share/games/game"


def _deb(data_members, extra=()):
    control = _tar({"./control": b"Package: fixture\n"}, compression="xz")
    return _ar(
        {
            "debian-binary": b"2.0\n",
            "control.tar.xz": control,
            "data.tar.xz": _tar(data_members, extra, compression="xz"),
        }
    )


def _game_debs():
    """A fixture package (same file name) for each pinned game_sfx package."""
    debs = {}
    for i, archive in enumerate(dl.CORPORA["game_sfx"].archives):
        package = archive.filename.split("_")[0]
        members = {
            f"./usr/share/doc/{package}/copyright": f"{package}: GPL-2+\n".encode(),
            f"{GAME}/sounds/splash.ogg": _audio(100 + i, "OGG", 2, 22050, 44100),
        }
        extra = []
        if i == 0:  # the one package with every case
            members.update(
                {
                    f"{GAME}/sounds/splash.wav": _audio(200, frames=8820, sr=22050),
                    f"{GAME}/sounds/click.ogg": _audio(201, "OGG", 2, 4410, 44100),  # too short
                    # digital silence
                    f"{GAME}/sounds/silence.wav": _audio(202, frames=16000, scale=0),
                    f"{GAME}/sounds/voices/Default/Hello.ogg": _audio(203, "OGG", 2, 22050, 44100),
                    f"{GAME}/music/theme.ogg": _audio(204, "OGG", 2, 44100, 44100),
                    f"{GAME}/units/worker/sounds/worker_ack1.ogg": _audio(
                        205, "OGG", 2, 22050, 44100
                    ),
                    f"{GAME}/data/readme.txt": b"not audio\n",
                    f"{GAME}/sounds/broken.ogg": b"OggS" + bytes(100),  # undecodable: skipped
                }
            )
            link = tarfile.TarInfo(f"{GAME}/fonts/Sans.ttf")
            link.type, link.linkname = tarfile.SYMTYPE, "/usr/share/fonts/Sans.ttf"
            hard = tarfile.TarInfo(f"{GAME}/sounds/splash_copy.ogg")
            hard.type, hard.linkname = tarfile.LNKTYPE, f"{GAME}/sounds/splash.ogg"
            extra = [link, hard]
        debs[archive.filename] = _deb(members, extra)
    return debs


RESOURCE = {
    "speechocean762.tar.gz": 101,
    "dev-clean-2.tar.gz": 31,
    "train-clean-5.tar.gz": 31,
    "rirs_noises.zip": 28,
}
DEB_PATH = {a.filename: a.url_path for a in dl.CORPORA["game_sfx"].archives}


def _url_path(filename):
    """Where the server holds an archive: /<resource>/<file> or Debian's /pool/main/..."""
    return f"/{DEB_PATH[filename]}" if filename in DEB_PATH else f"/{RESOURCE[filename]}/{filename}"


def _md5(data):
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        state = self.server.state
        state.requests.append((self.path, self.headers.get("Range")))
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        range_header = self.headers.get("Range")
        if range_header and not state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        drop = state.drop_after.pop(self.path, None)
        self.wfile.write(body if drop is None else body[:drop])
        self.close_connection = True


class _State:
    def __init__(self, files):
        self.files = dict(files)
        self.requests = []
        self.drop_after = {}
        self.ignore_range = False


@pytest.fixture
def server(archives, monkeypatch):
    """The local server; ``server.url``, ``server.state`` (files, requests, drop_after...)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = _State({_url_path(n): data for n, data in archives.items()})
    httpd.url = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def checksums(archives):
    return {name: _md5(data) for name, data in archives.items()}


def _get(name, out, server, checksums, **kwargs):
    kwargs.setdefault("retries", 0)
    return dl.download(name, out, base_url=server.url, quiet=True, checksums=checksums, **kwargs)


def _relative_audio(out):
    return sorted(p.relative_to(out).as_posix() for p in scan_audio(out))


def _no_trace_of_a_layout(out, name):
    assert not (out / ".downloads" / f"{name}.done.json").exists()
    assert not (out / ".downloads" / f"{name}.extract").exists()
    assert not any((out / folder).exists() for folder in ("speech", "noise", "rir", "meta"))


# --------------------------------------------------------------------------- layouts


def test_speechocean762_layout(tmp_path, server, checksums, archives):
    out = tmp_path / "root"
    record = _get("speechocean762", out, server, checksums)
    assert _relative_audio(out) == [
        "speech/SPEAKER0001/000010011.WAV",
        "speech/SPEAKER0001/000010012.WAV",
        "speech/SPEAKER0003/000030012.WAV",
    ]
    data, sr = sf.read(out / "speech/SPEAKER0003/000030012.WAV")
    assert sr == 16000 and data.shape == (1600,)
    assert (out / "meta/speechocean762/train/text").read_text().startswith("000010011")
    assert (out / "meta/speechocean762/README.md").is_file()
    marker = out / ".downloads/speechocean762.done.json"
    assert dl.read_json(marker) == record
    assert record["num_audio"] == 3 and record["num_files"] == 6
    (archive,) = record["archives"]
    assert archive["md5"] == _md5(archives["speechocean762.tar.gz"])
    assert archive["url"] == f"{server.url}/101/speechocean762.tar.gz"
    # default: the archive and the scratch folder are gone, only the marker stays
    assert sorted(p.name for p in (out / ".downloads").iterdir()) == ["speechocean762.done.json"]


def test_mini_librispeech_puts_both_subsets_in_speech(tmp_path, server, checksums):
    out = tmp_path / "root"
    record = _get("mini_librispeech", out, server, checksums, keep_archives=True)
    assert _relative_audio(out) == [
        "speech/1272/128104/1272-128104-0000.flac",
        "speech/1462/170138/1462-170138-0000.flac",
        "speech/19/198/19-198-0001.flac",
    ]
    assert (out / "speech/19/198/19-198.trans.txt").is_file()
    assert (out / "meta/mini_librispeech/dev-clean-2/SPEAKERS.TXT").is_file()
    assert (out / "meta/mini_librispeech/train-clean-5/README.TXT").is_file()
    assert [a["file"] for a in record["archives"]] == ["dev-clean-2.tar.gz", "train-clean-5.tar.gz"]
    assert (out / ".downloads/dev-clean-2.tar.gz").is_file()  # --keep_archives
    assert (out / ".downloads/train-clean-5.tar.gz").is_file()


def test_rirs_noises_sorts_rirs_and_noises_by_the_lists(tmp_path, server, checksums):
    out = tmp_path / "root"
    _get("rirs_noises", out, server, checksums)
    assert _relative_audio(out) == [
        "noise/isotropic/RVB2014_type1_noise_largeroom1_1.wav",
        "noise/isotropic/RWCP_type2_noise_cirline_ofc_2.wav",  # unlisted: by name
        "noise/isotropic/RWCP_type4_bgsound_1.wav",  # noise_list wins over the name
        "noise/pointsource/noise-free-sound-0000.wav",
        "noise/pointsource/noise-free-sound-0001.wav",
        "rir/real/RVB2014_type1_rir_largeroom1_far_angla.wav",
        "rir/real/RWCP_type2_rir_cirline_ofc_imp070.wav",
        "rir/real/air_type1_air_binaural_aula_carolina_1_1_3_90_3.wav",
    ]
    assert sf.info(str(out / "rir/real/RVB2014_type1_rir_largeroom1_far_angla.wav")).channels == 2
    assert (out / "meta/rirs_noises/real_rirs_isotropic_noises/rir_list").is_file()
    assert (out / "meta/rirs_noises/pointsource_noises/noise_list").is_file()
    assert not (out / "rir/simulated").exists()


def test_simulated_rirs_on_request_redoes_the_layout(tmp_path, server, checksums):
    out = tmp_path / "root"
    _get("rirs_noises", out, server, checksums, keep_archives=True)
    requests = len(server.state.requests)
    record = _get("rirs_noises", out, server, checksums, simulated_rirs=True)
    assert len(server.state.requests) == requests  # other options: kept archive reused
    assert record["options"] == {"simulated_rirs": True}
    assert (out / "rir/simulated/smallroom/Room001/Room001-00001.wav").is_file()
    assert (out / "rir/simulated/largeroom/Room001/Room001-00001.wav").is_file()
    assert len(_relative_audio(out)) == 10


def test_two_corpora_share_one_root(tmp_path, server, checksums):
    out = tmp_path / "real"
    _get("speechocean762", out, server, checksums)
    _get("rirs_noises", out, server, checksums)
    audio = _relative_audio(out)
    assert {a.split("/")[0] for a in audio} == {"speech", "noise", "rir"}
    assert len(audio) == 3 + 8
    markers = sorted(p.name for p in (out / ".downloads").glob("*.done.json"))
    assert markers == ["rirs_noises.done.json", "speechocean762.done.json"]
    # the first corpus is still done after the second was added
    _get("speechocean762", out, server, checksums)
    assert len(server.state.requests) == 2


# --------------------------------------------------------------------------- skip and redo


def test_second_call_skips_without_touching_the_server(tmp_path, server, checksums, capsys):
    out = tmp_path / "root"
    first = _get("speechocean762", out, server, checksums)
    assert len(server.state.requests) == 1
    dl.download(
        "speechocean762", out, base_url=server.url, checksums=checksums, quiet=False, retries=0
    )
    assert len(server.state.requests) == 1
    assert "speechocean762: already downloaded" in capsys.readouterr().out
    # a laid-out file vanished: the layout is redone (the archive was deleted: new download)
    (out / "speech/SPEAKER0001/000010012.WAV").unlink()
    again = _get("speechocean762", out, server, checksums)
    assert len(server.state.requests) == 2
    assert (out / "speech/SPEAKER0001/000010012.WAV").is_file()
    assert again["files"] == first["files"]


def test_kept_archive_redoes_a_layout_without_downloading(tmp_path, server, checksums):
    out = tmp_path / "root"
    _get("speechocean762", out, server, checksums, keep_archives=True)
    (out / "speech/SPEAKER0003/000030012.WAV").unlink()
    _get("speechocean762", out, server, checksums, keep_archives=True)
    assert len(server.state.requests) == 1
    assert (out / "speech/SPEAKER0003/000030012.WAV").is_file()


# --------------------------------------------------------------------------- resume


def test_dropped_connection_resumes_with_a_range_request(tmp_path, server, checksums, archives):
    out = tmp_path / "root"
    path = "/101/speechocean762.tar.gz"
    server.state.drop_after[path] = 1000
    with pytest.raises(dl.DownloadError, match=r"interrupted.*run the command again to resume"):
        _get("speechocean762", out, server, checksums)
    part = out / ".downloads/speechocean762.tar.gz.part"
    assert part.stat().st_size == 1000
    _no_trace_of_a_layout(out, "speechocean762")
    record = _get("speechocean762", out, server, checksums)
    assert server.state.requests[-1] == (path, "bytes=1000-")
    assert record["archives"][0]["md5"] == _md5(archives["speechocean762.tar.gz"])
    assert len(_relative_audio(out)) == 3 and not part.exists()


def test_dropped_connection_is_retried_within_one_call(tmp_path, server, checksums, monkeypatch):
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.0)
    server.state.drop_after["/28/rirs_noises.zip"] = 2500
    _get("rirs_noises", tmp_path / "root", server, checksums, retries=2)
    assert [r for _, r in server.state.requests] == [None, "bytes=2500-"]


def test_server_without_range_support_starts_over(tmp_path, server, checksums):
    out = tmp_path / "root"
    downloads = out / ".downloads"
    downloads.mkdir(parents=True)
    (downloads / "speechocean762.tar.gz.part").write_bytes(b"junk" * 100)
    server.state.ignore_range = True
    _get("speechocean762", out, server, checksums)
    assert server.state.requests == [("/101/speechocean762.tar.gz", "bytes=400-")]
    assert len(_relative_audio(out)) == 3


def test_complete_part_answered_416_is_used(tmp_path, server, checksums, archives):
    data = archives["speechocean762.tar.gz"]
    out = tmp_path / "root"
    (out / ".downloads").mkdir(parents=True)
    (out / ".downloads/speechocean762.tar.gz.part").write_bytes(data)
    _get("speechocean762", out, server, checksums)
    assert server.state.requests == [("/101/speechocean762.tar.gz", f"bytes={len(data)}-")]
    assert len(_relative_audio(out)) == 3


# --------------------------------------------------------------------------- bad archives


def test_checksum_mismatch_sets_the_file_aside(tmp_path, server, checksums, archives):
    out = tmp_path / "root"
    wrong = dict(checksums, **{"speechocean762.tar.gz": "0" * 32})
    actual = checksums["speechocean762.tar.gz"]
    with pytest.raises(dl.DownloadError) as info:
        _get("speechocean762", out, server, wrong)
    message = str(info.value)
    assert "speechocean762.tar.gz: checksum mismatch" in message
    assert f"md5 {actual}, expected {'0' * 32}" in message
    assert "Run the command again" in message
    downloads = out / ".downloads"
    assert not (downloads / "speechocean762.tar.gz").exists()
    assert (downloads / "speechocean762.tar.gz.bad").read_bytes() == archives[
        "speechocean762.tar.gz"
    ]
    _no_trace_of_a_layout(out, "speechocean762")
    # the next run downloads anew
    _get("speechocean762", out, server, checksums)
    assert len(server.state.requests) == 2 and len(_relative_audio(out)) == 3


def test_server_size_differing_from_the_pinned_size_is_refused(
    tmp_path, server, archives, monkeypatch
):
    data = archives["speechocean762.tar.gz"]
    pinned = dl.Archive("speechocean762.tar.gz", size=len(data) + 7, md5=_md5(data), source="t")
    corpus = dataclasses.replace(dl.CORPORA["speechocean762"], archives=(pinned,))
    monkeypatch.setitem(dl.CORPORA, "speechocean762", corpus)
    out = tmp_path / "root"
    with pytest.raises(dl.DownloadError, match=rf"is {len(data):,} bytes but {len(data) + 7:,}"):
        dl.download("speechocean762", out, base_url=server.url, quiet=True, retries=0)
    assert list((out / ".downloads").iterdir()) == []
    _no_trace_of_a_layout(out, "speechocean762")


def test_truncated_archive_without_checksum_is_caught_by_the_full_read(
    tmp_path, server, checksums, archives
):
    data = archives["speechocean762.tar.gz"]
    server.state.files["/101/speechocean762.tar.gz"] = data[: len(data) * 2 // 3]
    out = tmp_path / "root"
    unknown = dict(checksums, **{"speechocean762.tar.gz": None})
    with pytest.raises(dl.DownloadError, match=r"speechocean762.tar.gz: archive is damaged"):
        _get("speechocean762", out, server, unknown)
    assert (out / ".downloads/speechocean762.tar.gz.bad").is_file()
    _no_trace_of_a_layout(out, "speechocean762")


def test_truncated_gzip_trailer_is_caught(tmp_path, server, checksums, archives):
    # Every tar member is intact; only the end of the gzip stream (CRC, length) is missing.
    data = archives["speechocean762.tar.gz"]
    server.state.files["/101/speechocean762.tar.gz"] = data[:-6]
    unknown = dict(checksums, **{"speechocean762.tar.gz": None})
    with pytest.raises(dl.DownloadError, match="archive is damaged or truncated"):
        _get("speechocean762", tmp_path / "root", server, unknown)
    _no_trace_of_a_layout(tmp_path / "root", "speechocean762")


def test_corrupted_zip_is_refused(tmp_path, server, checksums, archives):
    data = bytearray(archives["rirs_noises.zip"])
    middle = len(data) // 3
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    server.state.files["/28/rirs_noises.zip"] = bytes(data)
    out = tmp_path / "root"
    unknown = dict(checksums, **{"rirs_noises.zip": None})
    with pytest.raises(dl.DownloadError, match=r"rirs_noises.zip: archive is damaged"):
        _get("rirs_noises", out, server, unknown)
    assert (out / ".downloads/rirs_noises.zip.bad").is_file()
    _no_trace_of_a_layout(out, "rirs_noises")


def _symlink(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "filename, build",
    [
        (
            "speechocean762.tar.gz",
            lambda: _tar({"speechocean762/WAVE/SPEAKER0001/../../../../evil.WAV": b"x"}),
        ),
        ("speechocean762.tar.gz", lambda: _tar({"/tmp/sb_enhance_evil.WAV": b"x"})),
        (
            "speechocean762.tar.gz",
            lambda: _tar(
                {"speechocean762/WAVE/SPEAKER0001/a.WAV": b"x"},
                extra=[_symlink("speechocean762/WAVE/SPEAKER0001/b.WAV", "../../../../evil")],
            ),
        ),
        ("rirs_noises.zip", lambda: _zip({"RIRS_NOISES/../evil.wav": b"x"})),
    ],
    ids=["tar-dotdot", "tar-absolute", "tar-symlink-outside", "zip-dotdot"],
)
def test_unsafe_members_are_refused(tmp_path, server, filename, build):
    data = build()
    server.state.files[f"/{RESOURCE[filename]}/{filename}"] = data
    name = "speechocean762" if filename.startswith("speech") else "rirs_noises"
    out = tmp_path / "a" / "b" / "root"
    with pytest.raises(dl.DownloadError, match=rf"{re.escape(filename)}: refusing"):
        _get(name, out, server, {filename: _md5(data)})
    assert not list(tmp_path.rglob("evil*"))
    assert not Path("/tmp/sb_enhance_evil.WAV").exists()
    _no_trace_of_a_layout(out, name)


# --------------------------------------------------------------------------- Debian game sounds


def test_game_sfx_lays_out_converted_sound_effects_only(tmp_path, server, checksums, caplog):
    out = tmp_path / "root"
    with caplog.at_level("WARNING", logger="data_prepare.game_sounds"):
        record = _get("game_sfx", out, server, checksums)
    assert "game/sounds/broken.ogg: not decodable, skipped" in caplog.text
    packages = [a.filename.split("_")[0] for a in dl.CORPORA["game_sfx"].archives]
    first = packages[0]
    expected = {f"noise/game_sfx/{p}/game/sounds/splash_ogg.wav" for p in packages}
    expected.add(f"noise/game_sfx/{first}/game/sounds/splash_wav.wav")  # beside splash.ogg
    # not laid out: the voice lines, the music, a 0.1-s click, digital silence, an undecodable
    # file (a warning names it), text, links
    assert set(_relative_audio(out)) == expected
    assert record["num_audio"] == len(expected)
    for rel in expected:
        info = sf.info(str(out / rel))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert sf.info(str(out / next(iter(sorted(expected))))).duration == pytest.approx(0.5, abs=0.01)
    for package in packages:
        assert (out / f"meta/game_sfx/{package}/copyright").read_text() == f"{package}: GPL-2+\n"
    requested = {path for path, _ in server.state.requests}
    assert requested == {f"/{path}" for path in DEB_PATH.values()}
    assert not (out / ".downloads/game_sfx.extract").exists()


def test_game_sfx_conversion_keeps_the_waveform(tmp_path):
    from data_prepare import game_sounds

    t = np.arange(44100) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "tone.wav", np.stack([tone, tone], axis=1), 44100)
    assert game_sounds.to_noise_wav(tmp_path / "tone.wav", tmp_path / "out.wav")
    out, sr = sf.read(tmp_path / "out.wav")
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert sr == 16000 and out.shape == (16000,)
    assert np.max(np.abs(out[100:-100] - expected[100:-100])) < 2e-3
    loud = np.stack([tone * 2.4, tone * 2.4], axis=1)  # peak 1.2: scaled to 0.9, not wrapped
    sf.write(tmp_path / "loud.wav", loud, 44100, subtype="FLOAT")
    assert game_sounds.to_noise_wav(tmp_path / "loud.wav", tmp_path / "loud_out.wav")
    assert np.max(np.abs(sf.read(tmp_path / "loud_out.wav")[0])) == pytest.approx(0.9, abs=1e-3)


@pytest.mark.parametrize("damage", ["truncated", "corrupted_xz", "not_ar", "no_data_member"])
def test_damaged_debian_package_is_set_aside(tmp_path, server, checksums, archives, damage):
    filename = dl.CORPORA["game_sfx"].archives[0].filename
    data = archives[filename]
    if damage == "truncated":
        data = data[: len(data) - 200]
    elif damage == "corrupted_xz":
        data = bytearray(data)
        middle = len(data) * 2 // 3
        data[middle : middle + 32] = bytes(b ^ 0xFF for b in data[middle : middle + 32])
        data = bytes(data)
    elif damage == "not_ar":
        data = _tar({"x.wav": _audio(1)})
    else:
        data = _ar({"debian-binary": b"2.0\n"})
    server.state.files[_url_path(filename)] = data
    out = tmp_path / "root"
    unknown = dict(checksums, **{filename: None})
    with pytest.raises(dl.DownloadError, match=rf"{re.escape(filename)}: archive is damaged"):
        _get("game_sfx", out, server, unknown)
    assert (out / f".downloads/{filename}.bad").read_bytes() == data
    _no_trace_of_a_layout(out, "game_sfx")


# --------------------------------------------------------------------------- CLI


def test_cli_list_prints_corpora_and_licences(capsys):
    assert dl.main(["--list"]) == 0
    text = capsys.readouterr().out
    for name in ("speechocean762", "mini_librispeech", "rirs_noises", "game_sfx", "Debian"):
        assert name in text


def test_cli_error_is_one_line_and_exit_status_1(tmp_path, server):
    server.state.files.clear()  # every archive answers 404
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "data_prepare.download", "speechocean762"]
    command += ["--out", str(tmp_path / "root"), "--base_url", server.url, "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: speechocean762.tar.gz: download failed, HTTP 404")


def test_cli_verbose_shows_the_traceback(tmp_path, server, capsys):
    server.state.files.clear()
    argv = ["speechocean762", "--out", str(tmp_path), "--base_url", server.url, "--quiet"]
    assert dl.main([*argv, "--verbose"]) == 1
    assert "Traceback" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        dl.main(["--out", str(tmp_path)])  # no NAME
    assert info.value.code == 2
