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

from pneumo_utils import download

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


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 - http.server's naming
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
        "/traversal.zip": _zip({"chest_xray/train/NORMAL/a.jpeg": JPEG, "chest_xray/train/PNEUMONIA/b.jpeg": JPEG,
                                "../../escaped.txt": b"evil"}),
        "/truncated.zip": good[: len(good) // 2],
        "/no-dataset.zip": _zip({"readme.txt": b"nothing here"}),
        # a few hundred KB that expand to 200 MB, and a small member that expands 1000-fold
        "/bomb.zip": _zip({"chest_xray/train/NORMAL/a.jpeg": bytes(200 << 20),
                           "chest_xray/train/PNEUMONIA/b.jpeg": JPEG}, zipfile.ZIP_DEFLATED),
        "/ratio.zip": _zip({"chest_xray/train/NORMAL/a.jpeg": bytes(5 << 20),
                            "chest_xray/train/PNEUMONIA/b.jpeg": JPEG}, zipfile.ZIP_DEFLATED),
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hashlib.sha256(good).hexdigest()
    httpd.shutdown()


def _run(*arguments):
    return subprocess.run([sys.executable, "-m", "pneumo_utils.cli", "download", *map(str, arguments)],
                          capture_output=True, text=True, timeout=300)


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
        ("truncated.zip", "archive is corrupt or truncated"),
        ("cut-off.zip", "download incomplete"),
        ("no-dataset.zip", "no train/NORMAL and train/PNEUMONIA"),
        ("missing.zip", "download failed"),
        ("bomb.zip", "expands to 200 MB"),
        ("ratio.zip", "fold (images barely compress"),
    ],
)
def test_bad_downloads_leave_nothing_behind(server, tmp_path, name, message):
    base, _ = server
    dest = tmp_path / "data"
    result = _run("--url", f"{base}/{name}", "--dest", dest)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()


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
