"""Shared fixtures: a synthetic data set and a tiny trained model with its card, made once per session."""

import pytest

@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    from pneumo_utils.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "chest_xray", images_per_class=24,
                                   image_size=64, seed=1)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, synthetic_root):
    """A real (tiny) model trained for two epochs on the synthetic set, saved with its card."""
    from pneumo_utils import data, evaluate, model, train
    from pneumo_utils.images import Preprocessing

    train.set_seed(0)
    preprocessing = Preprocessing(image_size=32)
    index = data.index_dataset(synthetic_root)
    train_rows, val_rows = data.grouped_split(index, val_fraction=0.25, seed=0)
    train_images, train_targets, _ = data.load_split(train_rows, preprocessing)
    val_images, val_targets, _ = data.load_split(val_rows, preprocessing)
    network = model.build_model(32, filters=(4, 8), dropout=0.2)
    train.fit(network, data.make_dataset(train_images, train_targets, 8, shuffle=True),
              data.make_dataset(val_images, val_targets, 8), epochs=2, learning_rate=3e-3, patience=2,
              class_weight=train.class_weights(train_targets),
              checkpoint_dir=tmp_path_factory.mktemp("checkpoints"), verbose=0)
    probabilities = evaluate.predict_probabilities(network, val_images)
    config = {"val_fraction": 0.25, "seed": 0, "image_size": 32}
    card = model.make_card(config, preprocessing.to_dict(), {"value": 0.5, "rule": "fixed for the test"},
                           evaluate.compute_metrics(val_targets, probabilities, 0.5), {}, {})
    return model.save_model(network, tmp_path_factory.mktemp("model") / "tiny.keras", card)
