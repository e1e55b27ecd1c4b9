"""Explanations: where on the X-ray the model looked, whether that map can be trusted, and which images to show.

Promises: maps explain the model's logit, are computed in batches, and are checked (randomization, deletion and
insertion, where their mass lies) before any figure shows them. May import ``model``, ``evaluate``, ``images``
and the base modules, never ``runs`` or ``cli``. Modules: ``cam`` (Grad-CAM / Grad-CAM++), ``checks`` (the sanity
checks), ``overlays`` (heatmaps over the X-ray), ``picking`` (which examples), ``regions`` (centre vs border).
"""
