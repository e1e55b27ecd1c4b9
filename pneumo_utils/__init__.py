"""Helpers for the pneumonia chest X-ray notebooks: data, model, training, evaluation, Grad-CAM and the CLI.

The notebooks in ``notebooks/`` are for communication; the logic worth testing lives here, by stage, each
layer importing only the ones below it::

    cli/        the ``pneumo`` command
    runs/       pipeline, sweep, experiments and their tables, report, results page, bench, the explorer's server
    notebook, explore, explore_app     the notebooks' set-up, the explorer's logic and its widgets
    explain/    Grad-CAM maps, their checks, overlays, which examples, where a map's mass lies
    plots, predict                     figures; scoring files and splits with a saved model
    model/      layers, networks, card, save/load, inference, train, calibrate, ood gate, stress tests
    evaluate, subgroups, scores        metrics on arrays, subgroup figures, per-image score files
    data/       index, splits, loading, shortcut audit, synthetic set, download
    images      the one image reader
    config, outputs, records           settings, writing results, provenance
"""

import os

# Keras 3 runs on TensorFlow here; keep TensorFlow's C++ start-up chatter out of notebooks and the CLI.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
