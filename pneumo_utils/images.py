"""The one image reader: any supported file on disk -> the grayscale array the model sees.

Training, evaluation, Grad-CAM and prediction all call :func:`read_image`, and the model card records
the :class:`Preprocessing` it used, so what the model saw in training is what it sees in use.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from pneumo_utils.outputs import first_line

logger = logging.getLogger(__name__)

# One list everywhere: a file type read when named is also found inside folders, and the reverse.
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp", ".dcm", ".dicom")
DICOM_EXTENSIONS = (".dcm", ".dicom")
MIN_SIDE = 16  # pixels; anything smaller cannot be a chest X-ray
MAX_PIXELS = 64_000_000  # about 8000 x 8000; real radiographs are below 20 megapixels

try:  # OpenCV prints libjpeg/libpng warnings to stderr; we report bad files ourselves, one line each.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
except AttributeError:  # pragma: no cover - older OpenCV builds
    pass


class ImageReadError(ValueError):
    """A file that cannot be turned into a model input; the message names the file and the problem."""


class TooManyUnreadableError(RuntimeError):
    """More than the allowed share of a data set could not be read."""


@dataclass(frozen=True)
class Preprocessing:
    """Everything that turns a file into a model input; stored in the model card.

    image_size: side of the square input; images are stretched to it (the public data set's own
        224 px copies are stretched the same way), with area interpolation.
    clahe: apply contrast-limited adaptive histogram equalization after resizing.
    """

    image_size: int
    clahe: bool = False
    color_mode: str = "grayscale"
    interpolation: str = "area"
    high_bit_depth: str = "min-max to 8 bit"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        known = {key: values[key] for key in cls.__dataclass_fields__ if key in values}
        return cls(**known)


def is_image_file(path: Path) -> bool:
    """An image by extension, not hidden (skips ``.DS_Store`` and macOS ``._*`` resource forks)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _to_grayscale_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3:
        channels = array.shape[2]
        if channels == 1:
            array = array[:, :, 0]
        elif channels == 3:
            array = cv2.cvtColor(array, cv2.COLOR_BGR2GRAY)
        elif channels == 4:
            array = cv2.cvtColor(array, cv2.COLOR_BGRA2GRAY)  # alpha is dropped, not composited
        else:
            raise ImageReadError(f"{path}: unsupported number of channels ({channels})")
    elif array.ndim != 2:
        raise ImageReadError(f"{path}: unsupported image shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    # 16-bit PNGs and windowed DICOM rarely use their full range: stretch the used range to 0-255.
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ImageReadError(f"{path}: {int((~np.isfinite(array)).sum())} pixel(s) are not numbers (NaN or infinite)")
    array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.clip((array - low) * (255.0 / (high - low)) + 0.5, 0, 255).astype(np.uint8)


def _is_dicom(path: Path, data: bytes) -> bool:
    return path.suffix.lower() in DICOM_EXTENSIONS or data[128:132] == b"DICM"


def _read_dicom(path: Path) -> np.ndarray:
    """Pixel data with the modality LUT (rescale) and VOI LUT (windowing) applied; MONOCHROME1 inverted.

    Compressed transfer syntaxes are decoded by whichever pydicom plugin is installed (pylibjpeg,
    gdcm); without one the file is refused with a message that says what to install.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    _check_deflated_dicom(path)
    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # noqa: BLE001 - pydicom raises several types for a bad file
        raise ImageReadError(f"{path}: not a readable DICOM file ({first_line(error, 200)})") from None
    if "PixelData" not in dataset:
        raise ImageReadError(f"{path}: DICOM file has no pixel data")
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if rows * columns * max(frames, 1) > MAX_PIXELS:  # from the header, before the pixels are decoded
        raise ImageReadError(
            f"{path}: image too large ({columns}x{rows} px x {frames} frame(s) in the DICOM "
            f"header; the limit is {MAX_PIXELS / 1e6:.0f} megapixels)"
        )
    syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # noqa: BLE001
        name = getattr(syntax, "name", syntax)
        compressed = syntax is not None and getattr(syntax, "is_compressed", False)
        hint = (
            (
                " (compressed; install a pydicom decoder: pip install pylibjpeg pylibjpeg-libjpeg "
                "pylibjpeg-openjpeg, or python-gdcm)"
            )
            if compressed
            else ""
        )
        detail = "" if compressed else f": {first_line(error)}"
        raise ImageReadError(f"{path}: cannot decode DICOM pixel data, transfer syntax {name}{hint}{detail}") from None
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise ImageReadError(f"{path}: multi-frame DICOM ({dataset.NumberOfFrames} frames) is not supported")
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        if photometric != "RGB":
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        return cv2.cvtColor(pixels.astype(np.uint8), cv2.COLOR_RGB2GRAY)
    width = dataset.get("WindowWidth")
    widths = list(width) if isinstance(width, pydicom.multival.MultiValue) else [width]
    if width is not None and any(value is None or float(value) <= 0 for value in widths):
        raise ImageReadError(f"{path}: DICOM window width {width} (must be positive): cannot window the pixels")
    try:
        pixels = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset).astype(np.float32)
    except Exception as error:  # noqa: BLE001 - a malformed LUT or window in the header
        raise ImageReadError(
            f"{path}: DICOM LUT or windowing cannot be applied ({type(error).__name__}: {first_line(error, 200)})"
        ) from None
    if photometric == "MONOCHROME1":  # bright means low attenuation here: invert to the usual look
        pixels = pixels.max() + pixels.min() - pixels
    return pixels


DEFLATED_DICOM = "1.2.840.10008.1.2.1.99"


def _check_deflated_dicom(path: Path) -> None:
    """A deflated DICOM data set is inflated whole by pydicom before its header can be read: inflate it here
    first, with a cap (the pixel limit at 2 bytes a pixel, plus room for the header), so a small file that
    inflates to gigabytes is refused without the memory."""
    import zlib

    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
    except Exception:  # noqa: BLE001 - not a file meta pydicom can read: dcmread reports it
        return
    if str(meta.get("TransferSyntaxUID", "")) != DEFLATED_DICOM or "FileMetaInformationGroupLength" not in meta:
        return
    with open(path, "rb") as stream:
        stream.seek(128 + 4 + 12 + int(meta.FileMetaInformationGroupLength))
        deflated = stream.read()
    limit = MAX_PIXELS * 2 + 16 * 1024 * 1024
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflater.decompress(deflated, limit)
    except zlib.error as error:
        raise ImageReadError(f"{path}: deflated DICOM data set cannot be inflated ({error})") from None
    if inflater.unconsumed_tail:
        raise ImageReadError(
            f"{path}: deflated DICOM inflates beyond {limit / 1e6:.0f} MB (more than "
            f"{MAX_PIXELS / 1e6:.0f} megapixels); refused before decoding"
        )


def _check_complete(path: Path, data: bytes) -> None:
    """Catch truncated files that decoders would otherwise half-decode (a grey bottom) or complain about.

    A JPEG is complete when an end-of-image marker follows its last start-of-scan, a PNG when an IEND chunk
    follows its last IDAT; bytes after either (some cameras and editors append data) are allowed. Inside a
    JPEG's compressed data a 0xFF byte is always followed by 0x00, so neither marker appears there by chance."""
    end = data.rfind(b"\xff\xd9")
    if data[:3] == b"\xff\xd8\xff" and (end < 0 or end < data.rfind(b"\xff\xda")):
        raise ImageReadError(f"{path}: truncated JPEG (no end-of-image marker after its image data)")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data.rfind(b"IEND") < max(data.rfind(b"IDAT"), 8):
        # the image ends with its IEND chunk; bytes after it (some tools append metadata) are allowed
        raise ImageReadError(f"{path}: truncated PNG (no IEND chunk after its image data)")


_EXIF_TURNS = {  # EXIF orientation tag -> the turn that brings the stored pixels upright (as PIL's exif_transpose)
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.swapaxes(0, 1),  # transposed
    6: lambda a: np.rot90(a, k=-1),  # stored turned left: turn right
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # transversed
    8: lambda a: np.rot90(a, k=1),  # stored turned right: turn left
}


def _apply_exif_orientation(array: np.ndarray, path: Path) -> np.ndarray:
    """Turn the pixels as the EXIF orientation tag says (phones and some scanners store them turned);
    OpenCV's unchanged read ignores the tag, while every viewer honours it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            orientation = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - no readable EXIF: nothing to turn
        return array
    turn = _EXIF_TURNS.get(orientation)
    return np.ascontiguousarray(turn(array)) if turn else array


def _check_size(path: Path) -> None:
    """Refuse absurdly large images from the header, before decoding them into memory."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        raise ImageReadError(f"{path}: image too large (over {MAX_PIXELS / 1e6:.0f} megapixels)") from None
    except Exception:  # noqa: BLE001 - the decoder below reports unreadable files
        return
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            f"{path}: image too large ({width}x{height} px; the limit is {MAX_PIXELS / 1e6:.0f} megapixels)"
        )


# libjpeg's luminance quantization table at quality 50 (its order in the file does not matter: only its sum is used)
_LUMINANCE_TABLE_SUM = 3688
MIN_JPEG_QUALITY = 20  # the training films are JPEGs of quality 75; at 5 the model's answer changed on 2 of 16


def jpeg_quality(data: bytes) -> float | None:
    """The quality (1-100) a JPEG was saved at, estimated from its luminance quantization table as libjpeg
    scales it (the table's sum against quality 50's); None for a file that is not a JPEG or has no such table.
    Tables clipped at 255 make very low qualities read a little high (5 reads as about 13)."""
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xDA:  # the image data starts: no table before it
            return None
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == 0xDB:  # quantization tables: precision (4 bits), table id (4 bits), 64 values
            table, end = at + 4, at + 2 + length
            while table < end:
                wide, identity = data[table] >> 4, data[table] & 0x0F
                size = 128 if wide else 64
                values = np.frombuffer(data[table + 1 : table + 1 + size], dtype=">u2" if wide else np.uint8)
                if identity == 0 and len(values) == 64:
                    scale = 100.0 * float(values.astype(np.float64).sum()) / _LUMINANCE_TABLE_SUM
                    return float(np.clip((200 - scale) / 2 if scale <= 100 else 5000 / scale, 1, 100))
                table += 1 + size
        at += 2 + length
    return None


def read_image(path: str | os.PathLike, preprocessing: Preprocessing, for_the_model: bool = False) -> np.ndarray:
    """Read one file as a ``(size, size)`` uint8 grayscale array, or raise :class:`ImageReadError`.

    JPEG and PNG (8 or 16 bit; L, RGB or RGBA) through OpenCV, DICOM through pydicom. ``for_the_model``
    (a user's file about to be predicted or explained) also refuses a file smaller than half the model's side
    (enlarged more than twice, what the model would read is the reader's blocks, not the film) and a JPEG saved
    below quality ``MIN_JPEG_QUALITY`` (its blocks are lost when it is shrunk, and so is what they hid).
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a regular file")
    data = path.read_bytes()
    if not data:
        raise ImageReadError(f"{path}: empty file")
    if _is_dicom(path, data):
        array = _read_dicom(path)
    else:
        _check_complete(path, data)
        _check_size(path)
        quality = jpeg_quality(data) if for_the_model else None
        if quality is not None and quality < MIN_JPEG_QUALITY:
            raise ImageReadError(
                f"{path}: saved at JPEG quality {quality:.0f} or lower, too compressed for this model to read "
                f"(it needs {MIN_JPEG_QUALITY} or more; its training films are at 75)"
            )
        array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise ImageReadError(f"{path}: not a readable image (corrupt, truncated or another format)")
        array = _apply_exif_orientation(array, path)
    gray = _to_grayscale_uint8(array, path)
    height, width = gray.shape
    if min(height, width) < MIN_SIDE:
        raise ImageReadError(f"{path}: image too small ({width}x{height} px, need at least {MIN_SIDE} px a side)")
    size = preprocessing.image_size
    if for_the_model and 2 * min(height, width) < size:
        raise ImageReadError(
            f"{path}: image too small for this model ({width}x{height} px; it reads {size}x{size}, so it needs at "
            f"least {(size + 1) // 2} px a side)"
        )
    return after_resize(cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA), preprocessing)


def resize_all(images: np.ndarray, size: int) -> np.ndarray:
    """Already-read images ``(n, s, s)`` brought to ``size`` with area interpolation, as the reader (and an
    ensemble's ``Resizing`` layer) does; unchanged when they already have that size."""
    if images.shape[1] == size:
        return images
    if not len(images):
        return np.zeros((0, size, size), images.dtype)
    return np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) for image in images])


def after_resize(resized: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """The steps after resizing (CLAHE when the preprocessing asks for it), on a uint8 image."""
    if preprocessing.clahe:
        return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(resized)
    return resized


def load_images(
    paths: list[str | os.PathLike],
    preprocessing: Preprocessing,
    max_unreadable_fraction: float = 0.01,
    workers: int | None = None,
    population: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read many files in parallel threads (OpenCV releases the GIL).

    Returns ``(images, readable_mask, errors)``: images of the readable files only, shaped
    ``(n_readable, size, size)``, a boolean mask over ``paths``, and one message per unreadable file.
    Each unreadable file is logged as a warning; more than ``max_unreadable_fraction`` of them raises
    :class:`TooManyUnreadableError`, because then something is wrong with the data set, not one file.
    The share is counted against ``population`` (the whole data set these files belong to) when given,
    so one bad file does not stop a run because it fell into a small split.
    """
    size = preprocessing.image_size

    def read(path):
        try:
            return read_image(path, preprocessing), None
        except ImageReadError as error:
            return None, str(error)
        except OSError as error:
            return None, f"{path}: {error.strerror or error}"

    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) * 2)) as pool:
        results = list(pool.map(read, paths))
    mask = np.array([image is not None for image, _ in results], dtype=bool)
    errors = [error for _, error in results if error is not None]
    for error in errors:
        logger.warning("skipped unreadable image: %s", error)
    total = max(population or 0, len(paths))
    if paths and len(errors) > max_unreadable_fraction * total:
        raise TooManyUnreadableError(
            f"{len(errors)} of {total} images are unreadable (more than {max_unreadable_fraction:.0%}); "
            f"first: {errors[0]}"
        )
    images = (
        np.stack([image for image, _ in results if image is not None])
        if mask.any()
        else np.zeros((0, size, size), dtype=np.uint8)
    )
    return images, mask, errors
