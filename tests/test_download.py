"""`pneumo download` against a local HTTP server on 127.0.0.1 serving zips the tests build."""

import hashlib
import http.server
import io
import subprocess
import sys
import threading
import zipfile

import cv2
import numpy as np
import pytest

from pneumo_utils.data import download

JPEG = cv2.imencode(".jpg", np.full((32, 32), 128, np.uint8))[1].tobytes()


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as bundle:
        for name, content in members.items():
            bundle.writestr(name, content)
    return buffer.getvalue()


def kaggle_like_zip() -> bytes:
    """The shape of the public archives: a chest_xray folder, __MACOSX litter and a nested duplicate."""
    members = {}
    for split in ("train", "test"):
        for label in ("NORMAL", "PNEUMONIA"):
            for number in range(2):
                members[f"chest_xray/{split}/{label}/person{number}_{label}.jpeg"] = JPEG
    members["chest_xray/train/NORMAL/.DS_Store"] = b"junk"
    members["__MACOSX/chest_xray/train/NORMAL/._person0_NORMAL.jpeg"] = b"junk"
    members["chest_xray/chest_xray/train/NORMAL/duplicate.jpeg"] = JPEG
    return _zip(members)


def _with_member_patched(body: bytes, flag_bits: int | None = None, method: int | None = None) -> bytes:
    """A zip whose first member claims ``flag_bits`` (0x1: encrypted) or compression ``method`` (9: deflate64)
    in both its local and its central header, as an archive made by another tool would."""
    data = bytearray(body)
    for signature, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        start = data.index(signature)
        if flag_bits is not None:
            data[start + flag_at : start + flag_at + 2] = flag_bits.to_bytes(2, "little")
        if method is not None:
            data[start + method_at : start + method_at + 2] = method.to_bytes(2, "little")
    return bytes(data)


def _dataset_members(first: bytes = JPEG) -> dict[str, bytes]:
    return {"chest_xray/train/NORMAL/a.jpeg": first, "chest_xray/train/PNEUMONIA/b.jpeg": JPEG}


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.requests.append(self.path)
        if self.path == "/cut-off.zip":  # promises more bytes than it sends, as a dropped connection does
            body = kaggle_like_zip()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    good = kaggle_like_zip()
    _Handler.files = {
        "/good.zip": good,
        "/traversal.zip": _zip(
            {
                "chest_xray/train/NORMAL/a.jpeg": JPEG,
                "chest_xray/train/PNEUMONIA/b.jpeg": JPEG,
                "../../escaped.txt": b"evil",
            }
        ),
        "/truncated.zip": good[: len(good) // 2],
        "/no-dataset.zip": _zip({"readme.txt": b"nothing here"}),
        # a few hundred KB that expand to 200 MB, and a small member that expands 1000-fold
        "/bomb.zip": _zip(
            {"chest_xray/train/NORMAL/a.jpeg": bytes(200 << 20), "chest_xray/train/PNEUMONIA/b.jpeg": JPEG},
            zipfile.ZIP_DEFLATED,
        ),
        "/ratio.zip": _zip(
            {"chest_xray/train/NORMAL/a.jpeg": bytes(5 << 20), "chest_xray/train/PNEUMONIA/b.jpeg": JPEG},
            zipfile.ZIP_DEFLATED,
        ),
        # members of one MiB of zeros (each refused by its ratio), and 400 of 60 KiB (each too small to judge
        # alone, together 24 MB from about 0.1 MB)
        "/one-mib-zeros.zip": _zip(
            {
                **_dataset_members(),
                **{f"chest_xray/train/NORMAL/zero{number}.jpeg": bytes(1 << 20) for number in range(30)},
            },
            zipfile.ZIP_DEFLATED,
        ),
        "/many-small.zip": _zip(
            {
                **_dataset_members(),
                **{f"chest_xray/train/NORMAL/zero{number}.jpeg": bytes(60 << 10) for number in range(400)},
            },
            zipfile.ZIP_DEFLATED,
        ),
        "/encrypted.zip": _with_member_patched(_zip(_dataset_members()), flag_bits=0x1),
        "/deflate64.zip": _with_member_patched(_zip(_dataset_members()), method=9),
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hashlib.sha256(good).hexdigest()
    httpd.shutdown()


def _run(*arguments):
    return subprocess.run(
        [sys.executable, "-m", "pneumo_utils.cli", "download", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_good_archive_is_installed_without_litter(server, tmp_path):
    base, sha256 = server
    dest = tmp_path / "data"
    result = _run("--url", f"{base}/good.zip", "--dest", dest, "--sha256", sha256)
    assert result.returncode == 0, result.stderr
    root = dest / "chest_xray"
    assert sorted(p.name for p in root.iterdir()) == ["test", "train"]
    assert len(list(root.rglob("*.jpeg"))) == 8  # the nested duplicate and __MACOSX were skipped
    assert sorted(p.name for p in dest.iterdir()) == ["chest_xray"]  # no temporary folder left
    again = _run("--url", f"{base}/good.zip", "--dest", dest)
    assert again.returncode == 2 and "--overwrite" in again.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("traversal.zip", "would be written outside the destination"),
        ("truncated.zip", "archive is corrupt, truncated or unreadable"),
        ("cut-off.zip", "download incomplete"),
        ("no-dataset.zip", "no train/NORMAL and train/PNEUMONIA"),
        ("missing.zip", "download failed"),
        ("bomb.zip", "expands to 200 MB"),
        ("ratio.zip", "fold (images barely compress"),
        ("one-mib-zeros.zip", "expands 1015-fold"),
        ("many-small.zip", "fold as a whole"),
        ("encrypted.zip", "is encrypted"),
        ("deflate64.zip", "uses compression method 9, which cannot be read here"),
    ],
)
def test_bad_downloads_leave_nothing_behind(server, tmp_path, name, message):
    base, _ = server
    dest = tmp_path / "data"
    result = _run("--url", f"{base}/{name}", "--dest", dest)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--url", "htp:/nowhere"], "not an http(s) address"),
        (["--url", "http://"], "not an http(s) address"),
        (["--sha256", "not-a-hash"], "a SHA-256 is 64 hexadecimal digits"),
        (["--dest", "/proc/pneumo"], "--dest cannot be written"),
    ],
)
def test_bad_options_are_refused_before_downloading(server, tmp_path, arguments, message):
    base, _ = server
    _Handler.requests.clear()
    options = {"--url": f"{base}/good.zip", "--dest": str(tmp_path / "data")}
    options.update(dict(zip(arguments[::2], arguments[1::2], strict=True)))
    result = _run(*[item for pair in options.items() for item in pair])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert _Handler.requests == []  # nothing was fetched


def test_a_malformed_address_is_one_line(server, tmp_path):
    result = _run("--url", "http://[::1/x.zip", "--dest", tmp_path / "data")
    assert result.returncode == 1 and "download failed" in result.stderr and "Traceback" not in result.stderr


def test_checksum_mismatch_is_refused(server, tmp_path):
    base, _ = server
    dest = tmp_path / "data"
    result = _run("--url", f"{base}/good.zip", "--dest", dest, "--sha256", "0" * 64)
    assert result.returncode == 1 and "checksum mismatch" in result.stderr
    assert list(dest.iterdir()) == []


def test_overwrite_replaces_an_existing_data_set(server, tmp_path):
    base, _ = server
    dest = tmp_path / "data"
    (dest / "chest_xray" / "old").mkdir(parents=True)
    root = download.download("mendeley", dest, url=f"{base}/good.zip", overwrite=True, progress=False)
    assert not (root / "old").exists() and (root / "train" / "NORMAL").is_dir()
    assert sorted(p.name for p in dest.iterdir()) == ["chest_xray"]
