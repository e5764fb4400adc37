"""A toy detector served as a model hook: Label Studio's ML backend ``/predict``, over HTTP.

It is not a trained model and detects nothing of interest. In each image it boxes the largest
patch (4-connected) of its brightest pixels, the top 15% of its gray levels, labeled ``bright``,
and the largest patch of its darkest, the bottom 15%, labeled ``dark``; each box's score grows
with the patch's contrast with the whole image, from 0.5 to 0.99, so flat images are where it
doubts. It exists to show the contract a real detector (a YOLO behind ``label-studio-ml``, say)
speaks to close labelloop's loop on a ``bounding_boxes`` project, and to give the photo-patches
example a model to run with::

    export PHOTO_PATCHES_TOKEN=$(openssl rand -hex 16)   # the trainer needs the same variable
    python examples/photo-patches/detector.py --port 9090

It serves what labelloop's trainer calls:

* ``POST /predict`` with ``{"tasks": [{"id": 0, "data": {"image": ...}}, ...], "project": ...,
  "label_config": "<View>...</View>", "params": {...}}``, answered with ``{"results": [...]}``,
  one prediction per task in the tasks' order: ``{"result": [region, ...], "score": ...,
  "model_version": ...}``, each region ``{"from_name", "to_name", "type": "rectanglelabels",
  "value": {"x", "y", "width", "height", "rotation", "rectanglelabels": [label]}, "score"}`` in
  percent of the image. The image field and the names come from ``label_config``, as
  ``label-studio-ml``'s ``LabelStudioMLBase`` reads them.
* ``GET /health``: ``{"status": "UP", ...}``.

Credentials: when the environment variable ``PHOTO_PATCHES_TOKEN`` (``--credentials-env``) is set,
every request must carry ``Authorization: Bearer <its value>`` and is answered 401 otherwise;
the token is never logged. Unset, anyone who reaches the port is answered (it listens on
127.0.0.1 unless ``--host`` says otherwise).

Images: PNG data URIs (what ``tiles.py`` writes), read with Pillow; a task it cannot read fails
the request with 400 and the reason. It needs numpy, Pillow and SciPy, which labelloop
installs. It never learns: there is no ``/train``, and labelloop never calls one.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import html
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

Array = npt.NDArray[Any]
Box = tuple[str, dict[str, float], float]
"""A detection: its label, its box in percent of the image (``x``, ``y``, ``width``,
``height``), its score."""
Observer = Callable[[int, Mapping[str, Any] | None], None]

MODEL_VERSION = "tile-detector-1"
LABELS = ("bright", "dark")
PORT = 9090
"""``label-studio-ml``'s default port."""
CREDENTIALS_ENV = "PHOTO_PATCHES_TOKEN"
SHARE = 15.0
"""Percent of the gray levels, at each end, that a patch is made of."""
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 40_000_000

log = logging.getLogger("photo_patches.detector")


class BadRequest(ValueError):
    """A request this detector cannot answer: the message says why (sent back with a 400)."""


# ----------------------------------------------------------------------------- the images

_PNG_URI = "data:image/png;base64,"


def decode_png(raw: bytes) -> Array:
    """A PNG as a ``(height, width, 3)`` RGB array; :class:`BadRequest` for anything else."""
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as image:
            if image.width * image.height > MAX_PIXELS:  # the header alone is read so far
                raise BadRequest(
                    f"a PNG of {image.width} x {image.height} pixels is more than this toy reads"
                )
            return np.asarray(image.convert("RGB"))
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        if isinstance(exc, BadRequest):
            raise
        raise BadRequest(f"not a readable PNG: {exc}") from None


def read_image(ref: object) -> Array:
    """A task's image: a PNG data URI, decoded."""
    if not isinstance(ref, str) or not ref.startswith(_PNG_URI):
        raise BadRequest("the image is not a PNG data URI (data:image/png;base64,...)")
    try:
        raw = base64.b64decode(ref[len(_PNG_URI) :], validate=True)
    except binascii.Error:
        raise BadRequest("the image's base64 is broken") from None
    return decode_png(raw)


# ----------------------------------------------------------------------------- the "model"


def _largest_patch(mask: Array) -> Array | None:
    """The largest 4-connected patch of ``mask`` (of equal ones, the first in reading order:
    ``ndimage.label`` numbers patches in that order)."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    return np.asarray(labels == int(np.argmax(sizes)) + 1)


def detect(image: Array) -> list[Box]:
    """The largest patch of the image's brightest and of its darkest pixels, in percent of the
    image, each with a score from its contrast with the image (0.5-0.99)."""
    gray = image.astype(np.float64).mean(axis=2)
    height, width = gray.shape
    found: list[Box] = []
    for label, mask in (
        ("bright", gray >= np.percentile(gray, 100.0 - SHARE)),
        ("dark", gray <= np.percentile(gray, SHARE)),
    ):
        patch = _largest_patch(mask)
        if patch is None:
            continue
        ys, xs = np.nonzero(patch)
        box = {
            "x": 100.0 * float(xs.min()) / width,
            "y": 100.0 * float(ys.min()) / height,
            "width": 100.0 * float(xs.max() + 1 - xs.min()) / width,
            "height": 100.0 * float(ys.max() + 1 - ys.min()) / height,
        }
        contrast = abs(float(gray[patch].mean()) - float(gray.mean())) / 255.0
        found.append((label, box, round(0.5 + min(2.0 * contrast, 0.49), 4)))
    return found


# ----------------------------------------------------------------------------- the contract

_TAG = re.compile(r"<(Image|RectangleLabels)\b([^>]*)>")
_ATTRIBUTE = re.compile(r"""(\w+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def _names(label_config: str) -> tuple[str, str, str]:
    """``(from_name, to_name, data field)`` of the request's labeling interface: its first
    RectangleLabels control and the Image it points at (``label``, ``image``, ``image`` when
    the config does not say)."""
    tags: dict[str, list[dict[str, str]]] = {"Image": [], "RectangleLabels": []}
    for tag, attributes in _TAG.findall(label_config):
        tags[tag].append({k: html.unescape(a or b) for k, a, b in _ATTRIBUTE.findall(attributes)})
    control = tags["RectangleLabels"][0] if tags["RectangleLabels"] else {}
    from_name = control.get("name", "label")
    to_name = control.get("toName", "image")
    image = next((t for t in tags["Image"] if t.get("name") == to_name), {})
    return from_name, to_name, image.get("value", "$" + to_name).removeprefix("$")


def predict(body: Mapping[str, Any]) -> dict[str, Any]:
    """The answer to a ``/predict`` request's body: one prediction per task, in order."""
    tasks = body.get("tasks")
    if not isinstance(tasks, list):
        raise BadRequest("the request has no 'tasks' list")
    from_name, to_name, field = _names(str(body.get("label_config") or ""))
    results = []
    for k, task in enumerate(tasks):
        data = task.get("data") if isinstance(task, dict) else None
        name = task.get("id", k) if isinstance(task, dict) else k
        if not isinstance(data, dict) or field not in data:
            raise BadRequest(f"task {name}: no data.{field}")
        try:
            image = read_image(data[field])
        except BadRequest as exc:
            raise BadRequest(f"task {name}: {exc}") from None
        found = detect(image)
        regions = [
            {
                "from_name": from_name,
                "to_name": to_name,
                "type": "rectanglelabels",
                "value": {**box, "rotation": 0, "rectanglelabels": [label]},
                "score": score,
            }
            for label, box, score in found
        ]
        results.append(
            {
                "result": regions,
                # the image's score: its boxes' mean (none found: 0)
                "score": sum(score for _, _, score in found) / max(len(found), 1),
                "model_version": MODEL_VERSION,
            }
        )
    return {"results": results}


# ----------------------------------------------------------------------------- the server


class _Handler(BaseHTTPRequestHandler):
    server: DetectorServer
    server_version = "TileDetector/1"

    def _send(self, status: int, payload: object) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="detector"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        sent = self.headers.get("Authorization", "")
        # compared in constant time: how long a refusal takes says nothing about the token
        return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())

    def _read_body(self) -> tuple[int, str] | bytes:
        """The request's body, or the status and reason it is refused with."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return 411, "a Content-Length, please"
        if not 0 <= length <= MAX_BODY_BYTES:
            return 413, f"a body of at most {MAX_BODY_BYTES} bytes, please"
        return self.rfile.read(length)

    def do_GET(self) -> None:
        started = time.perf_counter()
        if not self._authorized():
            status, payload = 401, {"error": "unauthorized"}
        elif urlsplit(self.path).path == "/health":
            status = 200
            payload = {
                "status": "UP",
                "model_class": "TileDetector",
                "model_version": MODEL_VERSION,
            }
        else:
            status, payload = 404, {"error": "not found"}
        self._send(status, payload)
        self._done(status, 0, started)

    def do_POST(self) -> None:
        started = time.perf_counter()
        path = urlsplit(self.path).path
        # the body is read before anything is answered: a server that closes a socket holding
        # unread bytes resets the connection, and the client sees no answer at all
        raw = self._read_body()
        body: dict[str, Any] | None = None
        tasks = 0
        if isinstance(raw, tuple):
            status, payload = raw[0], {"error": raw[1]}
            self.close_connection = True
        elif not self._authorized():
            status, payload = 401, {"error": "unauthorized"}
        elif path != "/predict":
            status, payload = 404, {"error": "not found"}
        else:
            try:
                parsed = json.loads(raw)
                if not isinstance(parsed, dict):
                    raise BadRequest("the request is not a JSON object")
                body = parsed
                if isinstance(parsed.get("tasks"), list):
                    tasks = len(parsed["tasks"])
                status, payload = 200, predict(parsed)
            except (BadRequest, ValueError) as exc:  # ValueError: not JSON, not UTF-8
                status, payload = 400, {"error": str(exc)}
        self._send(status, payload)
        self._done(status, tasks, started)
        if path == "/predict" and self.server.observe is not None:
            self.server.observe(status, body)

    def _done(self, status: int, tasks: int, started: float) -> None:
        # one line per request; never a header (the token is in one)
        log.info(
            "%s %s %d %d tasks %.3f s",
            self.command,
            urlsplit(self.path).path,
            status,
            tasks,
            time.perf_counter() - started,
        )

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _done says it, with the outcome

    def log_message(self, format: str, *args: Any) -> None:
        log.warning("%s: %s", self.address_string(), format % args)


class DetectorServer(ThreadingHTTPServer):
    """The detector on ``address``; ``token``: the bearer token every request must carry (none:
    no credentials asked); ``observe``: called with each ``/predict`` request's status and, when
    it was authorized and JSON, its body (whoever embeds the server watches the requests so)."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        token: str | None = None,
        observe: Observer | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.token = token
        self.observe = observe

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="A toy box detector (brightest and darkest patch) behind Label Studio's "
        "ML backend /predict contract: the photo-patches example's model hook."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=PORT, help=f"port ({PORT}; 0: any free one)")
    parser.add_argument(
        "--credentials-env",
        default=CREDENTIALS_ENV,
        help=f"environment variable holding the bearer token clients must send ({CREDENTIALS_ENV}"
        "; unset or empty: none asked)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    token = os.environ.get(args.credentials_env, "").strip() or None
    server = DetectorServer((args.host, args.port), token=token)
    log.info("tile detector %s at %s: POST /predict, GET /health", MODEL_VERSION, server.url)
    if token is None:
        log.warning("%s is not set: anyone who reaches the port is answered", args.credentials_env)
    else:
        log.info("every request needs the bearer token in %s", args.credentials_env)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
