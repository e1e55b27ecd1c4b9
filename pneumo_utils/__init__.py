"""Helpers for the pneumonia chest X-ray notebooks: data, model, training, evaluation, Grad-CAM and the CLI.

The notebooks in ``notebooks/`` are for communication; the logic worth testing lives here.
"""

import os

# Keras 3 runs on TensorFlow here; keep TensorFlow's C++ start-up chatter out of notebooks and the CLI.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
