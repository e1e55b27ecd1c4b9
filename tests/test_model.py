"""The model builder, the model card and safe saving and loading."""

import hashlib
import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from helpers import minimal_card

from pneumo_utils import model
from pneumo_utils.explain import cam
from pneumo_utils.images import Preprocessing
from pneumo_utils.runs import bench


def test_build_model_shapes_and_named_head():
    network = model.build_model(64, filters=(4, 8), dropout=0.3)
    assert network.input_shape == (None, 64, 64, 1)
    assert network.output_shape == (None, 1)
    assert network.get_layer("logit").output.shape[-1] == 1
    assert isinstance(network.get_layer("dropout"), keras.layers.Dropout)
    probabilities = network.predict(np.full((2, 64, 64, 1), 128, np.float32), verbose=0)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_augmentation_only_in_training():
    network = model.build_model(48, filters=(4,), dropout=0.0)
    batch = np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 1)).astype(np.float32)
    augmentation = network.get_layer("augmentation")
    np.testing.assert_array_equal(augmentation(batch, training=False), batch)
    assert not np.allclose(augmentation(batch, training=True), batch)


@pytest.mark.parametrize(("argument", "value"), [("image_size", 8), ("dropout", 1.0)])
def test_build_model_rejects_bad_settings(argument, value):
    settings = {"image_size": 64, "dropout": 0.5} | {argument: value}
    with pytest.raises(ValueError, match=argument):
        model.build_model(settings["image_size"], dropout=settings["dropout"])


def test_save_and_load_round_trip(tmp_path):
    network = model.build_model(32, filters=(4,), dropout=0.1)
    path = model.save_model(network, tmp_path / "m.keras", minimal_card(32, 0.3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.keras"]  # no temporary files left
    loaded, card = model.load_model(path)
    batch = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(batch, verbose=0), network.predict(batch, verbose=0), atol=1e-6)
    assert card["threshold"]["value"] == 0.3


def test_failed_save_keeps_the_previous_model(tmp_path):
    network = model.build_model(32, filters=(4,), dropout=0.1)
    path = model.save_model(network, tmp_path / "m.keras", {"version": 1})
    before = path.read_bytes()
    circular = {"version": 2}
    circular["self"] = circular  # a card that cannot be written as JSON
    with pytest.raises(ValueError, match="Circular"):
        model.save_model(model.build_model(32, filters=(8,), dropout=0.1), path, circular)
    assert path.read_bytes() == before
    written = json.loads(model.card_path(path).read_text())
    assert {key: written[key] for key in ("name", "version")} == {"name": "m", "version": 1}  # named as its file
    assert written["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()  # the file it describes
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.keras", None, "model file does not exist"),
        ("model.h5", b"x", "not a .keras model file"),
        ("corrupt.keras", b"not a zip at all", "not a Keras model archive"),
    ],
)
def test_load_model_errors_are_one_clear_line(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
        model.card_path(path).write_text("{}")
    with pytest.raises(model.ModelLoadError, match=message) as error:
        model.load_model(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_card_records_provenance_and_preprocessing(tiny_model_path):
    card = json.loads(model.card_path(tiny_model_path).read_text())
    for key in (
        "preprocessing",
        "threshold",
        "split",
        "validation_metrics",
        "versions",
        "git_commit",
        "date",
        "intended_use",
        "limitations",
    ):
        assert key in card
    assert card["preprocessing"]["image_size"] == 32 and card["versions"]["keras"].startswith("3.")


def test_gamma_augmentation_and_standardization_survive_a_safe_mode_round_trip(tmp_path):
    network = model.build_model(32, filters=(4,), dropout=0.1, augmentation={"gamma": 0.4}, normalization="standardize")
    batch = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    gamma = network.get_layer("augmentation").layers[-1]
    assert isinstance(gamma, model.RandomGamma)
    assert not np.allclose(gamma(batch, training=True), batch) and np.allclose(gamma(batch, training=False), batch)
    # a brighter copy of the same image gives the same output once standardized
    shifted = np.clip(batch * 0.5 + 60, 0, 255)
    standardize = network.get_layer("standardize")
    np.testing.assert_allclose(standardize(batch), standardize(shifted), atol=1e-4)
    loaded, _ = model.load_model(model.save_model(network, tmp_path / "g.keras", minimal_card(network.input_shape[1])))
    np.testing.assert_allclose(loaded.predict(batch, verbose=0), network.predict(batch, verbose=0), atol=1e-6)


def _edge_contrast(images):
    """Mean absolute step across the vertical edge at column 16 of the test images below."""
    return np.abs(images[:, :, 16, 0] - images[:, :, 15, 0]).mean(axis=1)


def _logits(network, images):
    logit_model = keras.Model(network.inputs, network.get_layer("logit").output)
    return logit_model.predict(images[..., None], verbose=0).reshape(-1)


SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS_035 = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
SHA_035 = "df1c3db1d0d9193719c4c70f707c56f7021f999f825bdc57454c275cf6def19f"


def test_border_erase_blacks_out_bands_only_in_training():
    layer = model.RandomBorderErase(0.3, seed=3)
    batch = np.full((16, 20, 20, 1), 100.0, np.float32)
    np.testing.assert_array_equal(layer(batch, training=False), batch)
    erased = np.asarray(layer(batch, training=True))[..., 0]
    assert set(np.unique(erased)) <= {0.0, 100.0}
    assert (erased == 0).any() and (erased == 100).any()
    assert (erased[:, 6:14, 6:14] == 100).all()  # the centre (beyond 30% of a side) is never touched


def test_sharpness_change_blurs_or_sharpens_edges_only_in_training(tmp_path):
    layer = model.RandomSharpness(1.0, seed=5)
    batch = np.zeros((32, 32, 32, 1), np.float32)
    batch[:, :, 16:] = 160.0  # a vertical edge from 0 to 160
    np.testing.assert_array_equal(layer(batch, training=False), batch)
    changed = np.asarray(layer(batch, training=True))
    steps = _edge_contrast(changed)
    assert (steps < 150).any() and (changed.max(axis=(1, 2, 3)) > 160).any()  # some blurred, some sharpened
    assert changed.min() >= 0 and changed.max() <= 255
    np.testing.assert_allclose(changed[:, :, :10], 0, atol=1e-4)  # far from the edge nothing moves
    np.testing.assert_allclose(changed[:, :, 23:], 160, atol=1e-3)
    flat = np.full((4, 20, 20, 1), 90.0, np.float32)  # mirrored padding: no dark rim at the image border
    np.testing.assert_allclose(layer(flat, training=True), flat, atol=1e-3)
    network = model.build_model(32, filters=(4,), augmentation={"sharpness": 0.5})
    assert any(isinstance(item, model.RandomSharpness) for item in network.get_layer("augmentation").layers)
    network.save(tmp_path / "sharp.keras")
    loaded = keras.models.load_model(tmp_path / "sharp.keras")
    assert [
        item.factor for item in loaded.get_layer("augmentation").layers if isinstance(item, model.RandomSharpness)
    ] == [0.5]


@pytest.mark.slow
def test_ensemble_logit_is_the_mean_of_member_logits(two_members, tmp_path):

    small, large = two_members
    ensemble = model.build_ensemble([small, large])
    images = np.random.default_rng(0).uniform(0, 255, (4, 64, 64)).astype(np.float32)
    small_images = np.stack([cv2.resize(image, (48, 48), interpolation=cv2.INTER_AREA) for image in images])
    expected = (_logits(small, small_images) + _logits(large, images)) / 2
    np.testing.assert_allclose(_logits(ensemble, images), expected, atol=1e-3)
    path = model.save_model(ensemble, tmp_path / "ensemble.keras", minimal_card(64))
    loaded, _ = model.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(images[..., None], verbose=0), ensemble.predict(images[..., None], verbose=0), atol=1e-6
    )
    assert len(model.ensemble_members(loaded)) == 2


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([{"val_fraction": 0.3}], "shared by the whole ensemble"),
        ([{"epoch": 3}], "unknown setting"),
        ({"seed": 1}, "list of setting mappings"),
    ],
)
def test_bad_member_settings_are_refused(members, message):
    from pneumo_utils import config
    from pneumo_utils.model import train

    with pytest.raises(ValueError, match=message):
        train.member_settings(config.load_config("smoke", members=members))


@pytest.mark.slow
def test_backbone_model_without_downloaded_weights(tmp_path):
    network = model.build_backbone_model(64, "efficientnetv2b0", weights=None, augmentation={"border": 0.1})
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64)).astype(np.float32)
    probabilities = network.predict(images[..., None], verbose=0).reshape(-1)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    path = model.save_model(network, tmp_path / "backbone.keras", minimal_card(64))
    loaded, _ = model.load_model(path)
    np.testing.assert_allclose(loaded.predict(images[..., None], verbose=0).reshape(-1), probabilities, atol=1e-5)
    explainer = cam.CamExplainer(loaded)
    assert explainer.layer_name.startswith("efficientnetv2")  # the backbone's last feature map
    maps, _ = explainer.explain(images)
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()


@pytest.mark.parametrize(
    ("backbone", "weights", "message"),
    [("vgg99", None, "unknown backbone"), ("resnet50v2", "/no/such.h5", "weights must be")],
)
def test_bad_backbone_settings_are_refused(backbone, weights, message):
    with pytest.raises(ValueError, match=message):
        model.build_backbone_model(64, backbone, weights=weights)


def test_forward_flops_counts_convolutions_and_dense_layers():
    inputs = keras.Input((10, 10, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    network = keras.Model(inputs, keras.layers.Dense(2)(x))
    assert bench.forward_flops(network) == 2 * 10 * 10 * 4 * 1 * 9 + 2 * 4 * 2


@pytest.mark.slow
def test_mobilenetv2_takes_a_width_and_refuses_a_weights_file_with_another_sha256(tmp_path):
    from pneumo_utils import model

    network = model.build_backbone_model(32, "mobilenetv2", weights=None, alpha=0.35, augment=False)
    assert network.output_shape == (None, 1) and network.input_shape == (None, 32, 32, 1)
    impostor = tmp_path / "weights.h5"
    impostor.write_bytes(b"not the ImageNet weights")
    with pytest.raises(model.WeightsFileError, match="SHA-256"):
        model.build_backbone_model(32, "mobilenetv2", weights=str(impostor), alpha=0.35, weights_sha256=SHA_035)
    with pytest.raises(ValueError, match="alpha"):
        model.build_backbone_model(32, "densenet121", weights=None, alpha=0.5)


@pytest.mark.skipif(not WEIGHTS_035.is_file(), reason="../shared/weights is not beside the checkout")
@pytest.mark.slow
def test_imagenet_weights_load_from_a_path_and_the_card_records_their_sha256():
    from pneumo_utils import config, model
    from pneumo_utils.model import train

    settings = config.load_config(
        "smoke", backbone="mobilenetv2", alpha=0.35, weights=str(WEIGHTS_035), weights_sha256=SHA_035, image_size=64
    )
    network = train.build_from_config(settings)
    backbone = next(layer for layer in network.layers if layer.name.startswith("mobilenet"))
    first = backbone.get_layer("Conv1").get_weights()[0]
    assert np.abs(first).mean() > 0.05  # trained filters, not a fresh initialization
    assert train.pretrained_weights(settings) == [
        {
            "member": 1,
            "backbone": "mobilenetv2",
            "alpha": 0.35,
            "weights": WEIGHTS_035.name,
            "sha256": SHA_035,
        }
    ]
    assert model.check_weights_file(WEIGHTS_035) == SHA_035
    # a card or an experiment record names the file, never where it lay on this machine
    assert config.recorded_settings(settings)["weights"] == WEIGHTS_035.name
    assert not any(str(value).startswith("/") for value in config.recorded_settings(settings).values())


def test_a_card_is_read_once_into_typed_fields_and_stays_the_json(tiny_model_path):
    _, card = model.load_model(tiny_model_path)
    written = json.loads(model.card_path(tiny_model_path).read_text())
    assert isinstance(card, model.ModelCard) and dict(card) == written  # the JSON as written, read-only
    assert card.preprocessing == Preprocessing.from_dict(written["preprocessing"])
    assert card.threshold == written["threshold"]["value"] and isinstance(card.threshold, float)
    assert (card.val_fraction, card.seed) == (written["split"]["val_fraction"], written["split"]["seed"])
    assert card.kind == "CNN trained from scratch" and card.name == "tiny"
    with pytest.raises(TypeError):
        card["threshold"] = {"value": 0.1}  # a new card is written, never an old one changed in place
    changed = card.with_fields(threshold={"value": 0.1})
    assert changed["threshold"] == {"value": 0.1} and card.threshold == written["threshold"]["value"]


@pytest.mark.slow
def test_the_committed_model_loads_in_a_fresh_process_through_the_model_package_alone():
    """Its custom layers are registered by the loader itself: a kernel that imports nothing else first (notebook
    03 did exactly that) must not get "Functional could not be deserialized"."""
    import subprocess
    import sys

    from pneumo_utils.config import SAVED_MODEL

    code = (
        "import sys; from pneumo_utils import model; network, card = model.load_model(sys.argv[1]); print(network.name)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(SAVED_MODEL)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "pneumonia_ensemble"
