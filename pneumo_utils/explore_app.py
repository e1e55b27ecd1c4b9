"""The explorer's three panels as widgets, wired to :mod:`pneumo_utils.explore`: notebook 05 (and ``pneumo explore``,
which serves it with Voilà) builds them with one call and keeps only its prose.

- **threshold lab**: split, subgroup, threshold and prevalence -> confusion matrix, rates, PPV and the operating
  point on the ROC curve; and the card's operating modes (single, rule-out, triage) -> the refer band and its counts;
- **look inside**: filter by class and outcome, pick or upload an X-ray -> probability, label, gate verdict and
  the Grad-CAM (or Grad-CAM++) heatmap of a chosen layer;
- **what changes a prediction**: gamma, contrast and blur applied to the chosen image -> its new probability.

Every number comes from :mod:`pneumo_utils.explore` (tested there); this module only connects controls to it,
and is tested by driving the controls as a user would (``tests/test_explore_app.py``). The CSS classes
(``pneumo-threshold-slider``, ``pneumo-heatmap``, ...) are what the browser test finds the controls by.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
from ipywidgets import (
    HTML,
    Button,
    Dropdown,
    FileUpload,
    FloatSlider,
    HBox,
    Image,
    Layout,
    Text,
    ToggleButtons,
    VBox,
)

from pneumo_utils import explore
from pneumo_utils.config import portable_path
from pneumo_utils.data import split_label
from pneumo_utils.explain import overlays
from pneumo_utils.explore_service import RemoteExplorer, ServiceError
from pneumo_utils.images import ImageReadError
from pneumo_utils.model import operating

UPLOAD_TYPES = ".jpg,.jpeg,.png,.dcm,.dicom,.tif,.tiff,.webp"


class ExplorerApp:
    """The widgets of the three panels over one run's :class:`pneumo_utils.explore.Session`.

    ``threshold_lab``, ``look_inside`` and ``what_changes`` are the panels to display; the controls are
    attributes, so a test (or a teacher's own cell) can set them as a user would.
    """

    def __init__(self, session: explore.Session, explorer: explore.Explorer | None = None):
        self.session = session
        self.explorer = explorer or explore.Explorer(session.model_path)
        self.split_names = explore.split_order(session.scores)
        if not self.split_names:
            raise ValueError(
                f"{portable_path(session.run_dir or session.model_path)}: no per-image scores "
                "(metrics/scores_validation.csv); run notebook 03 first"
            )
        self.image: np.ndarray | None = None  # the chosen (or uploaded) X-ray, as the model reads it
        self.image_name: str | None = None
        # each split's ROC curve: drawn once by pneumo explore's model service, else here on first use
        self._roc_plots: dict[str, explore.RocPlot] = dict(getattr(self.explorer, "roc_plots", None) or {})
        self.threshold_lab = self._build_lab()
        self.look_inside = self._build_look_inside()
        self.what_changes = self._build_what_changes()
        if self.image_choice.options:  # the first image of the first split (explore.first_image)
            self.image_choice.value = self.image_choice.options[0][1]

    # ------------------------------------------------------------------------------------- what it says
    def summary(self) -> str:
        """The lines above the panels: the model, the scored sets, and anything that limits the panels."""
        lines = [
            f"model: {portable_path(self.session.model_path)}; scored sets: {sorted(self.session.scores)}",
        ]
        if self.session.data_problem:  # the lab still works; the images and heatmaps need the data folder
            lines.append(self.session.data_problem)
        if self.session.scored_now:
            lines.append(
                "this run kept no per-image scores: its validation split was scored now, with the card's split"
            )
        lines.append(f"card threshold {self.explorer.threshold:.4f}: {self.explorer.threshold_rule}")
        return "\n".join(lines)

    def scores(self) -> pd.DataFrame:
        """Per-image scores of the chosen split."""
        return self.session.scores[self.split_choice.value]

    # ------------------------------------------------------------------------------------ threshold lab
    def _build_lab(self) -> VBox:
        self.split_choice = Dropdown(
            options=[(split_label(name), name) for name in self.split_names],  # test-dev: used for selection
            value=self.split_names[0],
            description="split",
            layout=Layout(width="480px"),  # "test-final (held out, never used for a choice)" in full
        )
        self.threshold_slider = FloatSlider(
            value=self.explorer.threshold,
            min=0.0,
            max=1.0,
            step=0.001,
            readout_format=".3f",
            description="threshold",
            continuous_update=True,
            layout=Layout(width="420px"),
        )
        self.threshold_slider.add_class("pneumo-threshold-slider")
        self.prevalence_slider = FloatSlider(
            value=round(float(self.scores()["target"].mean()), 2),
            min=0.01,
            max=0.99,
            step=0.01,
            description="prevalence",
            readout_format=".0%",
        )
        self.subgroup_choice = Dropdown(  # one kind of pneumonia or one NORMAL batch; the ROC stays the split's
            options=explore.subgroup_names(self.session.scores.values()),
            value="all",
            description="subgroup",
            layout=Layout(width="420px"),
        )
        modes = self.explorer.card.get("operating_modes") or {}
        self.mode_choice = Dropdown(  # the card's operating modes: the refer band the decisions use
            options=[name for name in operating.MODES if name in modes] or ["single"],
            value=self.explorer.card.default_mode if self.explorer.card.default_mode in modes else None,
            description="mode",
        )
        if self.mode_choice.value is None:
            self.mode_choice.value = self.mode_choice.options[0]
        self.mode_choice.add_class("pneumo-mode-choice")
        self.band_readout = HTML()
        card_button = Button(description="back to the card's threshold", layout=Layout(width="220px"))
        card_button.on_click(lambda _: setattr(self.threshold_slider, "value", self.explorer.threshold))
        self.lab_readout, self.roc_image = HTML(), Image(format="png")
        for control in (self.split_choice, self.subgroup_choice, self.threshold_slider, self.prevalence_slider):
            control.observe(self._update_lab, names="value")
        for control in (self.split_choice, self.subgroup_choice, self.mode_choice):
            control.observe(self._update_band, names="value")
        self._update_band()
        self._update_lab()
        return VBox(
            [
                HBox([self.split_choice, self.subgroup_choice, self.prevalence_slider]),
                HBox([self.threshold_slider, card_button]),
                HBox([self.lab_readout, self.roc_image]),
                self.mode_choice,
                self.band_readout,
            ]
        )

    def _update_band(self, *_) -> None:
        key = (self.split_choice.value, self.subgroup_choice.value, self.mode_choice.value)
        shared = getattr(self.explorer, "bands", None) or {}  # computed once by pneumo explore's model service
        if key in shared:
            self.band_readout.value = shared[key]
            return
        self.band_readout.value = explore.subgroup_band(
            self.scores(), self.subgroup_choice.value, self.explorer.card, self.mode_choice.value
        )

    def _update_lab(self, *_) -> None:
        split, scores = self.split_choice.value, self.scores()
        if split not in self._roc_plots:
            self._roc_plots[split] = explore.split_roc_plot(split, scores, self.explorer.threshold)
        rows = explore.subgroup_rows(scores, self.subgroup_choice.value)
        point = explore.operating_point(
            rows["target"], rows["probability"], self.threshold_slider.value, self.prevalence_slider.value
        )
        self.lab_readout.value = explore.lab_html(point, self.explorer.threshold)
        self.roc_image.value = self._roc_plots[split].png(point)

    # -------------------------------------------------------------------------------------- look inside
    def _build_look_inside(self) -> VBox:
        self.label_choice = Dropdown(options=explore.LABELS, value="all", description="class")
        self.outcome_choice = Dropdown(options=explore.OUTCOMES, value="all", description="outcome")
        self.image_search = Text(  # a split has hundreds of images: narrow the list by part of a file name
            value="", placeholder="part of a file name", description="search", continuous_update=False
        )
        self.image_search.add_class("pneumo-image-search")
        self.image_choice = Dropdown(options=[], description="image", layout=Layout(width="640px"))
        self.image_choice.add_class("pneumo-image-choice")
        self.method_choice = ToggleButtons(options=["gradcam", "gradcam++"], value="gradcam", description="method")
        layers = self.explorer.layers
        self.layer_choice = Dropdown(options=layers, value=layers[-1], description="layer")
        self.opacity_slider = FloatSlider(value=0.4, min=0.0, max=1.0, step=0.05, description="opacity")
        self.upload = FileUpload(accept=UPLOAD_TYPES, multiple=False, description="upload an X-ray")
        self.verdict, self.message = HTML(), HTML()
        self.message.add_class("pneumo-message")
        self.original_image, self.heatmap_image = (
            Image(format="png", width=PICTURE_HEIGHT),
            Image(format="png", width=PICTURE_HEIGHT),
        )
        self.heatmap_image.add_class("pneumo-heatmap")
        for control in (
            self.label_choice,
            self.outcome_choice,
            self.threshold_slider,
            self.split_choice,
            self.image_search,
        ):
            control.observe(self._update_choices, names="value")
        self.image_choice.observe(self._choose_image, names="value")
        for control in (self.method_choice, self.layer_choice, self.opacity_slider):
            control.observe(self._show_heatmap, names="value")
        self.upload.observe(self._take_upload, names="value")
        self._update_choices()
        return VBox(
            [
                HBox([self.label_choice, self.outcome_choice, self.image_search]),
                self.image_choice,
                self.upload,
                self.message,
                HBox([self.method_choice, self.layer_choice, self.opacity_slider]),
                self.verdict,
                HBox([self.original_image, self.heatmap_image]),
            ]
        )

    def _update_choices(self, *_) -> None:
        rows = explore.select_images(
            self.scores(),
            self.threshold_slider.value,
            self.label_choice.value,
            self.outcome_choice.value,
            self.image_search.value,
        )
        self.image_choice.options = [
            (f"{row.file}  (p={row.probability:.2f}, {row.outcome})", row.path) for row in rows.itertuples()
        ]
        self.message.value = "" if len(rows) else "<i>no image matches these filters at this threshold</i>"

    def _choose(self, read, name: str) -> None:
        """Take an image (``read()`` gives it) or show the reader's one-line error in place of a heatmap."""
        try:
            self.image, self.image_name = read(), name
        except ImageReadError as error:
            self.message.value = f"<span class='pneumo-error'>error: {html.escape(str(error))}</span>"
            return
        self.message.value = ""
        self._show_heatmap()

    def _choose_image(self, change) -> None:
        if change["new"]:
            self._choose(lambda: self.explorer.read(change["new"]), change["new"].rsplit("/", 1)[-1])

    def _take_upload(self, change) -> None:
        for item in change["new"]:
            self._choose(
                lambda item=item: explore.read_upload(item["name"], item["content"], self.explorer.preprocessing),
                item["name"],
            )

    def _explain(self, image: np.ndarray) -> dict:
        return self.explorer.explain(
            image, self.method_choice.value, self.layer_choice.value, self.opacity_slider.value
        )

    def _show_heatmap(self, *_) -> None:
        if self.image is None:
            return
        try:
            result = self._explain(self.image)
        except ServiceError as error:  # the shared model refused or stopped: one line, this page only
            self.message.value = f"<span class='pneumo-error'>error: {html.escape(str(error))}</span>"
            return
        self.original_image.value = explore.display_png(self.image)
        _show_heatmap(self.heatmap_image, result["overlay"])
        self.verdict.value = explore.verdict_html(self.image_name, result, self.explorer.threshold)
        if hasattr(self, "stressed_verdict"):  # panel 3 follows the chosen image
            self._update_stress()

    # ------------------------------------------------------------------------ what changes a prediction
    def _build_what_changes(self) -> VBox:
        self.gamma_slider = FloatSlider(value=1.0, min=0.4, max=2.5, step=0.05, description="gamma")
        self.contrast_slider = FloatSlider(value=1.0, min=0.3, max=1.5, step=0.05, description="contrast")
        self.blur_slider = FloatSlider(value=0.0, min=0.0, max=4.0, step=0.25, description="blur (px)")
        self.stressed_image, self.stressed_verdict = Image(format="png", width=PICTURE_HEIGHT), HTML()
        self.stressed_verdict.add_class("pneumo-stressed")
        for control in (self.gamma_slider, self.contrast_slider, self.blur_slider):
            control.observe(self._update_stress, names="value")
        self._update_stress()
        return VBox(
            [
                HBox([self.gamma_slider, self.contrast_slider, self.blur_slider]),
                HBox([self.stressed_image, self.stressed_verdict]),
            ]
        )

    def _update_stress(self, *_) -> None:
        if self.image is None:
            self.stressed_verdict.value = "<i>choose or upload an image above</i>"
            return
        changed = explore.stressed(
            self.image,
            self.explorer.preprocessing,
            self.gamma_slider.value,
            self.contrast_slider.value,
            self.blur_slider.value,
        )
        try:
            result = self._explain(changed)
        except ServiceError as error:
            self.stressed_verdict.value = f"<span class='pneumo-error'>error: {html.escape(str(error))}</span>"
            return
        _show_heatmap(self.stressed_image, result["overlay"])
        self.stressed_verdict.value = explore.verdict_html(
            "changed image", result, self.explorer.threshold, "pneumo-stressed-probability"
        )


def build_app(
    profile: str | None = None,
    data_dir: str | None = None,
    output_dir: str | None = None,
    overrides: dict | None = None,
    run_dir: str | None = None,
    model_path: str | None = None,
) -> ExplorerApp:
    """The explorer over the run notebook 05's parameters name (see :func:`pneumo_utils.explore.notebook_session`).

    A page served by ``pneumo explore`` asks the server's one model service instead (its session and model
    are the ones ``pneumo explore`` resolved and loaded once; the parameters are then not used): the page's
    kernel imports no TensorFlow.
    """
    remote = RemoteExplorer.from_environment()
    if remote is not None:
        return ExplorerApp(remote.session, remote)
    return ExplorerApp(explore.notebook_session(profile, data_dir, output_dir, overrides or {}, run_dir, model_path))


PICTURE_HEIGHT = 256  # pixels on the page: the X-ray and its heatmap side by side at one height


def _show_heatmap(widget: Image, overlay) -> None:
    """An overlay with its colour bar, drawn at the page's picture height: the widget is widened by the bar,
    so the X-ray under the heatmap keeps its proportions."""
    picture = overlays.with_colour_bar(overlay)
    widget.width = round(PICTURE_HEIGHT * picture.shape[1] / picture.shape[0])
    widget.value = explore.display_png(picture)
