"""Speed and memory benchmarks that write JSON (never timed tests)."""

from __future__ import annotations

import os
import platform
import resource
import time
from typing import Any

import numpy as np

from pneumo_utils import config, data
from pneumo_utils.config import portable_path
from pneumo_utils.data import synthetic
from pneumo_utils.explain import cam
from pneumo_utils.images import resize_all
from pneumo_utils.model import MEMBER_PREFIX, ensemble_members, load_model, train
from pneumo_utils.runs import sweep


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def forward_flops(network) -> int:
    """Floating-point operations of one forward pass of one image: 2 x the multiply-adds of every
    convolution and dense layer (nested models included); normalization, activations and pooling, a few
    percent of the total, are not counted."""
    import keras

    total = 0
    for layer in network.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
            continue
        output = layer.output.shape if hasattr(layer, "output") else None
        if isinstance(layer, keras.layers.SeparableConv2D):
            height, width, channels_in = output[1], output[2], layer.input.shape[-1]
            kernel = int(np.prod(layer.kernel_size))
            total += 2 * height * width * channels_in * (kernel * layer.depth_multiplier + layer.filters)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            total += 2 * output[1] * output[2] * output[3] * int(np.prod(layer.kernel_size))
        elif isinstance(layer, keras.layers.Conv2D):
            channels_in = layer.input.shape[-1] // layer.groups
            total += 2 * output[1] * output[2] * output[3] * channels_in * int(np.prod(layer.kernel_size))
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * int(layer.input.shape[-1]) * layer.units
    return int(total)


def _bench_one(settings: dict[str, Any], images: int, repeats: int) -> dict[str, Any]:

    size = settings.image_size
    rng = np.random.default_rng(settings.seed)
    pictures = np.stack([synthetic.synthetic_xray(rng, size, pneumonia=bool(i % 2)) for i in range(images)])
    targets = (np.arange(images) % 2).astype(np.float32)
    train.set_seed(settings.seed)
    network = train.compile_from_config(
        train.build_from_config(settings),
        settings,
        total_steps=int(np.ceil(images / settings.batch_size)) * (repeats + 1),
    )
    dataset = data.make_dataset(pictures, targets, settings.batch_size, shuffle=True, seed=settings.seed)
    network.fit(dataset, epochs=1, verbose=0, shuffle=False)  # the tf.data pipeline shuffles, seeded
    started = time.perf_counter()
    network.fit(dataset, epochs=repeats, verbose=0, shuffle=False)
    train_seconds = time.perf_counter() - started
    inference = data.make_dataset(pictures, batch_size=64)
    network.predict(inference, verbose=0)
    started = time.perf_counter()
    network.predict(inference, verbose=0)
    inference_seconds = time.perf_counter() - started
    flops = forward_flops(network)
    train_rate = images * repeats / train_seconds
    return {
        "image_size": size,
        "filters": settings.filters,
        "backbone": settings.backbone,
        "parameters": int(network.count_params()),
        "forward_flops_per_image": flops,
        "train_images_per_s": round(train_rate, 1),
        "train_gflops_per_s": round(3 * flops * train_rate / 1e9, 1),
        "inference_images_per_s": round(images / inference_seconds, 1),
    }


# The real data set's patient-grouped split at val_fraction 0.15, seed 42 (the committed card's training record).
FULL_TRAIN_IMAGES, FULL_VAL_IMAGES = 4470, 746
BUDGET = {"training_minutes": 30, "peak_rss_mb": 3072, "model_mb": 25}


def _training_estimate(settings, members: list[dict[str, Any]]) -> dict[str, Any]:
    """Minutes one full training of these settings takes on the public data at the measured rates: every
    member's epochs over the training images plus a validation pass per epoch (reading the images and the
    notebooks are not counted), with the model's size in float32, against the project's budget."""
    epochs = [member["epochs"] for member in (train.member_settings(settings) or [settings])]
    seconds = sum(
        count * (FULL_TRAIN_IMAGES / member["train_images_per_s"] + FULL_VAL_IMAGES / member["inference_images_per_s"])
        for count, member in zip(epochs, members, strict=True)
    )
    model_mb = sum(member["parameters"] for member in members) * 4 / 2**20
    return {
        "train_images": FULL_TRAIN_IMAGES,
        "val_images": FULL_VAL_IMAGES,
        "epochs_per_member": epochs,
        "training_minutes": round(seconds / 60, 1),
        "model_mb_float32": round(model_mb, 1),
        "budget": BUDGET,
        "within_budget": bool(
            seconds / 60 <= BUDGET["training_minutes"]
            and model_mb <= BUDGET["model_mb"]
            and peak_rss_mb() <= BUDGET["peak_rss_mb"]
        ),
        "note": "at most epochs x (training images / measured rate + validation images / inference rate); "
        "early stopping can end sooner",
    }


def bench_train(
    profile: str | None = "full", images: int = 512, overrides: dict[str, Any] | None = None, repeats: int = 2
) -> dict[str, Any]:
    """Training and inference throughput of the profile's model on synthetic X-rays of its input size.

    One warm-up epoch (graph tracing) is not timed; then ``repeats`` epochs over ``images`` images are.
    Inference is timed at batch 64 in inference mode. ``forward_flops_per_image`` counts convolutions
    and dense layers; ``train_gflops_per_s`` takes a training step as 3 forward passes (forward, and a
    backward pass of about twice its cost), the usual convention. For an ensemble each member is measured
    alone and the totals are those of training the members one after the other.
    """
    import tensorflow as tf

    settings = config.load_config(profile, **(overrides or {}))
    members = [_bench_one(member, images, repeats) for member in (train.member_settings(settings) or [settings])]
    seconds_per_image = sum(1.0 / member["train_images_per_s"] for member in members)
    flops = sum(member["forward_flops_per_image"] for member in members)
    result = {
        "train_images_per_s": round(1.0 / seconds_per_image, 1),
        "inference_images_per_s": round(1.0 / sum(1.0 / member["inference_images_per_s"] for member in members), 1),
        "forward_flops_per_image": flops,
        "train_gflops_per_s": round(3 * flops / seconds_per_image / 1e9, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "members": members,
        "full_run_estimate": _training_estimate(settings, members),
        "settings": {
            "profile": settings.profile,
            "image_size": max(member["image_size"] for member in members),
            "batch_size": settings.batch_size,
            "inference_batch_size": 64,
            "images": images,
            "timed_epochs": repeats,
            "parameters": sum(member["parameters"] for member in members),
            "flops_convention": "2 x multiply-adds of convolution and dense layers; training step = 3 forward",
            "tensorflow_threads": {
                "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            },
            "cpu_count": os.cpu_count(),
            "machine": platform.platform(),
            "processor": platform.processor(),
        },
    }
    return result


def bench_gradcam(
    model_path, images: int = 32, batch_size: int = 32, repeats: int = 3, data_dir=None, seed: int = 0
) -> dict[str, Any]:
    """The batched Grad-CAM against the per-image keras.io recipe, same model, same images, one run.

    Images come from ``data_dir``'s ``train/`` split when given (read with the model card's
    preprocessing), else synthetic X-rays of the model's input size. Each timing is the best of
    ``repeats`` after one untimed warm-up (graph tracing).
    """
    network, card = load_model(model_path)
    size = card.preprocessing.image_size
    source = "synthetic X-rays"
    if data_dir:
        rows = data.index_dataset(data_dir)
        rows = rows[rows["split"] == "train"].sample(images, random_state=seed)
        pictures, _, _ = data.load_split(rows, card.preprocessing)
        source = f"{len(pictures)} random images of {data_dir}/train"
    else:
        rng = np.random.default_rng(seed)
        pictures = np.stack([synthetic.synthetic_xray(rng, size, pneumonia=bool(i % 2)) for i in range(images)])
    explained = ensemble_members(network)  # each member as a model of its own, as the batched explainer sees it
    nested = [
        layer for layer in network.layers if isinstance(layer, type(network)) and layer.name.startswith(MEMBER_PREFIX)
    ]  # the same member inside the ensemble: the keras.io recipe's model
    pairs = list(zip(explained, nested, strict=True)) if explained else [(network, network)]
    measured = [_bench_cam_one(member, reference, pictures, batch_size, repeats) for member, reference in pairs]
    members = explained
    reference_ms = sum(member["per_image_ms_reference"] for member in measured)
    batched_ms = sum(member["per_image_ms_batched"] for member in measured)
    return {
        "per_image_ms_reference": round(reference_ms, 3),
        "per_image_ms_batched": round(batched_ms, 3),
        "speedup": round(reference_ms / batched_ms, 2),
        "max_abs_diff": max(member["max_abs_diff"] for member in measured),
        "members": measured if members else [],
        "settings": {
            "model": portable_path(model_path),
            "target_layer": measured[0]["target_layer"],
            "images": int(len(pictures)),
            "image_source": source,
            "batch_size": batch_size,
            "repeats": repeats,
            "timing": "best of repeats, after one warm-up call",
            "reference": "keras.io make_gradcam_heatmap, one image per call, gradient model built per call",
            "compared": "normalized maps at the target layer's resolution; for an ensemble each member "
            "against the reference on that member (its own input size and target layer), "
            "times summed over members, max_abs_diff the largest over members",
            "cpu_count": os.cpu_count(),
            "machine": platform.platform(),
        },
    }


def _bench_cam_one(network, reference_model, pictures: np.ndarray, batch_size: int, repeats: int) -> dict[str, Any]:
    """Batched Grad-CAM of one single (non-ensemble) model against the keras.io recipe on the same network
    (``reference_model``: the model itself, or the member as it sits inside an ensemble)."""
    size = int(network.input_shape[1])
    pictures = resize_all(pictures, size).astype(np.float32)
    explainer = cam.CamExplainer(network)
    layer = explainer.layer_name

    def batched():
        return explainer.explain(pictures, batch_size=batch_size, upsample=False)[0]

    def reference():
        return np.stack(
            [cam.keras_io_gradcam(picture[None, ..., None], reference_model, layer) for picture in pictures]
        )

    timings, outputs = {}, {}
    for name, function in (("batched", batched), ("reference", reference)):
        outputs[name] = function()
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            function()
            best = min(best, time.perf_counter() - started)
        timings[name] = best * 1000.0 / len(pictures)
    return {
        "name": network.name,
        "image_size": size,
        "target_layer": layer,
        "per_image_ms_reference": round(timings["reference"], 3),
        "per_image_ms_batched": round(timings["batched"], 3),
        "max_abs_diff": float(np.abs(outputs["batched"] - outputs["reference"]).max()),
    }


BENCH_SWEEP_GRID = """# pneumo bench sweep: a 2x2 smoke grid, four notebooks, one epoch, 16 synthetic images per class
profile: smoke
epochs: 1
synthetic_images_per_class: 16
grid:
  image_size: [32, 48]
  seed: [1, 2]
"""


def bench_sweep(workers: int | None = None, grid_text: str = BENCH_SWEEP_GRID) -> dict[str, Any]:
    """The same smoke grid run one after another in this process, then on a local Dask cluster.

    Both write into fresh temporary folders; the kernels of a serial run use every core (TensorFlow's
    default), those of the cluster's workers share them (``cores // workers`` threads each).
    """
    import io
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="pneumo-bench-sweep-") as folder:
        grid_path = Path(folder) / "bench_grid.yaml"
        grid_path.write_text(grid_text)
        grid = sweep.load_grid(grid_path)
        started = time.perf_counter()
        serial = sweep.serial_runs(grid, Path(folder) / "serial")
        serial_s = time.perf_counter() - started
        started = time.perf_counter()
        parallel = sweep.run_sweep(grid, output_dir=Path(folder) / "parallel", workers=workers, stream=io.StringIO())
        parallel_s = time.perf_counter() - started
    failed = [row["run"] for row in serial + parallel if row["status"] != "ok"]
    if failed:
        raise RuntimeError(f"bench sweep: runs failed: {failed}")
    cores = os.cpu_count() or 1
    used = workers or min(cores, len(grid.runs))
    return {
        "runs": len(grid.runs),
        "notebooks": list(grid.notebooks),
        "grid": grid_text,
        "serial_s": round(serial_s, 1),
        "parallel_s": round(parallel_s, 1),
        "speedup": round(serial_s / parallel_s, 2),
        "workers": used,
        "tf_threads_per_worker": max(1, cores // used),
        "cores": cores,
        "serial_run_s": [row["seconds"] for row in serial],
        "parallel_run_s": [row["seconds"] for row in parallel],
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": cores},
        "note": "parallel_s includes starting and stopping the local cluster",
    }
