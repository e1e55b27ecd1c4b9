"""Small helpers shared by the tests."""

import subprocess
import sys
from pathlib import Path

import numpy as np

SHARED_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray" / "train"


def real_training_files(count_per_class: int = 3) -> list[Path]:
    """A handful of real file names from ../shared when it exists (CI has it), else an empty list."""
    files = []
    for label in ("NORMAL", "PNEUMONIA"):
        folder = SHARED_TRAIN / label
        if folder.is_dir():
            files += sorted(folder.glob("*.jpeg"))[:count_per_class]
    return files


def minimal_card(image_size: int, threshold: float = 0.5) -> dict:
    """The least a model card must hold for ``load_model``: the input size and the threshold."""
    return {"preprocessing": {"image_size": int(image_size)}, "threshold": {"value": threshold}}


def write_png(path: Path, array: np.ndarray) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")
    return path


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
) -> Path:
    """A minimal single-frame DICOM file, written with pydicom (uncompressed unless told otherwise)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(transfer_syntax)
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = 16
    dataset.BitsStored = 12
    dataset.HighBit = 11
    dataset.PixelRepresentation = 0
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    if window:
        dataset.WindowCenter, dataset.WindowWidth = window
    if meta.TransferSyntaxUID.is_compressed:
        dataset.PixelData = encapsulate([b"\x00" * 64])  # not a real codestream: decoding must fail cleanly
    else:
        dataset.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


PNEUMO = [sys.executable, "-m", "pneumo_utils.cli"]  # the `pneumo` command of this Python, as a new process


def pneumo(*arguments, timeout=300, process=False, env=None):
    """``pneumo ARGUMENTS`` -> a CompletedProcess: in this process (:func:`run_pneumo_here`), or a real one
    with ``process=True`` or an ``env`` (what only a separate process shows: a quiet terminal, races)."""
    if process or env is not None:
        return subprocess.run([*PNEUMO, *map(str, arguments)], capture_output=True, text=True, timeout=timeout, env=env)
    return run_pneumo_here(*arguments)


def tiny_settings(output_dir, data_dir, **changes):
    """The smoke profile made as small as a real training goes (32 px, two conv blocks of 4 and 8 filters, one
    epoch), on ``data_dir``: the settings of the tests' tiny models; ``changes`` override any of them."""
    from pneumo_utils import config

    tiny = {"image_size": 32, "filters": [4, 8], "epochs": 1, "val_fraction": 0.25, "seed": 0}
    return config.load_config("smoke", output_dir=str(output_dir), data_dir=str(data_dir), **(tiny | changes))


def run_pneumo_here(*arguments):
    """``pneumo ARGUMENTS`` in this process, as its entry point runs it -> a CompletedProcess (returncode,
    stdout, stderr). TensorFlow is imported once for the whole session instead of once per command; what only
    a separate process shows (a quiet terminal, signals, races) is tested with real processes."""
    import io
    import subprocess
    from contextlib import redirect_stderr, redirect_stdout

    from pneumo_utils.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            code = main([str(argument) for argument in arguments])
        except SystemExit as stop:  # argparse's own usage errors, --help and --version
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    return subprocess.CompletedProcess(arguments, code, stdout.getvalue(), stderr.getvalue())


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll ``condition`` until it returns something true (returned); fail naming ``what`` after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} ({timeout} s)")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    from pneumo_utils.runs.serve import free_port as free

    return free()


def finished_run(folder: Path, model_path: Path, files: dict[str, str]) -> Path:
    """A run folder ``pneumo promote`` accepts: the model with its card and gate (renamed ``pneumonia_cnn``),
    ``files`` (relative path -> text) and a run summary with status ok."""
    import json

    for source in (model_path, model_path.with_suffix(".json"), model_path.with_name(model_path.stem + ".ood.npz")):
        target = folder / "model" / ("pneumonia_cnn" + source.name.removeprefix(model_path.stem))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    (folder / "run_summary.json").write_text(json.dumps({"status": "ok"}))
    return folder
