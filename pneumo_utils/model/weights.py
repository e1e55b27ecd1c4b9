"""ImageNet weight files for the pretrained backbones, found the way Keras users expect.

A profile says ``weights: imagenet``. For a backbone whose official Keras file is pinned here (name and
SHA-256), that file is looked for, in order:

1. ``$PNEUMO_WEIGHTS_DIR/<Keras's file name>`` (a folder you fill yourself: a shared drive, a classroom copy);
2. Keras's own cache, ``$KERAS_HOME/models/`` (``~/.keras/models/`` by default), where ``keras.applications``
   puts what it downloads;
3. downloaded with ``keras.utils.get_file`` from Keras's official address, checked against the pinned SHA-256,
   into that cache (with a progress bar).

Offline and nowhere to be found, :class:`WeightsNotFound` says in one line which file, its SHA-256, its official
address and the two folders it may be put in. A file that is found but has other bytes is refused. The model
card records the file name and the SHA-256, never where it lay on this machine.

MobileNetV2's weights do not depend on the input size (all its layers are convolutions), so the 224-pixel file
is used at every input size (Keras would fetch a file per size; the bytes at 224 px are the ones pinned here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR_ENV = "PNEUMO_WEIGHTS_DIR"
URL_ENV = "PNEUMO_WEIGHTS_URL"  # another base address (a mirror) instead of Keras's own
KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


class WeightsNotFound(ValueError):
    """A pinned ImageNet file that is nowhere on this machine and could not be downloaded, or has other bytes."""


@dataclass(frozen=True)
class ImagenetFile:
    """One official Keras Applications weight file: where Keras keeps it, and its bytes' SHA-256."""

    backbone: str
    alpha: float
    file_name: str
    sha256: str
    folder: str  # under Keras's base address

    @property
    def url(self) -> str:
        return os.environ.get(URL_ENV, KERAS_BASE_URL).rstrip("/") + f"/{self.folder}/{self.file_name}"

    @property
    def official_url(self) -> str:
        return f"{KERAS_BASE_URL}{self.folder}/{self.file_name}"


PINNED = {
    ("mobilenetv2", 0.35): ImagenetFile(
        "mobilenetv2",
        0.35,
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
        "df1c3db1d0d9193719c4c70f707c56f7021f999f825bdc57454c275cf6def19f",
        "mobilenet_v2",
    ),
    ("mobilenetv2", 0.5): ImagenetFile(
        "mobilenetv2",
        0.5,
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5",
        "279052de2cfa801003aa6cc25cc4d007d35dd0b76f06935268c79788b7642d05",
        "mobilenet_v2",
    ),
}


def pinned_imagenet(backbone: str | None, alpha: float = 1.0) -> ImagenetFile | None:
    """The pinned ImageNet file of a backbone at a width, or None (Keras then downloads its own, unpinned)."""
    return PINNED.get((backbone or "", float(alpha)))


def keras_cache() -> Path:
    """Keras's download cache for model files: ``$KERAS_HOME/models`` (``~/.keras/models`` by default)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def search_folders() -> list[Path]:
    """Where a pinned file is looked for, in order: ``$PNEUMO_WEIGHTS_DIR`` (when set), then Keras's cache."""
    folders = [Path(os.environ[WEIGHTS_DIR_ENV])] if os.environ.get(WEIGHTS_DIR_ENV) else []
    return folders + [keras_cache()]


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find(spec: ImagenetFile) -> Path | None:
    """The pinned file where it already lies (checked by SHA-256), or None; one with other bytes is refused."""
    for folder in search_folders():
        path = folder / spec.file_name
        if path.is_file():
            digest = file_sha256(path)
            if digest != spec.sha256:
                raise WeightsNotFound(
                    f"{path}: SHA-256 is {digest}, not Keras's {spec.sha256}; remove it or put the official file there"
                )
            return path
    return None


def _not_found(spec: ImagenetFile, reason: str) -> WeightsNotFound:
    where = " or ".join(
        [f"${WEIGHTS_DIR_ENV}/ (set it to a folder)"] * (not os.environ.get(WEIGHTS_DIR_ENV))
        + [str(folder) + "/" for folder in search_folders()]
    )
    return WeightsNotFound(
        f"ImageNet weights {spec.file_name} (SHA-256 {spec.sha256}) are not on this machine and could not be "
        f"downloaded ({reason}); get them from {spec.official_url} (or run pneumo download --weights where there "
        f"is internet) and put the file in {where}"
    )


def fetch_imagenet(spec: ImagenetFile, download: bool = True) -> Path:
    """The pinned file: found (:func:`find`), else downloaded into Keras's cache with its SHA-256 checked."""
    found = find(spec)
    if found is not None:
        return found
    if not download:
        raise _not_found(spec, "downloads turned off")
    import keras

    cache = keras_cache()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        path = keras.utils.get_file(
            spec.file_name,
            spec.url,
            file_hash=spec.sha256,
            hash_algorithm="sha256",
            cache_dir=str(cache.parent),
            cache_subdir=cache.name,
        )
    except Exception as error:  # offline, refused, a proxy page, a wrong hash: all the same to the user
        reason = " ".join(str(error).replace(spec.url, "its address").split())[:160] or type(error).__name__
        raise _not_found(spec, reason) from None
    path = Path(path)
    if not path.is_file() or file_sha256(path) != spec.sha256:
        raise _not_found(spec, "the downloaded file has other bytes")
    return path
