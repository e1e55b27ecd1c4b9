"""Shift views of train/ (another NORMAL batch, the extreme acquisition ids) and the tables made from the
experiments' per-view and test-dev scores."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from pneumo_utils import data
from pneumo_utils import scores as scores_module
from pneumo_utils.runs import experiments, tables


def _write_view(root, name, view, probabilities, targets):
    folder = root / name / "views" / experiments.view_slug(view)
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {
            "file": [f"f{i}.jpeg" for i in range(len(targets))],
            "label": "x",
            "target": targets,
            "probability": probabilities,
        }
    )
    for which in ("scores.csv", "inner_scores.csv"):
        frame.to_csv(folder / which, index=False)
    shifted = experiments.score_view(targets, probabilities, 0.5)
    record_path = root / name / experiments.VIEWS_NAME
    record = json.loads(record_path.read_text()) if record_path.exists() else {"name": name, "views": {}}
    record["views"][view] = {"view": view, "shifted": shifted}
    record_path.write_text(json.dumps(record))


@pytest.mark.parametrize("view", data.SHIFT_VIEWS)
def test_shift_views_keep_patients_and_copies_on_one_side(synthetic_index, view):
    train, inner, shifted = data.shift_view(synthetic_index, view, val_fraction=0.2, seed=0)
    assert len(train) and len(inner) and len(shifted)
    assert data.split_overlap(train, inner) == {"patients": 0, "identical_images": 0}
    if view != "random":
        assert data.split_overlap(pd.concat([train, inner]), shifted) == {"patients": 0, "identical_images": 0}
    assert set(shifted["target"]) == {0, 1}


@pytest.mark.parametrize(
    ("view", "seen", "unseen"),
    [("cross-batch IM->NORMAL2", "IM", "NORMAL2"), ("cross-batch NORMAL2->IM", "NORMAL2", "IM")],
)
def test_cross_batch_view_never_trains_on_the_scored_batch(synthetic_index, view, seen, unseen):
    train, inner, shifted = data.shift_view(synthetic_index, view, val_fraction=0.2, seed=0)
    trained_normals = pd.concat([train, inner]).query("target == 0")["path"].map(data.normal_batch)
    assert set(trained_normals) == {seen}
    assert set(shifted.query("target == 0")["path"].map(data.normal_batch)) == {unseen}


def test_id_range_view_holds_out_the_lowest_and_highest_ids(synthetic_index):
    train, inner, shifted = data.shift_view(synthetic_index, "id-range", val_fraction=0.3, seed=0)
    pneumonia = synthetic_index.query("split == 'train' and target == 1")["patient"].map(data.acquisition_id)
    held = shifted.query("target == 1")["patient"].map(data.acquisition_id)
    assert pneumonia.min() in set(held) and pneumonia.max() in set(held)
    kept = pd.concat([train, inner]).query("target == 1")["patient"].map(data.acquisition_id)
    assert kept.min() > pneumonia.min() and kept.max() < pneumonia.max()


def test_unknown_view_is_refused(synthetic_index):
    with pytest.raises(ValueError, match="unknown shift view"):
        data.shift_view(synthetic_index, "sideways")


def test_shift_view_counts_show_no_overlap(synthetic_index):
    counts = data.shift_view_counts(synthetic_index, val_fraction=0.2, seed=0)
    assert list(counts.index) == list(data.SHIFT_VIEWS)
    assert (counts["shared patients"] == 0).all() and (counts["shared identical images"] == 0).all()


@pytest.mark.slow
def test_views_table_scores_ensembles_from_recorded_member_scores(tmp_path):
    rng = np.random.default_rng(0)
    targets = np.r_[np.zeros(40), np.ones(60)].astype(int)
    for name in ("a", "b"):
        for view in data.SHIFT_VIEWS:
            noisy = 1 / (1 + np.exp(-((targets * 2 - 1) * 1.0 + rng.normal(0, 1.5, len(targets)))))
            _write_view(tmp_path, name, view, noisy, targets)
    table = tables.views_table(tmp_path, ensembles=[["a", "b"]])
    assert list(table["recipe"]) == ["a", "b", "a + b"]
    assert table["worst AUC"].notna().all()
    # averaging two independent noisy scorers ranks better than either alone
    assert table.loc[2, "worst AUC"] > table.loc[:1, "worst AUC"].min()
    # a member's view recorded elsewhere (figures kept, per-image scores not committed) is left out of the
    # ensemble's row instead of failing the whole table
    (tmp_path / "b" / "views" / "random" / "inner_scores.csv").unlink()
    partial = tables.views_table(tmp_path, ensembles=[["a", "b"]]).set_index("recipe")
    assert partial.loc["a + b", "random AUC"] == "not trained" and partial.loc["b", "random AUC"] != "not trained"
    assert partial.loc["a + b", "worst AUC"] == table.loc[2, "worst AUC"]
    # columns follow the views' order (random first, worst last) even when the first recipe lacks a view
    expected = [f"{view} {short}" for view in data.SHIFT_VIEWS for short in ("AUC", "sens", "spec")]
    assert list(partial.columns) == expected + ["worst AUC", "worst sens", "worst spec"]
    shutil.rmtree(tmp_path / "a" / "views" / "random")
    record = json.loads((tmp_path / "a" / experiments.VIEWS_NAME).read_text())
    del record["views"]["random"]
    (tmp_path / "a" / experiments.VIEWS_NAME).write_text(json.dumps(record))
    assert list(tables.views_table(tmp_path).columns)[1:4] == ["random AUC", "random sens", "random spec"]


def test_worst_views_reads_the_recorded_table(tmp_path):
    assert tables.worst_views(tmp_path / "missing.csv") is None
    table = pd.DataFrame(
        {
            "recipe": ["a"],
            "random AUC": ["0.99 [0.98, 1.00]"],
            "worst AUC": [0.97],
            "worst sens": [0.94],
            "worst spec": [0.9],
        }
    )
    table.to_csv(tmp_path / "views.csv", index=False)
    worst = tables.worst_views(tmp_path / "views.csv")
    assert list(worst.columns) == ["worst AUC", "worst sens", "worst spec"] and worst.loc["a", "worst spec"] == 0.9


@pytest.mark.slow
def test_the_test_dev_table_shows_each_seed_their_mean_and_the_paired_comparison(tmp_path):
    import pandas as pd

    from pneumo_utils.records import write_json_atomic
    from pneumo_utils.runs import experiments, tables

    rng = np.random.default_rng(2)
    targets = np.r_[np.zeros(60), np.ones(90)].astype(int)
    rows = pd.DataFrame(
        {
            "path": [f"/d/test/{'NORMAL' if t == 0 else 'PNEUMONIA'}/img{i}.jpeg" for i, t in enumerate(targets)],
            "label": np.where(targets == 1, "PNEUMONIA", "NORMAL"),
            "target": targets,
        }
    )
    strengths = {"good_s1": 0.6, "good_s2": 0.55, "poor_s1": 0.05, "poor_s2": 0.08}
    for name, strength in strengths.items():
        scores = np.clip(targets * strength + rng.random(len(targets)) * (1 - strength), 0.001, 0.999)
        scores_module.write_scores(tmp_path / name / experiments.TEST_DEV_SCORES, rows, scores)
        write_json_atomic(
            tmp_path / name / experiments.TEST_DEV_NAME, {"name": name, **experiments.score_view(targets, scores, 0.5)}
        )
    table = tables.test_dev_table(tmp_path, [["good_s1", "good_s2"], ["poor_s1", "poor_s2"]])
    table = table.set_index("recipe / seed")
    assert {"good_s1", "good_s2", "poor_s1", "poor_s2", "mean of good_s1 + good_s2"} <= set(table.index)
    seeds = [
        json.loads((tmp_path / name / experiments.TEST_DEV_NAME).read_text())["roc_auc"]
        for name in ("good_s1", "good_s2")
    ]
    assert float(table.loc["mean of good_s1 + good_s2", "test-dev AUC"]) == pytest.approx(np.mean(seeds), abs=5e-4)
    assert table.loc["ensemble good_s1 + good_s2", "AUC difference from best [95% CI]"] == "best"
    comparison = table.loc["ensemble poor_s1 + poor_s2", "AUC difference from best [95% CI]"]
    low = float(comparison.split("[")[1].split(",")[0])
    assert comparison.startswith("-") and low < 0  # the poor recipe is worse, and its whole interval says so
    assert float(comparison.split(",")[1].rstrip("]")) < 0


def test_a_regenerated_views_table_keeps_rows_this_machine_cannot_score(tmp_path):
    import pandas as pd

    from pneumo_utils.runs import tables

    previous = tmp_path / "experiments_views.csv"
    pd.DataFrame(
        [
            {"recipe": "a + b", "id-range AUC": "0.995 [0.99, 0.998]", "worst AUC": 0.984},
            {"recipe": "c", "id-range AUC": "0.990 [0.98, 0.995]", "worst AUC": 0.97},
        ]
    ).to_csv(previous, index=False)
    now = pd.DataFrame(
        [
            {"recipe": "a + b", "id-range AUC": "not trained", "worst AUC": None},
            {"recipe": "c", "id-range AUC": "0.991 [0.98, 0.996]", "worst AUC": 0.971},
        ]
    )
    kept = tables._keep_recorded_rows(now, previous).set_index("recipe")
    assert kept.loc["a + b", "id-range AUC"] == "0.995 [0.99, 0.998]" and kept.loc["a + b", "worst AUC"] == 0.984
    assert kept.loc["c", "id-range AUC"] == "0.991 [0.98, 0.996]"  # what was scored now wins
