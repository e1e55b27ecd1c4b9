"""Fetch the public data set safely: progress bar, checksum, safe extraction, and an atomic result.

Everything happens in a temporary folder inside ``dest``; only a complete, layout-checked data set is
renamed to ``dest/chest_xray``. A failed or interrupted download leaves nothing behind but what was
there before.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from pneumo_utils.config import SettingsError
from pneumo_utils.data import CLASS_NAMES, SPLITS, DatasetLayoutError, check_layout
from pneumo_utils.outputs import OutputExists

SOURCES = {
    # Kermany et al., Mendeley Data v2 (doi:10.17632/rscbjbr9sj.2), file ChestXRay2017.zip (about 1.2 GB).
    "mendeley": {
        "url": "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
        "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded",
        "sha256": None,  # not published by the source; pass --sha256 to check a known value
    },
    # The same images on Kaggle, fetched with kagglehub (needs `pip install kagglehub` and Kaggle access).
    "kaggle": {"handle": "paultimothymooney/chest-xray-pneumonia"},
}
DATASET_FOLDER = "chest_xray"
CHUNK = 1 << 20
# Limits against archives that expand far beyond what this data set can be (zip bombs, wrong files).
# The real archive: about 1.2 GB for 5,856 JPEGs of at most a few MB each, which barely compress.
MAX_MEMBER_BYTES = 64 << 20  # one image
MAX_MEMBER_RATIO = 50  # expanded size / compressed size of one member (a JPEG: about 1)
MAX_TOTAL_BYTES = 8 << 30  # the whole extraction
MAX_TOTAL_RATIO = 10  # expanded / compressed over the whole archive (the real one: about 1)
RATIO_CHECKED_FROM = 64 << 10  # members smaller than this may compress well (text); the total ratio covers them
SUPPORTED_COMPRESSION = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}


class DownloadError(RuntimeError):
    """The download, its checksum or its archive failed; nothing was left in the destination."""


def fetch(url: str, target: Path, expected_sha256: str | None = None, progress: bool = True) -> str:
    """Stream ``url`` to ``target`` with a progress bar; check the length and the SHA-256. Returns the hash."""
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - http(s) URLs only, checked below
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with (
                target.open("wb") as handle,
                tqdm(
                    total=total, unit="B", unit_scale=True, disable=not progress, desc=target.name, file=sys.stderr
                ) as bar,
            ):
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (OSError, ValueError, http.client.HTTPException) as error:  # URLError, HTTPError, timeouts, resets,
        raise DownloadError(f"{url}: download failed ({error})") from None  # malformed addresses
    if total is not None and received != total:
        raise DownloadError(f"{url}: download incomplete ({received} of {total} bytes)")
    sha256 = digest.hexdigest()
    if expected_sha256 and sha256 != expected_sha256.lower():
        raise DownloadError(f"{url}: checksum mismatch (SHA-256 {sha256}, expected {expected_sha256})")
    return sha256


def _dataset_prefix(names: list[str]) -> PurePosixPath:
    """The shallowest folder in the archive that holds ``train/NORMAL`` and ``train/PNEUMONIA``."""
    candidates = set()
    for name in names:
        parts = PurePosixPath(name).parts
        for position in range(len(parts) - 2):
            if parts[position] == "train" and parts[position + 1] in CLASS_NAMES:
                candidates.add(PurePosixPath(*parts[:position]))
    candidates = {c for c in candidates if "__MACOSX" not in c.parts}
    complete = [
        c
        for c in candidates
        if all(
            any(PurePosixPath(n).parts[: len(c.parts) + 2] == (*c.parts, "train", k) for n in names)
            for k in CLASS_NAMES
        )
    ]
    if not complete:
        raise DownloadError("archive holds no train/NORMAL and train/PNEUMONIA folders")
    return min(complete, key=lambda c: len(c.parts))


def safe_extract(archive: Path, destination: Path) -> Path:
    """Extract the data set's splits from a zip into ``destination``; returns the extracted data set root.

    Refuses the whole archive if any member would land outside ``destination`` (absolute paths, ``..``)
    or is a link. Skips ``__MACOSX`` and anything outside the data set's ``train/val/test`` folders (such
    as the nested duplicate ``chest_xray/chest_xray`` of the Kaggle archive).
    """
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            for member in members:
                path = PurePosixPath(member.filename)
                is_link = (member.external_attr >> 16) & 0o170000 == 0o120000
                if path.is_absolute() or ".." in path.parts or member.filename.startswith(("\\", "/")) or is_link:
                    raise DownloadError(
                        f"{archive}: member {member.filename!r} would be written outside the "
                        "destination; refusing the archive"
                    )
            prefix = _dataset_prefix([m.filename for m in members if not m.is_dir()])
            _check_sizes(archive, members)
            root = destination / DATASET_FOLDER
            written = 0
            for member in members:
                parts = PurePosixPath(member.filename).parts
                if member.is_dir() or "__MACOSX" in parts or parts[: len(prefix.parts)] != prefix.parts:
                    continue
                relative = parts[len(prefix.parts) :]
                if len(relative) < 3 or relative[0] not in SPLITS:
                    continue
                target = root.joinpath(*relative)
                if not target.resolve().is_relative_to(destination.resolve()):
                    raise DownloadError(f"{archive}: member {member.filename!r} escapes the destination")
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, target.open("wb") as sink:
                    # the headers were checked above; the bytes are counted too, in case they lie
                    size = 0
                    while chunk := source.read(CHUNK):
                        size += len(chunk)
                        written += len(chunk)
                        if size > MAX_MEMBER_BYTES or written > MAX_TOTAL_BYTES:
                            raise DownloadError(
                                f"{archive}: member {member.filename!r} expands beyond the limits "
                                "for this data set; refusing the archive"
                            )
                        sink.write(chunk)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, NotImplementedError, RuntimeError) as error:
        raise DownloadError(f"{archive}: archive is corrupt, truncated or unreadable ({error})") from None
    except OSError as error:
        raise DownloadError(f"{destination}: cannot extract here ({error.strerror or error})") from None
    return root


def _check_sizes(archive: Path, members: list[zipfile.ZipInfo]) -> None:
    """Refuse members whose declared size or compression ratio is implausible for chest X-ray images,
    and archives whose declared total is."""
    total = compressed = 0
    for member in members:
        if member.is_dir():
            continue
        if member.flag_bits & 0x1:
            raise DownloadError(f"{archive}: member {member.filename!r} is encrypted; refusing the archive")
        if member.compress_type not in SUPPORTED_COMPRESSION:
            raise DownloadError(
                f"{archive}: member {member.filename!r} uses compression method "
                f"{member.compress_type}, which cannot be read here (supported: "
                f"{', '.join(SUPPORTED_COMPRESSION.values())}); refusing the archive"
            )
        total += member.file_size
        compressed += member.compress_size
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > MAX_MEMBER_BYTES:
            raise DownloadError(
                f"{archive}: member {member.filename!r} expands to {member.file_size / 2**20:.0f} MB "
                f"(the limit for one image is {MAX_MEMBER_BYTES >> 20} MB); refusing the archive"
            )
        if member.file_size > RATIO_CHECKED_FROM and ratio > MAX_MEMBER_RATIO:
            raise DownloadError(
                f"{archive}: member {member.filename!r} expands {ratio:.0f}-fold (images barely "
                f"compress; the limit is {MAX_MEMBER_RATIO}); refusing the archive"
            )
    if total > MAX_TOTAL_BYTES:
        raise DownloadError(
            f"{archive}: expands to {total / 2**30:.1f} GB (the limit is {MAX_TOTAL_BYTES >> 30} GB); "
            "refusing the archive"
        )
    if total > (16 << 20) and total / max(compressed, 1) > MAX_TOTAL_RATIO:
        raise DownloadError(
            f"{archive}: expands {total / max(compressed, 1):.0f}-fold as a whole ({total / 2**20:.0f} "
            f"MB from {compressed / 2**20:.1f} MB; images barely compress, the limit is "
            f"{MAX_TOTAL_RATIO}); refusing the archive"
        )


def install(dataset_root: Path, dest: Path, overwrite: bool) -> Path:
    """Check the layout, then rename the finished data set into place (the old one only with overwrite)."""
    try:
        check_layout(dataset_root)
    except DatasetLayoutError as error:  # the archive's fault, not the user's: a failed download
        raise DownloadError(f"the archive's data set is incomplete: {error}") from None
    final = dest / DATASET_FOLDER
    if final.exists():
        if not overwrite:
            raise OutputExists(f"{final}: already exists; pass --overwrite to replace it")
        retired = dest / f".{DATASET_FOLDER}.old-{os.getpid()}"
        os.replace(final, retired)
        os.replace(dataset_root, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(dataset_root, final)
    return final


def download(
    source: str = "mendeley",
    dest: str | os.PathLike = "data",
    url: str | None = None,
    sha256: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Download, verify, extract and install the data set as ``dest/chest_xray``; returns its path."""
    dest = Path(dest)
    if source not in SOURCES:
        raise SettingsError(f"unknown source {source!r}; choose {sorted(SOURCES)}")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise SettingsError(f"--sha256 {sha256!r}: a SHA-256 is 64 hexadecimal digits")
    if url is not None and not re.match(r"https?://[^/\s]+", url):
        raise SettingsError(f"{url}: not an http(s) address (http://host/path or https://host/path)")
    if (dest / DATASET_FOLDER).exists() and not overwrite:
        raise OutputExists(f"{dest / DATASET_FOLDER}: already exists; pass --overwrite to replace it")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        workspace = Path(tempfile.mkdtemp(prefix=".pneumo-download-", dir=dest))
    except OSError as error:
        raise SettingsError(f"{dest}: --dest cannot be written ({error.strerror or error})") from None
    try:
        if source == "kaggle" and url is None:
            extracted = _kaggle(workspace)
        else:
            address = url or SOURCES[source]["url"]
            if not address.startswith(("http://", "https://")):
                raise SettingsError(f"{address}: only http(s) URLs are supported")
            archive = workspace / "archive.zip"
            fetch(address, archive, sha256 or SOURCES.get(source, {}).get("sha256"), progress)
            extracted = safe_extract(archive, workspace / "extracted")
        return install(extracted, dest, overwrite)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def _kaggle(workspace: Path) -> Path:
    try:
        import kagglehub
    except ImportError:
        raise DownloadError(
            "the kaggle source needs kagglehub: pip install kagglehub (or use --source mendeley)"
        ) from None
    try:
        cached = Path(kagglehub.dataset_download(SOURCES["kaggle"]["handle"]))
    except Exception as error:  # noqa: BLE001 - kagglehub raises its own error types
        raise DownloadError(f"kagglehub download failed: {error}") from None
    names = [str(path.relative_to(cached).as_posix()) for path in cached.rglob("*") if path.is_file()]
    prefix = _dataset_prefix(names)
    root = workspace / "extracted" / DATASET_FOLDER
    for split in SPLITS:
        if (cached / prefix / split).is_dir():
            shutil.copytree(cached / prefix / split, root / split)
    return root
