"""Every input format the reader accepts, and every bad input it must refuse with one clear line."""

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
        ("truncated.png", lambda: cv2.imencode(".png", np.zeros((64, 64), np.uint8))[1].tobytes()[:-20],
         "truncated PNG"),
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
