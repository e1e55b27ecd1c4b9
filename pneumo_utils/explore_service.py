"""One model for every page of the explorer: ``pneumo explore`` loads TensorFlow, the model and its gate once, in
its own process, and each page's kernel asks it for what needs them.

Why this shape: a page of notebook 05 used to import TensorFlow and load the four-member ensemble itself; issue
28 measured about 0.9 GB per page, 23 s to a first page, and 194 s (median) and 9.9 GB for ten pages at once.
What a page needs from the model is small: the card, the run's scored splits (read once here) and, for one
chosen or uploaded image, its probability, gate verdict and heatmap. So a page's kernel stays thin (NumPy,
pandas, OpenCV, ipywidgets; no TensorFlow, scikit-learn, SciPy or matplotlib) and holds only its own state
(split, threshold, image, sliders); the heavy part answers requests over a loopback socket:

- ``info``: the run's scored splits, the card, the operating-mode tables and each split's ROC curve (as
  pixels: a page marks its point with OpenCV, without matplotlib), computed once;
- ``explain``: one image (as the model reads it) -> probability, label, gate verdict and the heatmap map. Maps
  are kept (by the image's bytes, method and layer), so thirty pages opening on the same first image cost one
  Grad-CAM; requests are answered one at a time (two cores gain nothing from two at once).

The socket is :mod:`multiprocessing.connection` on 127.0.0.1 with a random key that only the server's own
kernels get (``$PNEUMO_EXPLORE_KEY``, in their environment): another user of the machine cannot connect. A bad
request (a wrong array, a layer the model lacks) is answered with one line for that page only; the service
keeps serving the others. In JupyterLab (no ``pneumo explore``) notebook 05 loads the model itself, as before.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter, OrderedDict
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener, answer_challenge, deliver_challenge
from typing import Any

import numpy as np

from pneumo_utils import explore
from pneumo_utils.explain import overlays

ADDRESS_ENV = "PNEUMO_EXPLORE_SERVICE"  # host:port of the model service, set for the server's kernels
KEY_ENV = "PNEUMO_EXPLORE_KEY"  # the connection key (hex), set for them too
ACCEPT_BACKLOG = 256  # kernels connecting at once that wait their turn instead of retrying their connection
MAX_IMAGE_SIDE = 2048  # an image the service is asked about is the card's size; anything far off is refused
METHODS = ("gradcam", "gradcam++")


class ServiceError(ValueError):
    """The model service refused a request (one line), or cannot be reached."""


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class ModelService:
    """The shared part of the explorer: an :class:`pneumo_utils.explore.Explorer` (TensorFlow, the model, the
    gate) and the session, answering the pages' kernels. ``start`` listens; ``close`` stops listening."""

    def __init__(self, session: explore.Session, explorer: explore.Explorer | None = None, cache_size: int = 512):
        self.session = session
        self.explorer = explorer or explore.Explorer(session.model_path)
        self.counts: Counter[str] = Counter(model_loads=1)
        self._lock = threading.Lock()  # one model call at a time
        self._maps: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size
        self._listener: Listener | None = None
        self._closed = threading.Event()
        self.bands = explore.band_tables(session, self.explorer.card)
        self.roc_plots = explore.roc_plots(session, self.explorer.threshold)

    # ---------------------------------------------------------------------------------------------- answers
    def info(self) -> dict[str, Any]:
        """What a page needs before its first image: the session (with its band tables) and the model's card."""
        explorer = self.explorer
        return {
            "session": self.session,
            "bands": self.bands,
            "roc_plots": self.roc_plots,
            "card": explorer.card,
            "threshold": explorer.threshold,
            "threshold_rule": explorer.threshold_rule,
            "layers": list(explorer.layers),
        }

    def explain(self, image: Any, method: str = "gradcam", layer: str | None = None) -> dict[str, Any]:
        """Probability, label, gate verdict and heatmap map of one image (no overlay: the page blends it)."""
        size = self.explorer.preprocessing.image_size
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 2:
            raise ServiceError("an image for the model is a 2-D uint8 array (as pneumo_utils.images reads it)")
        if image.shape != (size, size):
            raise ServiceError(
                f"an image for this model is {size} x {size} px, got {image.shape[1]} x {image.shape[0]}"
            )
        if method not in METHODS:
            raise ServiceError(f"method must be one of {METHODS}, got {method!r}")
        layer = layer or self.explorer.layers[-1]
        if layer not in self.explorer.layers:
            raise ServiceError(f"layer must be one of the model's {len(self.explorer.layers)} layers, got {layer!r}")
        key = (hashlib.sha256(image.tobytes()).hexdigest(), method, layer)
        with self._lock:
            self.counts["explain_requests"] += 1
            if key in self._maps:
                self.counts["explain_cached"] += 1
                self._maps.move_to_end(key)
                return self._maps[key]
            result = self.explorer.explain_map(image, method, layer)
            self.counts["explain_computed"] += 1
            self._maps[key] = result
            if len(self._maps) > self._cache_size:
                self._maps.popitem(last=False)
            return result

    def warm_up(self) -> threading.Thread:
        """Compute, in the background, the heatmap every page opens on (and compile the model's Grad-CAM):
        the first students do not wait for it one after another."""

        def work():
            path = explore.first_image(self.session, self.explorer.threshold)
            try:
                if path:
                    self.explain(self.explorer.read(path))
            except Exception:  # noqa: BLE001 - a page asking for it gets the one-line error itself
                self.counts["warm_up_failed"] += 1

        thread = threading.Thread(target=work, name="explore-warm-up", daemon=True)
        thread.start()
        return thread

    def stats(self) -> dict[str, Any]:
        """Counters for the benchmark and the tests: the model was loaded once, maps were shared."""
        with self._lock:
            return {**self.counts, "cached_maps": len(self._maps), "pid": os.getpid()}

    def answer(self, request: Any) -> tuple[str, Any]:
        """One request (``(name, keyword arguments)``) -> ``("ok", value)`` or ``("error", one line)``."""
        handlers = {"info": self.info, "explain": self.explain, "stats": self.stats}
        try:
            name, arguments = request
            handler = handlers[name]
            if not isinstance(arguments, dict):
                raise TypeError("arguments must be a dict")
            return "ok", handler(**arguments)
        except (KeyError, TypeError, ValueError) as error:  # a wrong request: this page's problem only
            self.counts["refused"] += 1
            return "error", _one_line(error) if isinstance(error, ServiceError) else f"bad request ({_one_line(error)})"
        except Exception as error:  # noqa: BLE001 - the service keeps serving the other pages
            self.counts["failed"] += 1
            return "error", f"the model could not answer ({type(error).__name__}: {_one_line(error)})"

    # ------------------------------------------------------------------------------------------- the socket
    def start(self, host: str = "127.0.0.1") -> tuple[str, str]:
        """Listen on a free port of ``host``; returns (``host:port``, key in hex) for the kernels' environment."""
        key = os.urandom(32)
        self._key = key
        # a class's kernels connect at once: a deep queue (multiprocessing's default is 1), and each key
        # handshake in its connection's own thread, so one slow kernel never holds up the others' connections
        self._listener = Listener((host, 0), backlog=ACCEPT_BACKLOG)
        threading.Thread(target=self._accept, name="explore-service", daemon=True).start()
        address = self._listener.address
        return f"{address[0]}:{address[1]}", key.hex()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection = self._listener.accept()
            except OSError:  # closed, or a connection that went away before it was taken: next
                if self._closed.is_set():
                    return
                continue
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: Connection) -> None:
        with connection:
            try:  # what Listener(authkey=...) does inside accept(), here in this connection's thread
                deliver_challenge(connection, self._key)
                answer_challenge(connection, self._key)
            except (OSError, EOFError, AuthenticationError):  # a client without the key, or gone: refused
                return
            self.counts["connections"] += 1
            while not self._closed.is_set():
                try:
                    request = connection.recv()
                except (EOFError, OSError):
                    return  # the page's kernel went away
                except Exception:  # noqa: BLE001 - a message that does not unpickle
                    connection.send(("error", "bad request (not a message of the explorer)"))
                    continue
                try:
                    connection.send(self.answer(request))
                except (OSError, ValueError):
                    return

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.close()


class RemoteExplorer:
    """What :class:`pneumo_utils.explore_app.ExplorerApp` needs of an explorer, answered by a
    :class:`ModelService`: ``card``, ``threshold``, ``threshold_rule``, ``layers``, ``preprocessing``, ``read``
    and ``explain``. No TensorFlow is imported here."""

    def __init__(self, address: str, key: str):
        host, _, port = address.rpartition(":")
        try:
            self._connection = Client((host, int(port)), authkey=bytes.fromhex(key))
        except (OSError, ValueError, EOFError, AuthenticationError) as error:
            raise ServiceError(
                f"the explorer's model service at {address} cannot be reached ({_one_line(error)}); "
                "restart pneumo explore"
            ) from None
        self._lock = threading.Lock()
        info = self._call("info")
        self.session: explore.Session = info["session"]
        self.bands: dict[tuple[str, str, str], str] = info["bands"]
        self.roc_plots: dict[str, explore.RocPlot] = info["roc_plots"]
        self.card = info["card"]
        self.threshold, self.threshold_rule = info["threshold"], info["threshold_rule"]
        self.layers = info["layers"]
        self.preprocessing = self.card.preprocessing

    @classmethod
    def from_environment(cls) -> RemoteExplorer | None:
        """The server's service when this kernel was started by ``pneumo explore``; None otherwise."""
        address, key = os.environ.get(ADDRESS_ENV), os.environ.get(KEY_ENV)
        return cls(address, key) if address and key else None

    def _call(self, name: str, **arguments) -> Any:
        with self._lock:
            try:
                self._connection.send((name, arguments))
                status, value = self._connection.recv()
            except (EOFError, OSError) as error:
                raise ServiceError(
                    f"the explorer's model service stopped ({_one_line(error)}); restart pneumo explore"
                ) from None
        if status != "ok":
            raise ServiceError(value)
        return value

    def read(self, path) -> np.ndarray:
        return explore.read_image(path, self.preprocessing, for_the_model=True)

    def explain(
        self, image: np.ndarray, method: str = "gradcam", layer: str | None = None, opacity: float = 0.4
    ) -> dict[str, Any]:
        result = dict(self._call("explain", image=image, method=method, layer=layer))
        result["overlay"] = overlays.overlay(image, result["map"], alpha=opacity)
        return result

    def stats(self) -> dict[str, Any]:
        return self._call("stats")
