"""Shared fixtures: a synthetic data set and a tiny trained model with its card, made once per session."""

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    from pneumo_utils.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "chest_xray", images_per_class=24,
                                   image_size=64, seed=1)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, synthetic_root):
    """A real (tiny) model trained for two epochs on the synthetic set, saved with its card."""
    from pneumo_utils import config, train

    workspace = tmp_path_factory.mktemp("tiny_model")
    settings = config.load_config("smoke", output_dir=str(workspace), data_dir=str(synthetic_root), image_size=32,
                                  filters=[4, 8], epochs=2, val_fraction=0.25, seed=0)
    run = train.prepare(settings, synthetic_root)
    train.fit(run, checkpoint_dir=workspace / "checkpoints", verbose=0)
    train.finish(run, workspace / "tiny.keras")
    return workspace / "tiny.keras"
