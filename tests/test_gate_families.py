"""Issue 29, class 8: the gate passes the marks of real films (burned-in text, a black frame, a turn of a few
degrees) and stops what the model cannot read (a thumbnail enlarged, a very low JPEG quality) by two quality
checks. Synthetic films where the rule is a property of the check; real films from ../shared (CI has it) where
the rule is a promise about real data: no training film trips a quality check, and a gate fitted for real films
passes framed and turned films that the former gate stopped, while it still stops what is not a film."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import real_training_files, run_pneumo_here, write_png

from pneumo_utils import data, images
from pneumo_utils.images import ImageReadError, Preprocessing, read_image
from pneumo_utils.model import ood


@pytest.fixture(scope="module")
def synthetic_films(synthetic_root):
    index = data.index_dataset(synthetic_root)
    return np.stack([read_image(path, Preprocessing(image_size=64)) for path in index["path"]])


def test_the_quality_checks_pass_films_and_stop_thumbnails_and_jpeg_blocks(synthetic_films):
    films = synthetic_films[:24]
    assert all(ood.quality_problem(film) is None for film in films)
    for film in films[:8]:  # the marks of a real film are not quality problems
        rng = np.random.default_rng(0)
        for marked in (ood.burned_in_text(film, rng), ood.black_border(film, 0.1), ood.rotated(film, 10)):
            assert ood.quality_problem(marked) is None
    thumbnails = [ood.quality_problem(ood.enlarged_from(film, 6)) for film in films]  # ten times
    assert all(problem and "fine detail" in problem for problem in thumbnails), thumbnails
    blocks = [ood.quality_problem(ood.jpeg_at(film, 5)) for film in films]
    assert all(problem and "JPEG" in problem for problem in blocks), blocks
    flat = np.full((64, 64), 90, np.uint8)  # no edges at all: no blocks, and no division by nothing
    assert np.isfinite(ood.block_edges(flat))


def test_the_frame_is_ignored_only_by_a_gate_fitted_for_real_films(synthetic_films, tmp_path):
    film = synthetic_films[0]
    framed = ood.black_border(film, 0.1)
    assert ood.without_frame(film) is film  # nothing to take away
    assert ood.without_frame(framed).shape == film.shape
    assert np.abs(ood.without_frame(framed).astype(int) - film.astype(int)).mean() < 8  # the film, back to size
    train, validation = synthetic_films[:36], synthetic_films[36:]
    former = ood.Detector.fit(train, validation, real_films=False)
    for_films = ood.Detector.fit(train, validation)
    assert for_films.crop_frame and not former.crop_frame and "real_films" in for_films.fitted_on
    # the flag travels with the file; a gate saved before it (no crop_frame array) loads as it was fitted
    loaded = ood.Detector.load(tmp_path / "m.keras", {"ood": for_films.save(tmp_path / "m.ood.npz")})
    assert loaded.crop_frame and np.allclose(loaded.score(validation[:3]), for_films.score(validation[:3]))
    old = ood.Detector.load(tmp_path / "o.keras", {"ood": former.save(tmp_path / "o.ood.npz")})
    assert not old.crop_frame
    with np.load(tmp_path / "o.ood.npz") as stored:
        assert "crop_frame" not in stored.files


def test_a_file_smaller_than_half_the_models_side_is_refused(tmp_path):
    small = write_png(tmp_path / "thumb.png", np.full((30, 40), 120, np.uint8))
    with pytest.raises(ImageReadError, match=r"thumb.png: image too small for this model \(40x30 px; it reads 64x64"):
        read_image(small, Preprocessing(image_size=64), for_the_model=True)
    assert read_image(small, Preprocessing(image_size=60), for_the_model=True).shape == (60, 60)  # half is enough
    assert read_image(small, Preprocessing(image_size=64)).shape == (64, 64)  # to look at (notebook 01), it is read


def test_a_jpeg_saved_at_a_very_low_quality_is_refused_for_the_model(synthetic_films, tmp_path):
    import cv2

    film = np.repeat(np.repeat(synthetic_films[0], 4, axis=0), 4, axis=1)  # a full-size file, 256 px
    for quality, refused in ((5, True), (15, True), (20, False), (75, False)):
        path = tmp_path / f"q{quality}.jpeg"
        cv2.imwrite(str(path), film, [cv2.IMWRITE_JPEG_QUALITY, quality])
        estimate = images.jpeg_quality(path.read_bytes())
        assert abs(estimate - quality) < 1 or quality <= 15, (quality, estimate)  # exact but for clipped tables
        if refused:
            with pytest.raises(ImageReadError, match=rf"q{quality}.jpeg: saved at JPEG quality \d+ or lower"):
                read_image(path, Preprocessing(image_size=64), for_the_model=True)
        else:
            assert read_image(path, Preprocessing(image_size=64), for_the_model=True).shape == (64, 64)
        assert read_image(path, Preprocessing(image_size=64)).shape == (64, 64)  # to look at, it is read
    assert images.jpeg_quality(write_png(tmp_path / "x.png", film).read_bytes()) is None
    for path in REAL[:20]:  # the data set's films are JPEGs of quality 75
        assert round(images.jpeg_quality(path.read_bytes())) == 75


@pytest.mark.slow
def test_predict_stops_a_film_saved_at_jpeg_quality_5_and_says_why(tiny_model_path, synthetic_root, tmp_path):
    size = json.loads(tiny_model_path.with_suffix(".json").read_text())["preprocessing"]["image_size"]
    xray = read_image(sorted((synthetic_root / "test" / "NORMAL").glob("*.jpeg"))[0], Preprocessing(image_size=size))
    # a JPEG of quality 5 at the model's size, passed on as a PNG (a JPEG file that low is refused when read):
    # its 8 x 8 blocks are what the model would read
    blocky = write_png(tmp_path / "blocky.png", ood.jpeg_at(xray, 5))
    table = tmp_path / "predictions.csv"
    result = run_pneumo_here("predict", blocky, "--model", tiny_model_path, "--output", table)
    assert result.returncode == 0, result.stderr
    row = pd.read_csv(table).iloc[0]
    assert row["decision"] == "OUT_OF_DISTRIBUTION" and "JPEG" in row["quality"]
    (warning,) = [line for line in result.stderr.splitlines() if "blocky.png" in line]
    assert "the model cannot read it: compression blocks" in warning, result.stderr


REAL = real_training_files(200)


@pytest.mark.skipif(not REAL, reason="no ../shared here: the real-film checks need real films")
def test_on_real_films_no_quality_check_trips_and_a_gate_for_real_films_passes_their_marks():
    size = 160  # the committed model's input
    films = np.stack([read_image(path, Preprocessing(image_size=size)) for path in REAL])
    problems = [ood.quality_problem(film) for film in films]
    assert not any(problems), [problem for problem in problems if problem][:3]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(films))
    train, validation = films[order[:300]], films[order[300:]]
    former = ood.Detector.fit(train, validation, real_films=False)
    for_films = ood.Detector.fit(train, validation)

    def passed(detector, images):
        return float(np.mean(detector.in_distribution(detector.score(images))))

    framed = np.stack([ood.black_border(film, 0.1) for film in validation])
    turned = np.stack([ood.rotated(film, 10 * (-1) ** i) for i, film in enumerate(validation)])
    assert passed(for_films, framed) >= 0.9 and passed(for_films, framed) > passed(former, framed)
    assert passed(for_films, turned) >= 0.8 and passed(for_films, turned) >= passed(former, turned)
    # and what is not a film, or not a readable one, is still stopped
    for family in ("uniform", "text", "inverted", "turned 90", "under-exposed", "over-exposed"):
        made = ood.ood_families(validation, size, seed=0, per_family=24)[family]
        assert passed(for_films, made) <= 0.1, family
    thumbnails = [ood.quality_problem(ood.enlarged_from(film, 32)) for film in validation]
    assert np.mean([problem is not None for problem in thumbnails]) >= 0.8
    assert all(ood.quality_problem(ood.jpeg_at(film, 5)) for film in validation)
