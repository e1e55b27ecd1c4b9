"""Training: class weights, optimizers, and resuming an interrupted run."""

import keras
import numpy as np
import pytest
from helpers import tiny_settings

from pneumo_utils import data, model
from pneumo_utils.model import train


def test_class_weights_balance_the_classes():
    weights = train.class_weights(np.array([0, 1, 1, 1]))
    assert weights == {0: 2.0, 1: pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="both classes"):
        train.class_weights(np.array([1, 1]))


def test_optimizer_choices():
    assert isinstance(train.make_optimizer("adamw", 1e-3, 1e-4, "cosine", total_steps=10), keras.optimizers.AdamW)
    with pytest.raises(ValueError, match="total number of training steps"):
        train.make_optimizer("adam", 1e-3, schedule="cosine")
    with pytest.raises(ValueError, match="unknown optimizer"):
        train.make_optimizer("sgd", 1e-3)


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, after_epoch):
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after_epoch:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_interrupted_training_resumes_from_the_last_epoch(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (32, 32, 32), dtype=np.uint8)
    targets = (np.arange(32) % 2).astype(np.float32)
    dataset = data.make_dataset(images, targets, batch_size=8)

    def fresh():
        keras.utils.set_random_seed(0)
        return train.compile_model(model.build_model(32, filters=(4,), dropout=0.0), 1e-3)

    with pytest.raises(KeyboardInterrupt):
        train.fit_model(
            fresh(),
            dataset,
            dataset,
            epochs=4,
            patience=10,
            class_weight=None,
            checkpoint_dir=tmp_path,
            verbose=0,
            callbacks=[_Interrupt(after_epoch=2)],
        )
    assert (tmp_path / "backup").is_dir() and (tmp_path / "best.keras").is_file()
    resumed = train.fit_model(
        fresh(),
        dataset,
        dataset,
        epochs=4,
        patience=10,
        class_weight=None,
        checkpoint_dir=tmp_path,
        verbose=0,
        resume=True,
    )
    # epochs 1-2 were not run again, and the record still covers every epoch (with each epoch's time)
    assert resumed["epoch"].tolist() == [1, 2, 3, 4] and resumed["epoch_seconds"].notna().all()
    assert not (tmp_path / "backup").exists()  # a finished run removes its backup
    restarted = train.fit_model(
        fresh(),
        dataset,
        dataset,
        epochs=2,
        patience=10,
        class_weight=None,
        checkpoint_dir=tmp_path,
        verbose=0,
        resume=False,
    )
    assert restarted["epoch"].tolist() == [1, 2]


_KILLABLE_TRAINING = """
import sys
import keras
import numpy as np
from pneumo_utils import data, model
from pneumo_utils.model import train

resume = sys.argv[2] == "resume"
rng = np.random.default_rng(0)
images = rng.integers(0, 255, (64, 32, 32), dtype=np.uint8)
targets = (np.arange(64) % 2).astype(np.float32)
dataset = data.make_dataset(images, targets, batch_size=8)
keras.utils.set_random_seed(0)
network = train.compile_model(model.build_model(32, filters=(4,), dropout=0.0), 1e-3)
print("training", flush=True)
history = train.fit_model(network, dataset, dataset, epochs=12, patience=100, class_weight=None,
                          checkpoint_dir=sys.argv[1], verbose=0, resume=resume)
print("epochs", ",".join(str(epoch) for epoch in history["epoch"]), flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_a_training_killed_at_any_moment_resumes(tmp_path, seed):
    """SIGKILL at a random moment of the training (during an epoch or while its backup is written), then
    resume=true: the run continues and finishes with every epoch recorded, never a torn backup."""
    import random
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "training.py"
    script.write_text(_KILLABLE_TRAINING)
    checkpoints = tmp_path / "checkpoints"
    first = subprocess.Popen(
        [sys.executable, str(script), str(checkpoints), "fresh"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert first.stdout.readline().strip() == "training"
    time.sleep(random.Random(seed).uniform(0.5, 4.0))  # the 12 epochs take several seconds: somewhere inside
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL, "the training ended before it was killed"
    resumed = subprocess.run(
        [sys.executable, str(script), str(checkpoints), "resume"], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    epochs = resumed.stdout.strip().splitlines()[-1]
    assert epochs == "epochs " + ",".join(str(epoch) for epoch in range(1, 13)), epochs


@pytest.mark.slow
def test_profile_members_train_into_one_saved_ensemble(synthetic_root, tmp_path):
    from pneumo_utils.model import train

    settings = tiny_settings(
        tmp_path,
        synthetic_root,
        members=[{"seed": 1}, {"seed": 2, "image_size": 40, "augment_border": 0.1}],
    )
    run = train.prepare(settings, synthetic_root)
    assert run.network.input_shape == (None, 40, 40, 1)
    train.fit(run, checkpoint_dir=tmp_path / "checkpoints", verbose=0)
    card = train.finish(run, tmp_path / "ensemble.keras")
    assert card["training"]["members"] == 2 and card["training"]["kept_epochs"] == [1, 1]
    assert card["preprocessing"]["image_size"] == 40
    loaded, _ = model.load_model(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(model.predict_probabilities(loaded, run.val_images), run.val_probabilities, atol=1e-6)


@pytest.mark.slow
def test_a_frozen_backbone_trains_only_its_regularized_head():
    import keras

    from pneumo_utils import model

    network = model.build_backbone_model(32, "mobilenetv2", weights=None, alpha=0.35, trainable=False, head_l2=0.01)
    trainable = sum(int(np.prod(weight.shape)) for weight in network.trainable_weights)
    assert trainable == 2 * 1280 + 1280 + 1  # feature batch norm (scale, offset) and the logit's weights and bias
    before = [weight.numpy().copy() for weight in network.non_trainable_weights]
    network.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    network.fit(images, np.r_[np.zeros(4), np.ones(4)], epochs=1, verbose=0)
    moving = [name for name in (weight.path for weight in network.non_trainable_weights) if "feature_norm" in name]
    unchanged = [
        np.array_equal(old, weight.numpy())
        for old, weight in zip(before, network.non_trainable_weights, strict=True)
        if "feature_norm" not in weight.path
    ]
    assert moving and all(unchanged)  # the backbone, its batch-norm statistics included, did not move
    assert network.losses  # the L2 penalty of the head is part of the loss


@pytest.mark.slow
def test_training_can_choose_the_epoch_and_calibrate_on_test_dev_without_a_gradient_step_on_it(tmp_path):
    """``selection_split`` and ``calibration_split: test-dev``: early stopping watches test-dev, and the run's
    model is calibrated as pneumo calibrate does, after training on train/ only; the validation figures in its
    card are at the new threshold."""
    from pneumo_utils.data.synthetic import write_synthetic_dataset
    from pneumo_utils.model import load_model, train

    root = write_synthetic_dataset(
        tmp_path / "chest_xray", images_per_class=100, image_size=48, seed=3, test_fraction=0.6
    )  # test-dev: 27 NORMAL, 22 PNEUMONIA (names fix the halves)
    settings = tiny_settings(
        tmp_path / "run",
        root,
        val_fraction=0.2,
        calibration_split="test-dev",
        selection_split="test-dev",
        min_sensitivity=0.85,  # 22 positives support a bounded 0.85 (0 misses: lower bound 0.873), not 0.95
    )
    run = train.prepare(settings, root)
    assert not set(run.train_rows["path"]) & set(data.select_split(run.index, "test", 0.2, 0)["path"])
    assert len(run.monitor_images) == 49 and len(run.val_images) != 49  # early stopping watches test-dev
    train.fit(run, checkpoint_dir=tmp_path / "checkpoints", verbose=0)
    card = train.finish(run, tmp_path / "model.keras")
    site = card["site_calibration"]
    assert site["sample"]["split"] == "test-dev" and site["sample"]["counts"] == {"NORMAL": 27, "PNEUMONIA": 22}
    assert card["validation_metrics"]["threshold"] == card["threshold"]["value"] == site["after"]["threshold"]
    assert card["validation_metrics"]["calibration"]["temperature"] == site["temperature"]
    assert card["training"]["epoch_chosen_on"].startswith("test-dev (used for selection")
    _, saved = load_model(tmp_path / "model.keras")
    assert saved["threshold"] == card["threshold"]
