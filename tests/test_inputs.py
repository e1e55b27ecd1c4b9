"""Every input format the reader accepts, and every bad input it must refuse with one clear line."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from helpers import write_dicom, write_png

from pneumo_utils.images import ImageReadError, Preprocessing, read_image

PREPROCESSING = Preprocessing(image_size=32)


def _ramp(height=64, width=48, low=100, high=3000):
    return np.tile(np.linspace(low, high, width), (height, 1)).astype(np.uint16)


def test_dicom_monochrome2_is_read_left_dark_right_bright(tmp_path):
    image = read_image(write_dicom(tmp_path / "m2.dcm", _ramp()), PREPROCESSING)
    assert image.shape == (32, 32) and image[:, :4].mean() < 30 and image[:, -4:].mean() > 225


def test_dicom_monochrome1_is_inverted(tmp_path):
    image = read_image(write_dicom(tmp_path / "m1.dcm", _ramp(), photometric="MONOCHROME1"), PREPROCESSING)
    assert image[:, :4].mean() > 225 and image[:, -4:].mean() < 30


def test_dicom_window_is_applied(tmp_path):
    # a narrow window around the middle of the ramp: both ends saturate, so more pixels sit at 0 and 255
    plain = read_image(write_dicom(tmp_path / "plain.dcm", _ramp()), PREPROCESSING)
    windowed = read_image(write_dicom(tmp_path / "win.dcm", _ramp(), window=(1550, 600)), PREPROCESSING)
    assert (windowed <= 2).sum() > (plain <= 2).sum() + 100 and (windowed >= 253).sum() > (plain >= 253).sum() + 100


def test_dicom_rescale_does_not_change_the_picture_shape(tmp_path):
    plain = read_image(write_dicom(tmp_path / "a.dcm", _ramp()), PREPROCESSING)
    rescaled = read_image(write_dicom(tmp_path / "b.dcm", _ramp(), slope=2.0, intercept=-1024), PREPROCESSING)
    np.testing.assert_allclose(plain, rescaled, atol=2)


def test_compressed_dicom_without_decoder_is_refused_clearly(tmp_path):
    path = write_dicom(tmp_path / "j2k.dcm", _ramp(), transfer_syntax="1.2.840.10008.1.2.4.90")
    with pytest.raises(ImageReadError, match=r"j2k.dcm: cannot decode DICOM pixel data, transfer syntax JPEG 2000"):
        read_image(path, PREPROCESSING)


def _jpeg_bytes(size=64):
    return cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (size, size), dtype=np.uint8))[1].tobytes()


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("empty.jpeg", lambda: b"", "empty file"),
        ("text.png", lambda: b"hello, I am not an image", "not a readable image"),
        ("truncated.jpeg", lambda: _jpeg_bytes()[:-40], "truncated JPEG"),
        (
            "truncated.png",
            lambda: cv2.imencode(".png", np.zeros((64, 64), np.uint8))[1].tobytes()[:-20],
            "truncated PNG",
        ),
        ("tiny.png", lambda: cv2.imencode(".png", np.zeros((1, 1), np.uint8))[1].tobytes(), "image too small (1x1"),
        ("fake.dcm", lambda: b"\x00" * 200, "not a readable DICOM file"),
    ],
)
def test_bad_inputs_raise_one_line_naming_the_file(tmp_path, name, make, message):
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(ImageReadError) as error:
        read_image(path, PREPROCESSING)
    text = str(error.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_very_large_image_is_refused_from_its_header(tmp_path):
    path = write_png(tmp_path / "huge.png", np.zeros((10000, 10000), np.uint8))
    with pytest.raises(ImageReadError, match=r"huge.png: image too large \(10000x10000 px"):
        read_image(path, PREPROCESSING)


def test_any_aspect_ratio_is_stretched_to_the_input_size(tmp_path):
    path = write_png(tmp_path / "wide.png", np.full((40, 400), 200, np.uint8))
    assert read_image(path, PREPROCESSING).shape == (32, 32)


def _deflated_dicom_bomb(path, side=16384):
    """A deflated DICOM whose pixel data inflate to side x side x 2 bytes of zeros (512 MB for 16384), made
    in chunks: a small file (about 0.5 MB) that pydicom alone would inflate whole before reading its header."""
    import zlib

    from pneumo_utils.images import DEFLATED_DICOM

    write_dicom(path, np.zeros((16, 16), np.uint16), transfer_syntax=DEFLATED_DICOM)
    data = path.read_bytes()
    start = 128 + 4 + 12 + int.from_bytes(data[140:144], "little")
    dataset = zlib.decompress(data[start:], -zlib.MAX_WBITS)
    dataset = dataset[: dataset.index(b"\xe0\x7f\x10\x00")]  # everything before the pixel data element
    dataset = dataset.replace((16).to_bytes(2, "little") * 2, side.to_bytes(2, "little") * 2, 1)  # Rows, Columns
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [compressor.compress(dataset + b"\xe0\x7f\x10\x00OW\x00\x00" + (side * side * 2).to_bytes(4, "little"))]
    zeros = bytes(1 << 22)
    for _ in range(side * side * 2 // len(zeros)):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.flush())
    path.write_bytes(data[:start] + b"".join(parts))
    return path


@pytest.mark.slow
def test_a_deflated_dicom_bomb_is_refused_before_it_is_inflated(tmp_path):

    bomb = _deflated_dicom_bomb(tmp_path / "bomb.dcm")
    assert bomb.stat().st_size < 2_000_000
    probe = (
        "import sys\nfrom pneumo_utils.images import ImageReadError, Preprocessing, read_image\n"
        "try:\n    read_image(sys.argv[1], Preprocessing(image_size=32))\n"
        "except ImageReadError as error:\n    print(error)\n"
        # the peak of this process image (VmHWM); ru_maxrss would carry the parent's size across the exec
        "print('peak_kb', [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0])\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(bomb)], capture_output=True, text=True, timeout=120)
    assert "inflates beyond" in result.stdout, (result.stdout, result.stderr[-2000:])
    peak_kb = int(result.stdout.split("peak_kb")[-1])
    assert peak_kb < 600_000  # the 512 MB were never held


def test_a_dicom_whose_header_says_too_many_pixels_is_refused_before_decoding(tmp_path):
    from pydicom import dcmread

    path = write_dicom(tmp_path / "big.dcm", np.zeros((16, 16), np.uint16))
    dataset = dcmread(path)
    dataset.Rows = dataset.Columns = 9000
    dataset.save_as(path)
    with pytest.raises(ImageReadError, match="too large .* in the DICOM header"):
        read_image(path, PREPROCESSING)


def test_a_dicom_with_window_width_zero_is_one_line(tmp_path):
    with pytest.raises(ImageReadError, match="window width 0") as caught:
        read_image(write_dicom(tmp_path / "voi_zero.dcm", _ramp(), window=(100, 0)), PREPROCESSING)
    assert "\n" not in str(caught.value)


def test_a_jpeg_with_bytes_after_its_end_marker_is_read(tmp_path):
    ok, encoded = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8))
    path = tmp_path / "trailing.jpg"
    path.write_bytes(encoded.tobytes() + b"appended by an editor \xff\xd8 and more")
    assert read_image(path, PREPROCESSING).shape == (32, 32)
    path.write_bytes(encoded.tobytes()[:-300])  # but a cut one is still truncated
    with pytest.raises(ImageReadError, match="truncated JPEG"):
        read_image(path, PREPROCESSING)


def test_a_float_tiff_with_a_nan_pixel_is_refused_in_one_line(tmp_path):
    pixels = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    pixels[3, 5] = np.nan
    path = tmp_path / "nan.tiff"
    assert cv2.imwrite(str(path), pixels)
    with pytest.raises(ImageReadError, match="1 pixel\\(s\\) are not numbers"):
        read_image(path, PREPROCESSING)


def test_exif_orientation_is_honoured(tmp_path):
    import numpy as np
    from PIL import Image

    from pneumo_utils.images import Preprocessing, read_image

    upright = np.zeros((60, 40), np.uint8)
    upright[:10] = 255  # bright band at the top
    Image.fromarray(upright).save(tmp_path / "upright.jpeg", quality=95)
    stored = np.rot90(upright, k=1)  # stored turned left; EXIF 6 says: turn right to view
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "turned.jpeg", quality=95, exif=exif)
    size = Preprocessing(image_size=40)
    a, b = read_image(tmp_path / "upright.jpeg", size), read_image(tmp_path / "turned.jpeg", size)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3


def test_tiff_and_webp_are_read_by_name_and_in_folders(tmp_path):
    import cv2
    import numpy as np

    from pneumo_utils import predict
    from pneumo_utils.images import Preprocessing, read_image

    picture = np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)
    for name in ("a.tiff", "b.tif", "c.webp"):
        cv2.imwrite(
            str(tmp_path / "folder" / name) if (tmp_path / "folder").mkdir(exist_ok=True) is None else "", picture
        )
        assert read_image(tmp_path / "folder" / name, Preprocessing(image_size=32)).shape == (32, 32)
    files, problems = predict.collect_inputs([tmp_path / "folder"])
    assert sorted(path.name for path in files) == ["a.tiff", "b.tif", "c.webp"] and not problems


def test_a_fifo_is_not_a_regular_file(tmp_path):
    from pneumo_utils.images import ImageReadError, Preprocessing, read_image

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(fifo, Preprocessing(image_size=32))
