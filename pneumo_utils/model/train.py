"""Training, in three steps that notebook 02 shows one by one and `pneumo train` runs in a row:

1. :func:`prepare` indexes the data, carves the patient-grouped validation split, reads the images, and
   builds the model and the class weights;
2. :func:`fit` trains it with early stopping on validation AUC (best weights restored, best epoch
   checkpointed);
3. :func:`finish` chooses the threshold on the validation split and saves the model with its card.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from pneumo_utils import data, evaluate, model
from pneumo_utils.config import Settings, SettingsError, portable_path, resolve_profile_path
from pneumo_utils.images import Preprocessing, resize_all
from pneumo_utils.model import calibrate, ood, operating
from pneumo_utils.model.weights import pinned_imagenet
from pneumo_utils.records import write_json_atomic, write_text_atomic


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow in one call (Keras' own helper)."""
    keras.utils.set_random_seed(seed)


def class_weights(targets: np.ndarray) -> dict[int, float]:
    """Balanced weights ``n / (2 * n_class)``: the rarer class (NORMAL here) counts more in the loss."""
    targets = np.asarray(targets).astype(int)
    counts = np.bincount(targets, minlength=2)
    if (counts == 0).any():
        raise ValueError(f"both classes are needed to train; class counts are {counts.tolist()}")
    return {label: float(len(targets) / (2.0 * count)) for label, count in enumerate(counts)}


def make_optimizer(
    name: str,
    learning_rate: float,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    total_steps: int | None = None,
) -> keras.optimizers.Optimizer:
    """Adam or AdamW, with a constant or cosine-decaying learning rate."""
    rate = learning_rate
    if schedule == "cosine":
        if not total_steps:
            raise ValueError("a cosine schedule needs the total number of training steps")
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps, alpha=0.01)
    elif schedule != "constant":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose constant or cosine")
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=rate)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=rate, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose adam or adamw")


def compile_model(
    network: keras.Model, optimizer: keras.optimizers.Optimizer | float, label_smoothing: float = 0.0
) -> keras.Model:
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        optimizer = keras.optimizers.Adam(learning_rate=float(optimizer))
    network.compile(
        optimizer=optimizer,
        loss=keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing),
        metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
            keras.metrics.Precision(name="precision"),
            keras.metrics.Recall(name="recall"),
        ],
    )
    return network


class _EpochTimer(keras.callbacks.Callback):
    """Records each epoch's wall time and, when ``echo``, prints one line per epoch (``pneumo run`` passes
    these lines to the terminal while the notebook trains)."""

    def __init__(self, echo: bool = False, prefix: str = ""):
        super().__init__()
        self.echo, self.prefix = echo, prefix

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["epoch_seconds"] = time.perf_counter() - self._start
        if self.echo:
            total = self.params.get("epochs", "?")
            print(
                f"{self.prefix}epoch {epoch + 1}/{total}: loss {logs.get('loss', float('nan')):.4f}, "
                f"val AUC {logs.get('val_auc', float('nan')):.4f}, {logs['epoch_seconds']:.0f} s",
                flush=True,
            )


class _EpochLog(keras.callbacks.Callback):
    """Appends each finished epoch's figures to a CSV beside the checkpoints, so that a resumed training
    still reports every epoch (the epochs before the interruption included)."""

    def __init__(self, path: Path, previous: pd.DataFrame | None):
        super().__init__()
        self.path, self.rows = path, [] if previous is None else previous.to_dict("records")

    def on_epoch_end(self, epoch, logs=None):

        self.rows = [row for row in self.rows if row["epoch"] < epoch + 1] + [{"epoch": epoch + 1, **(logs or {})}]
        write_text_atomic(self.path, pd.DataFrame(self.rows).to_csv(index=False))


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, written so that a kill at any moment leaves a usable backup.

    Keras writes ``latest.weights.h5`` in place, so a kill while it is written tears the only copy and the
    run can never resume. Here each epoch's state goes to a new file ``epoch-N.weights.h5``; a small
    ``training_metadata.json`` naming it is then replaced atomically (the moment the new backup counts); only
    then is the previous file removed. A resume reads the metadata and loads the file it names.
    """

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{self._current_epoch}.weights.h5"
        self.model.save_weights(os.path.join(self.backup_dir, name), overwrite=True)
        previous = self._backup_file()
        write_json_atomic(
            Path(self._training_metadata_path),
            {"epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name},
        )
        for stale in Path(self.backup_dir).glob("epoch-*.weights.h5"):
            if stale.name != name and stale.name != previous:
                stale.unlink(missing_ok=True)  # left by a kill between a write and its commit
        if previous and previous != name:
            (Path(self.backup_dir) / previous).unlink(missing_ok=True)

    def _backup_file(self) -> str | None:
        try:
            metadata = json.loads(Path(self._training_metadata_path).read_text())
        except (OSError, ValueError):
            return None
        return metadata.get("weights") if isinstance(metadata, dict) else None

    def _load_model(self):
        name = self._backup_file()
        if name is None:
            return  # no complete backup: start from the first epoch
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, name))
        self.model._initial_epoch = json.loads(Path(self._training_metadata_path).read_text())["epoch"]

    def on_train_begin(self, logs=None):
        self._load_model()


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """The best epoch so far to ``path`` (``.keras``), written beside it and renamed: never a torn file."""

    def __init__(self, path: str | os.PathLike, monitor: str = "val_auc", initial_value_threshold: float | None = None):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.best = -np.inf if initial_value_threshold is None else initial_value_threshold

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not value > self.best:
            return
        self.best = value
        partial = self.path.with_name(self.path.stem + ".partial.keras")
        self.model.save(partial, overwrite=True)
        os.replace(partial, self.path)


def fit_model(
    network: keras.Model,
    train_dataset,
    val_dataset,
    epochs: int,
    patience: int,
    class_weight: dict[int, float] | None,
    checkpoint_dir: str | os.PathLike,
    verbose: int = 2,
    resume: bool = False,
    callbacks: list | None = None,
) -> pd.DataFrame:
    """Train a compiled model with early stopping on ``val_auc`` (best weights restored); the history.

    The best epoch so far is written to ``checkpoint_dir/best.keras``, and the full training state
    (weights, optimizer, epoch) to ``checkpoint_dir/backup`` after every epoch. With ``resume`` an
    interrupted run continues from its last finished epoch; without it, any old backup is discarded.
    Early stopping's patience counter starts afresh on resume, but the history, the best checkpoint and
    the weights kept cover all epochs, those before the interruption included.
    """
    import shutil

    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    backup_dir = checkpoint_dir / "backup"
    epochs_path = checkpoint_dir / "epochs.csv"
    if not resume:
        shutil.rmtree(backup_dir, ignore_errors=True)
        epochs_path.unlink(missing_ok=True)
    previous = pd.read_csv(epochs_path) if resume and epochs_path.exists() else None
    previous_best = float(previous["val_auc"].max()) if previous is not None and len(previous) else None
    callbacks = [  # the backup, the epoch's time and its record first: an interruption loses none of them
        AtomicBackupAndRestore(backup_dir=str(backup_dir)),
        _EpochTimer(echo=verbose > 0),
        _EpochLog(epochs_path, previous),
        *(callbacks or []),
        keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=patience, restore_best_weights=True),
        AtomicModelCheckpoint(checkpoint_dir / "best.keras", monitor="val_auc", initial_value_threshold=previous_best),
    ]
    history = network.fit(
        train_dataset,
        validation_data=val_dataset,
        epochs=epochs,
        class_weight=class_weight,
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=0,
    )  # one line per epoch from _EpochTimer instead of Keras' progress output
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", np.asarray(history.epoch, dtype=int) + 1)  # after a resume, the epochs run now
    if previous is not None and len(frame):
        frame = pd.concat([previous[previous["epoch"] < frame["epoch"].min()], frame], ignore_index=True)
        if (
            previous_best is not None
            and previous_best
            > frame.loc[frame["epoch"] >= frame["epoch"].max() - len(history.epoch) + 1, "val_auc"].max()
        ):
            # the best epoch came before the interruption: its checkpoint holds the weights to keep
            network.set_weights(keras.models.load_model(checkpoint_dir / "best.keras", compile=False).get_weights())
    return frame


def best_epoch(history: pd.DataFrame, monitor: str = "val_auc") -> int:
    """The epoch (1-based) whose weights early stopping kept (of the first member, for an ensemble)."""
    if "member" in history:
        history = history[history["member"] == history["member"].iloc[0]]
    return int(history.loc[history[monitor].idxmax(), "epoch"])


def kept_epochs(history: pd.DataFrame, monitor: str = "val_auc") -> list[int]:
    """The kept epoch of every member (one entry for a single model)."""
    if "member" not in history:
        return [best_epoch(history, monitor)]
    return [best_epoch(rows, monitor) for _, rows in history.groupby("member", sort=True)]


@dataclass(frozen=True)
class MemberRun:
    """One member of an ensemble under training: its own settings (the profile's, changed by its entry of
    ``members``) and its network, whose layers the ensemble shares."""

    settings: Settings
    network: keras.Model


@dataclass(kw_only=True)
class TrainingRun:
    """Everything one training run reads and produces, step by step."""

    settings: Settings
    data_root: Path
    index: pd.DataFrame
    preprocessing: Preprocessing
    train_rows: pd.DataFrame
    val_rows: pd.DataFrame
    train_images: np.ndarray
    train_targets: np.ndarray
    val_images: np.ndarray
    val_targets: np.ndarray
    monitor_images: np.ndarray | None = None  # what early stopping watches when it is not the validation split
    monitor_targets: np.ndarray | None = None
    class_weight: dict[int, float]
    network: keras.Model
    members: list[MemberRun] = field(default_factory=list)  # an ensemble's members, trained one after another
    history: pd.DataFrame | None = None
    seconds: float | None = None
    val_probabilities: np.ndarray | None = None
    card: dict[str, Any] = field(default_factory=dict)


def augmentation_settings(settings: Settings) -> dict[str, float]:
    return {
        key: getattr(settings, f"augment_{key}")
        for key in ("rotation", "zoom", "shift", "contrast", "brightness", "gamma", "border", "sharpness")
        if f"augment_{key}" in settings
    }


def build_from_config(settings: Settings) -> keras.Model:
    """The profile's model: input size, filters (or a pretrained ``backbone``), dropout, augmentation and
    normalization. ``precision`` sets Keras' dtype policy (``float32``, or ``mixed_bfloat16``, which is faster
    only on CPUs with native bfloat16 arithmetic)."""
    keras.mixed_precision.set_global_policy(settings.precision)
    if settings.backbone:
        return model.build_backbone_model(
            settings.image_size,
            settings.backbone,
            weights=settings.weights,
            dropout=settings.dropout,
            augmentation=augmentation_settings(settings),
            alpha=settings.alpha,
            weights_sha256=settings.weights_sha256,
            trainable=settings.backbone_trainable,
            head_l2=settings.head_l2,
        )
    return model.build_model(
        settings.image_size,
        filters=tuple(settings.filters),
        dropout=settings.dropout,
        augmentation=augmentation_settings(settings),
        normalization=settings.normalization,
        batchnorm_momentum=settings.batchnorm_momentum,
    )


def compile_from_config(network: keras.Model, settings: Settings, total_steps: int) -> keras.Model:
    """Compile with the profile's optimizer, learning-rate schedule and label smoothing."""
    optimizer = make_optimizer(
        settings.optimizer, settings.learning_rate, settings.weight_decay, settings.lr_schedule, total_steps
    )
    return compile_model(network, optimizer, label_smoothing=settings.label_smoothing)


MEMBER_FORBIDDEN = (
    "val_fraction",
    "members",
    "output_dir",
    "data_dir",
    "model_path",
    "synthetic",
    "clahe",
    "min_sensitivity",
    "resume",
    "calibration_split",
    "selection_split",
)


def member_settings(settings: Settings) -> list[Settings]:
    """The settings of each ensemble member: the profile's, changed by that member's entry of ``members``.

    An empty ``members`` list means one model with the profile's settings. A member may change the
    recipe (``seed``, ``image_size``, ``filters``, augmentation, ...) but not the data, the split or the
    threshold rule, which the whole ensemble shares.
    """
    members = []
    for number, entry in enumerate(settings.members, start=1):
        unknown = sorted(set(entry) - set(settings))
        forbidden = sorted(set(entry) & set(MEMBER_FORBIDDEN))
        if unknown or forbidden:
            raise SettingsError(
                f"member {number}: unknown setting(s) {unknown}"
                if unknown
                else f"member {number}: {forbidden} are shared by the whole ensemble"
            )
        weights = entry.get("weights")
        if isinstance(weights, str) and weights != "imagenet":  # a path in a profile: from the project root
            entry = {**entry, "weights": str(resolve_profile_path(weights))}
        members.append(settings.replace(**entry, members=[]))
    return members


def prepare(
    settings: Settings,
    data_root: str | os.PathLike,
    index: pd.DataFrame | None = None,
    rows: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> TrainingRun:
    """Seed, index, split (patient-grouped), read the images, build the model and the class weights.

    ``rows`` replaces the usual split with explicit ``(train, validation)`` rows of the index (a shift
    view of :func:`pneumo_utils.data.shift_view`). With ``members`` in the settings, the model is an
    ensemble (:func:`pneumo_utils.model.build_ensemble`) whose members are built here, each with its own
    seed, and trained one after the other by :func:`fit`; images are read once at the largest size.
    """
    set_seed(settings.seed)
    members = member_settings(settings)
    image_size = (
        max([settings.image_size, *(member.image_size for member in members)]) if members else settings.image_size
    )
    preprocessing = Preprocessing(image_size=image_size, clahe=settings.clahe)
    index = data.index_dataset(data_root) if index is None else index
    if rows is None:
        rows = data.grouped_split(index, val_fraction=settings.val_fraction, seed=settings.seed)
    train_rows, val_rows = rows
    train_images, train_targets, train_rows = data.load_split(train_rows, preprocessing, population=len(index))
    val_images, val_targets, val_rows = data.load_split(val_rows, preprocessing, population=len(index))
    monitor_images = monitor_targets = None
    if settings.selection_split != "val":  # the epoch is chosen on test-dev: no gradient step is taken on it
        monitor_rows = data.select_split(index, settings.selection_split, settings.val_fraction, settings.seed)
        monitor_images, monitor_targets, _ = data.load_split(monitor_rows, preprocessing, population=len(index))
    member_runs = []
    for member in members:
        set_seed(member.seed)
        member_runs.append(MemberRun(member, build_from_config(member)))
    network = (
        model.build_ensemble([member.network for member in member_runs]) if members else build_from_config(settings)
    )
    return TrainingRun(
        settings=settings,
        data_root=Path(data_root),
        index=index,
        preprocessing=preprocessing,
        train_rows=train_rows,
        val_rows=val_rows,
        train_images=train_images,
        train_targets=train_targets,
        val_images=val_images,
        val_targets=val_targets,
        monitor_images=monitor_images,
        monitor_targets=monitor_targets,
        class_weight=class_weights(train_targets),
        network=network,
        members=member_runs,
    )


def _fit_one(
    network: keras.Model,
    settings: Settings,
    train_images,
    train_targets,
    val_images,
    val_targets,
    class_weight,
    checkpoint_dir,
    verbose: int,
    resume: bool,
) -> pd.DataFrame:
    train_dataset = data.make_dataset(
        train_images, train_targets, settings.batch_size, shuffle=True, seed=settings.seed
    )
    val_dataset = data.make_dataset(val_images, val_targets, settings.batch_size)
    steps = int(np.ceil(len(train_images) / settings.batch_size)) * settings.epochs
    compile_from_config(network, settings, total_steps=steps)
    return fit_model(
        network,
        train_dataset,
        val_dataset,
        epochs=settings.epochs,
        patience=settings.patience,
        class_weight=class_weight,
        checkpoint_dir=checkpoint_dir,
        verbose=verbose,
        resume=resume,
    )


def _seconds(history: pd.DataFrame, wall: float, resume: bool) -> float:
    """Training time: the wall time of this call, or after a resume the sum over every epoch's time."""
    if resume and "epoch_seconds" in history:
        return float(history["epoch_seconds"].sum())
    return wall


def monitored_label(settings: Settings) -> str:
    """What the ``val_*`` columns of a training history measure: the validation split, or test-dev."""
    return "validation" if settings.selection_split == "val" else data.split_label(settings.selection_split)


def _monitored(run: TrainingRun) -> tuple[np.ndarray, np.ndarray]:
    """The images early stopping watches (``selection_split``): the validation split, or test-dev."""
    if run.monitor_images is None:
        return run.val_images, run.val_targets
    return run.monitor_images, run.monitor_targets


def fit(run: TrainingRun, checkpoint_dir: str | os.PathLike, verbose: int = 2) -> TrainingRun:
    """Compile with the configured optimizer and loss, then train with early stopping.

    An ensemble's members are trained one after the other on the same split; a finished member is kept
    in ``checkpoint_dir/member<k>/finished.keras``, so a resumed run skips it.
    """
    settings = run.settings
    resume = settings.resume
    started = time.perf_counter()
    if not run.members:
        run.history = _fit_one(
            run.network,
            settings,
            run.train_images,
            run.train_targets,
            *_monitored(run),
            run.class_weight,
            checkpoint_dir,
            verbose,
            resume,
        )
        run.seconds = _seconds(run.history, time.perf_counter() - started, resume)
        return run
    histories = []
    for number, member in enumerate(run.members, start=1):
        network = member.network
        folder = Path(checkpoint_dir) / f"member{number}"
        finished = folder / "finished.keras"
        history_file = folder / "history.csv"
        if resume and finished.exists() and history_file.exists():
            network.set_weights(keras.models.load_model(finished, compile=False).get_weights())
            history = pd.read_csv(history_file)
        else:
            set_seed(member.settings.seed)
            size = member.settings.image_size
            if verbose:
                print(f"member {number} of {len(run.members)}: {size} px, seed {member.settings.seed}", flush=True)
            history = _fit_one(
                network,
                member.settings,
                resize_all(run.train_images, size),
                run.train_targets,
                resize_all(_monitored(run)[0], size),
                _monitored(run)[1],
                run.class_weight,
                folder,
                verbose,
                resume,
            )
            history.insert(0, "member", number)
            network.save(finished)
            history.to_csv(history_file, index=False)
        histories.append(history)
    run.history = pd.concat(histories, ignore_index=True)
    run.seconds = _seconds(run.history, time.perf_counter() - started, resume)
    return run


def pretrained_weights(settings: Settings) -> list[dict[str, Any]]:
    """Where each pretrained network (the model, or each ensemble member) started: backbone, width, the weights
    file's name (never where it lay) and its SHA-256, so a card says which ImageNet bytes its model grew from."""
    started = []
    for number, member in enumerate(member_settings(settings) or [settings], start=1):
        if not member.backbone or member.weights is None:
            continue
        entry = {"member": number, "backbone": member.backbone, "alpha": member.alpha}
        spec = pinned_imagenet(member.backbone, member.alpha) if member.weights == "imagenet" else None
        if spec is not None:
            entry |= {"weights": f"imagenet: {spec.file_name} (Keras Applications)", "sha256": spec.sha256}
        elif member.weights == "imagenet":
            entry["weights"] = "imagenet (keras.applications download, not pinned)"
        else:
            entry |= {
                "weights": Path(member.weights).name,
                "sha256": model.check_weights_file(member.weights, member.weights_sha256),
            }
        started.append(entry)
    return started


def finish(run: TrainingRun, model_path: str | os.PathLike) -> model.ModelCard:
    """Choose the temperature and threshold on the validation split (then on ``calibration_split`` when it
    is test-dev), and save the model and its card atomically. Returns the card as saved, read as every user
    of the model reads it."""
    settings = run.settings
    calibration = None
    if settings.calibrate:
        raw = model.predict_probabilities(run.network, run.val_images)
        temperature = evaluate.fit_temperature(run.val_targets, raw)
        run.network = model.with_temperature(run.network, temperature)
        calibration = {
            "method": "temperature scaling fitted on the validation split",
            "temperature": temperature,
            "ece_before": evaluate.expected_calibration_error(run.val_targets, raw),
        }
    run.val_probabilities = model.predict_probabilities(run.network, run.val_images)
    if calibration:
        calibration["ece_after"] = evaluate.expected_calibration_error(run.val_targets, run.val_probabilities)
    threshold = evaluate.choose_threshold(
        run.val_targets, run.val_probabilities, min_sensitivity=settings.min_sensitivity
    )
    val_metrics = evaluate.compute_metrics(run.val_targets, run.val_probabilities, threshold["threshold"])
    run.card = model.make_card(
        settings,
        preprocessing=run.preprocessing.to_dict(),
        threshold={"value": threshold["threshold"], "rule": threshold["rule"]},
        validation_metrics=val_metrics | ({"calibration": calibration} if calibration else {}),
        training={
            "epochs_run": len(run.history),
            "kept_epoch": best_epoch(run.history),
            "epoch_chosen_on": "validation split"
            if settings.selection_split == "val"
            else f"{settings.selection_split} (used for selection; no gradient step on it)",
            "members": len(run.members) or 1,
            "kept_epochs": kept_epochs(run.history),
            "seconds": round(run.seconds, 1),
            "train_images": len(run.train_images),
            "val_images": len(run.val_images),
            "class_weight": {data.CLASS_NAMES[k]: v for k, v in run.class_weight.items()},
        },
        data={
            "data_dir": portable_path(run.data_root),
            "fingerprint": data.dataset_fingerprint(run.index),
            "train_split_images": int((run.index["split"] == "train").sum()),
        },
    )
    pretrained = pretrained_weights(settings)
    if pretrained:
        run.card["pretrained"] = pretrained
    if settings.calibration_split != "val":
        calibrate_on_split(run, settings.calibration_split)
    # the out-of-distribution gate: fitted on the training side of the split, its threshold on the validation side
    if len(run.train_images) >= ood.MIN_TRAIN and len(run.val_images) >= ood.MIN_VALIDATION:
        detector = ood.Detector.fit(
            run.train_images, run.val_images, fitted_on={"fitted_on": "training side of the patient-grouped split"}
        )
        run.card["ood"] = detector.save(ood.detector_path(model_path))
    model.save_model(run.network, model_path, run.card)
    return model.ModelCard.read(run.card, model.card_path(model_path))


def calibrate_on_split(run: TrainingRun, split: str) -> None:
    """Refit the temperature and threshold on another labelled split (``test-dev``: the test period) with
    :func:`pneumo_utils.model.calibrate.calibrate_model`, exactly as ``pneumo calibrate`` does; no weight changes.

    The validation figures in the card are recomputed at the new threshold; the validation-chosen threshold
    stays in ``site_calibration.previous_threshold`` (notebook 03 compares the two).
    """
    settings = run.settings
    rows = data.select_split(run.index, split, settings.val_fraction, settings.seed)
    images, _, kept = data.load_split(rows, run.preprocessing, population=len(run.index))
    sample = {"data_dir": portable_path(run.data_root), "split": split, "fingerprint": data.dataset_fingerprint(kept)}
    raw_validation = calibrate.predict_logits(run.network, run.val_images)
    try:
        run.network, run.card = calibrate.calibrate_model(
            run.network, run.card, images, kept, sample, min_sensitivity=settings.min_sensitivity
        )
    except (calibrate.CalibrationSampleError, operating.OperatingPointError) as error:
        # a sample too small for the bounded promise: the validation threshold stays, and the card says why
        print(f"warning: calibration on {split} skipped: {error}; the validation threshold is kept", flush=True)
        run.card["calibration_skipped"] = {"split": split, "reason": str(error)}
        return
    site = run.card["site_calibration"]
    run.val_probabilities = model.predict_probabilities(run.network, run.val_images)
    before = evaluate.apply_temperature_to_logits(raw_validation, 1.0)
    run.card["validation_metrics"] = evaluate.compute_metrics(
        run.val_targets, run.val_probabilities, run.card["threshold"]["value"]
    ) | {
        "calibration": {
            "method": f"temperature scaling fitted on {split} (site calibration; see site_calibration)",
            "temperature": site["temperature"],
            "ece_before": evaluate.expected_calibration_error(run.val_targets, before),
            "ece_after": evaluate.expected_calibration_error(run.val_targets, run.val_probabilities),
        }
    }
