"""Shared fixtures: a synthetic data set, a tiny trained model with its card, and a finished smoke run, each
made once per session (per pytest-xdist worker), and the grouping that keeps the suite's two workers apart."""

import subprocess
import sys

import keras
import pytest
from helpers import tiny_settings

from pneumo_utils import data, model


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    from pneumo_utils.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic") / "chest_xray", images_per_class=24, image_size=64, seed=1
    )


@pytest.fixture(scope="session")
def site_model_path(tmp_path_factory, synthetic_root):
    """A tiny model that tells the synthetic classes apart (four epochs: ROC-AUC 0.997 on a synthetic site's
    test/): calibration refuses a model that cannot, and the two-epoch model below ranks a site's images about
    backwards (ROC-AUC 0.26). Saved as ``tiny.keras``, like that one."""
    from pneumo_utils.model import train

    workspace = tmp_path_factory.mktemp("site_model")
    run = train.prepare(tiny_settings(workspace, synthetic_root, epochs=4), synthetic_root)
    train.fit(run, checkpoint_dir=workspace / "checkpoints", verbose=0)
    train.finish(run, workspace / "tiny.keras")
    return workspace / "tiny.keras"


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, synthetic_root):
    """A real (tiny) model trained for two epochs on the synthetic set, saved with its card."""
    from pneumo_utils.model import train

    workspace = tmp_path_factory.mktemp("tiny_model")
    settings = tiny_settings(workspace, synthetic_root, epochs=2)
    run = train.prepare(settings, synthetic_root)
    train.fit(run, checkpoint_dir=workspace / "checkpoints", verbose=0)
    train.finish(run, workspace / "tiny.keras")
    return workspace / "tiny.keras"


@pytest.fixture(scope="session")
def smoke_run_process(tmp_path_factory):
    """One finished ``pneumo run --profile smoke`` (all four notebooks, the profile as a student runs it; the
    one ``-p`` repeats the profile's seed) for the whole session: the pipeline, explorer and report tests read
    it. Returns the folder and the finished process (its terminal output)."""
    folder = tmp_path_factory.mktemp("smoke_run") / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pneumo_utils.cli",
            "run",
            "--profile",
            "smoke",
            "--output-dir",
            str(folder),
            "-p",
            "seed=42",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, result


@pytest.fixture(scope="session")
def smoke_run(smoke_run_process):
    return smoke_run_process[0]


@pytest.fixture(scope="module")
def synthetic_index(synthetic_root):
    """The index of the session's synthetic data set."""
    return data.index_dataset(synthetic_root)


@pytest.fixture(scope="module")
def two_members():
    """Two small CNNs of different input sizes and layers: the members of the ensembles under test."""
    keras.utils.set_random_seed(0)
    small = model.build_model(48, filters=(4, 8), augmentation={"border": 0.1}, normalization="standardize")
    large = model.build_model(64, filters=(4, 8), augmentation={})
    return small, large


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the test ids
def pytest_collection_modifyitems(items):
    """Under pytest-xdist (``-n 2 --dist loadgroup``, the project's default), every test that reads the session's
    smoke run runs on one worker, so the run is made once. The notebooks' own group (one worker, in order) is set
    in the root conftest.py, which also stops the suite when a pytest / pytest-xdist pair loses the groups."""
    for item in items:
        if {"smoke_run", "smoke_run_process"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("smoke_run"))
