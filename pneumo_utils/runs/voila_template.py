"""The explorer's Voilà template: Voilà's own ``lab`` page with every asset served by this server.

Voilà's ``lab`` template loads its icon font (FontAwesome) from a CDN; in a classroom without internet the
icons then break. This template extends ``lab`` and points those two links at a copy of FontAwesome's CSS and
fonts served from the explorer itself (the ``fontawesomefree`` package, MIT/OFL), so the page needs nothing
from outside the machine it is served from. :func:`write_template` writes the template into a folder that
``pneumo explore`` puts on ``JUPYTER_PATH`` for the Voilà process, and removes with it.

The page also refuses an upload too large for the server's websocket (which would close the page's connection)
before sending it, with the line the kernel gives for a large upload.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pneumo_utils.explore import UPLOAD_LIMIT, UPLOAD_MESSAGE_LIMIT

NAME = "pneumo"
CDN = (
    "https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@^5/css/",  # Voilà 0.5's lab template
)
INDEX = """{%- extends 'lab/index.html.j2' -%}
{#- Voilà's page, with its CDN stylesheets served from this server instead (no internet needed) -#}
{%- block notebook_css -%}
{{ super() | replace(CDN, resources.base_url ~ "voila/templates/pneumo/static/css/") }}
{%- endblock notebook_css -%}
{%- block html_head_js -%}
{{ super() }}
<script>
/* An upload is one websocket message, which this server accepts up to MESSAGE_LIMIT bytes: a larger one would
   close the page's connection. ipywidgets' upload button reads its files from an <input> that is never in the
   page (so no listener on the page sees its events): its "change" listener is wrapped as it is added, and a
   file that large is refused here, before a byte is read or sent, with the line the kernel gives for files from
   READ_LIMIT bytes (which it refuses itself). */
(function () {
  function refused(input) {
    var files = input.files || [];
    for (var i = 0; i < files.length; i++) {
      if (files[i].size < MESSAGE_LIMIT) { continue; }
      var text = "error: " + files[i].name + ": " + (files[i].size / 1048576).toFixed(1) + " MB, more than the " +
        "explorer reads (" + Math.round(READ_LIMIT / 1048576) + " MB); pneumo predict reads files of any size";
      input.value = "";
      var message = document.querySelector(".pneumo-message .widget-html-content") ||
        document.querySelector(".pneumo-message");
      if (message) {
        var line = document.createElement("span");
        line.className = "pneumo-error";
        line.textContent = text;
        message.replaceChildren(line);
      }
      return true;
    }
    return false;
  }
  var add = EventTarget.prototype.addEventListener;
  EventTarget.prototype.addEventListener = function (type, listener, options) {
    if (type === "change" && this instanceof HTMLInputElement && this.type === "file" &&
        typeof listener === "function") {
      var input = this;
      var guarded = function () { return refused(input) ? undefined : listener.apply(this, arguments); };
      return add.call(this, type, guarded, options);
    }
    return add.call(this, type, listener, options);
  };
})();
</script>
{%- endblock html_head_js -%}
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
    index = INDEX.replace("replace(CDN", "replace(" + json.dumps(CDN[0]))
    index = index.replace("MESSAGE_LIMIT", str(UPLOAD_MESSAGE_LIMIT)).replace("READ_LIMIT", str(UPLOAD_LIMIT))
    (template / "index.html.j2").write_text(index, encoding="utf-8")
    for part in ("css", "webfonts"):
        shutil.copytree(source / part, template / "static" / part, dirs_exist_ok=True)
    return template
