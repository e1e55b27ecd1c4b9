"""Speed and memory benchmarks that write JSON (never timed tests)."""

from __future__ import annotations

import os
import platform
import resource
import time
from typing import Any

import numpy as np

from pneumo_utils import config as config_module


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_train(profile: str | None = "full", images: int = 512, overrides: dict[str, Any] | None = None,
                repeats: int = 2) -> dict[str, Any]:
    """Training and inference throughput of the profile's model on synthetic X-rays of its input size.

    One warm-up epoch (graph tracing) is not timed; then ``repeats`` epochs over ``images`` images are.
    Inference is timed at batch 64 in inference mode.
    """
    import tensorflow as tf

    from pneumo_utils import data, model, synthetic, train

    settings = config_module.load_config(profile, **(overrides or {}))
    size = settings["image_size"]
    rng = np.random.default_rng(settings["seed"])
    pictures = np.stack([synthetic.synthetic_xray(rng, size, pneumonia=bool(i % 2)) for i in range(images)])
    targets = (np.arange(images) % 2).astype(np.float32)
    train.set_seed(settings["seed"])
    network = model.build_model(size, filters=tuple(settings["filters"]), dropout=settings["dropout"],
                                augmentation=train.augmentation_settings(settings))
    steps = int(np.ceil(images / settings["batch_size"])) * (repeats + 1)
    optimizer = train.make_optimizer(settings.get("optimizer", "adam"), settings["learning_rate"],
                                     settings.get("weight_decay", 0.0), settings.get("lr_schedule", "constant"), steps)
    train.compile_model(network, optimizer, label_smoothing=settings.get("label_smoothing", 0.0))
    dataset = data.make_dataset(pictures, targets, settings["batch_size"], shuffle=True, seed=settings["seed"])
    network.fit(dataset, epochs=1, verbose=0)
    started = time.perf_counter()
    network.fit(dataset, epochs=repeats, verbose=0)
    train_seconds = time.perf_counter() - started
    inference = data.make_dataset(pictures, batch_size=64)
    network.predict(inference, verbose=0)
    started = time.perf_counter()
    network.predict(inference, verbose=0)
    inference_seconds = time.perf_counter() - started
    return {
        "train_images_per_s": round(images * repeats / train_seconds, 1),
        "inference_images_per_s": round(images / inference_seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "settings": {
            "profile": settings["profile"], "image_size": size, "filters": settings["filters"],
            "batch_size": settings["batch_size"], "inference_batch_size": 64, "images": images,
            "timed_epochs": repeats, "parameters": int(network.count_params()),
            "tensorflow_threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                                   "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
            "cpu_count": os.cpu_count(), "machine": platform.platform(), "processor": platform.processor(),
        },
    }
