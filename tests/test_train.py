"""Training: class weights, optimizers, and resuming an interrupted run."""

import keras
import numpy as np
import pytest

from pneumo_utils import data, model, train


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
from pneumo_utils import data, model, train

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
