"""The explorer's Voilà template: Voilà's own ``lab`` page with every asset served by this server.

Voilà's ``lab`` template loads its icon font (FontAwesome) from a CDN; in a classroom without internet the
icons then break. This template extends ``lab`` and points those two links at a copy of FontAwesome's CSS and
fonts served from the explorer itself (the ``fontawesomefree`` package, MIT/OFL), so the page needs nothing
from outside the machine it is served from. :func:`write_template` writes the template into a folder that
``pneumo explore`` puts on ``JUPYTER_PATH`` for the Voilà process, and removes with it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

NAME = "pneumo"
CDN = (
    "https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@^5/css/",  # Voilà 0.5's lab template
)
INDEX = """{%- extends 'lab/index.html.j2' -%}
{#- Voilà's page, with its CDN stylesheets served from this server instead (no internet needed) -#}
{%- block notebook_css -%}
{{ super() | replace(CDN, resources.base_url ~ "voila/templates/pneumo/static/css/") }}
{%- endblock notebook_css -%}
"""


class TemplateError(RuntimeError):
    """The local copy of the icon font is missing: the explorer's page would need the internet."""


def fontawesome_folder() -> Path:
    """FontAwesome's CSS and web fonts as the ``fontawesomefree`` package installs them."""
    try:
        import fontawesomefree
    except ImportError:
        raise TemplateError("pneumo explore needs fontawesomefree (pip install -e '.[explore]')") from None
    folder = Path(fontawesomefree.__file__).parent / "static" / "fontawesomefree"
    if not (folder / "css" / "all.min.css").is_file():
        raise TemplateError(f"{folder}: FontAwesome's CSS is missing; reinstall fontawesomefree")
    return folder


def write_template(jupyter_path: str | Path) -> Path:
    """Write the template under ``jupyter_path/voila/templates/pneumo`` (with its own copy of the icon font's
    CSS and web fonts, about 1.6 MB); returns the template's folder."""
    source = fontawesome_folder()
    template = Path(jupyter_path) / "voila" / "templates" / NAME
    (template / "static").mkdir(parents=True, exist_ok=True)
    (template / "conf.json").write_text(json.dumps({"base_template": "lab"}), encoding="utf-8")
    (template / "index.html.j2").write_text(INDEX.replace("CDN", json.dumps(CDN[0])), encoding="utf-8")
    for part in ("css", "webfonts"):
        shutil.copytree(source / part, template / "static" / part, dirs_exist_ok=True)
    return template
