"""The model: its layers, the networks built from them, the card beside each saved model, saving and loading
with checks, and running a network on images.

Promises: every network takes uint8-range grayscale images of the card's size and gives one probability of
pneumonia through one sigmoid head; a model is only ever loaded with its card checked. May import ``data``,
``evaluate``, ``images``, ``config``, ``outputs`` and ``records``, never ``explain``, ``runs`` or ``cli``.
Training (``train``), calibration (``calibrate``), the out-of-distribution gate (``ood``) and the stress tests
(``robustness``) are modules of their own, imported by name; the rest is re-exported here, so
``model.load_model(...)`` reads as before.
"""

from pneumo_utils._quiet import import_tensorflow_quietly

import_tensorflow_quietly()  # before Keras: TensorFlow's C++ start-up lines stay off the terminal

from pneumo_utils.model.card import (
    CARD_FIELDS,
    CARD_SUFFIX,
    MAX_IMAGE_SIZE,
    ModelCard,
    ModelLoadError,
    card_path,
    check_card,
    make_card,
)
from pneumo_utils.model.inference import (
    InvalidScores,
    card_split,
    check_scores,
    predict_probabilities,
)
from pneumo_utils.model.layers import (
    GrayscaleToRGB,
    PerImageStandardization,
    RandomBorderErase,
    RandomGamma,
    RandomSharpness,
    augmentation_block,
)
from pneumo_utils.model.networks import (
    BACKBONES,
    MEMBER_PREFIX,
    WIDTH_BACKBONES,
    WeightsFileError,
    build_backbone_model,
    build_ensemble,
    build_model,
    check_weights_file,
    ensemble_members,
    file_sha256,
    probability_head,
    with_temperature,
)
from pneumo_utils.model.store import (
    check_model,
    load_model,
    save_model,
    source_of,
)
