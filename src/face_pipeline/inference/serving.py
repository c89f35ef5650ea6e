"""The served model: one MLflow pyfunc bundling detection, preprocessing and both networks.

Input: a DataFrame with a column ``image`` of base64-encoded photos (any format PIL or OpenCV
reads) and optionally ``id``. Output: one row per face, as ``FacePredictor`` gives it.

    mlflow models serve -m runs:/<run id>/face_model --env-manager local -h 127.0.0.1 -p 5001

Errors: a bad request is refused with a 4xx whose message names the row; a failure inside the
model is a 500 with a short message and a request id, the traceback only in the server's log.
Limits (``SERVING_LIMITS``) are part of the model's config; change them when serving with
``MLFLOW_PYFUNC_INFERENCE_CONFIG='{"max_rows": 512}'`` (see docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

from face_pipeline.embedding.descriptor import PREDICT_MODES
from face_pipeline.imaging.decoding import ImageRejected, open_image

logger = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class ServingLimits:
    """What one request to the served model may hold; anything larger is refused with a 4xx.

    ``max_rows``: photos per request (3,000 photos take longer than the scoring server's 60 s
    timeout on 2 cores). ``max_image_bytes``: one decoded photo. ``max_body_bytes``: the whole
    HTTP body, checked before it is read (the scoring server would otherwise hold all of it, and
    several copies while parsing the JSON, in memory).
    """

    max_rows: int = 256
    max_image_bytes: int = MAX_IMAGE_BYTES
    max_body_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ServingLimits:
        return cls(**{name: int(config[name]) for name in cls.__dataclass_fields__ if config.get(name) is not None})


SERVING_LIMITS = ServingLimits()
MODEL_CARD = "model_card"  # the served model's artifact holding the card (Markdown)


def _reject(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(message)


def decode_payload(
    model_input: pd.DataFrame, max_bytes: int, max_pixels: int, max_rows: int = SERVING_LIMITS.max_rows
) -> list[tuple[str, bytes]]:
    """``(id, image bytes)`` per row; any bad row rejects the request with a message naming it."""
    if not isinstance(model_input, pd.DataFrame) or "image" not in model_input.columns:
        raise _reject("expected a table with a column 'image' of base64-encoded photos")
    if len(model_input) > max_rows:
        raise _reject(f"{len(model_input)} rows in one request; at most {max_rows} (send several requests)")
    ids = model_input["id"].astype(str) if "id" in model_input.columns else model_input.index.astype(str)
    photos = []
    for row, (name, value) in enumerate(zip(ids, model_input["image"], strict=True)):
        if not isinstance(value, str) or not value.strip():
            raise _reject(f"row {row}: 'image' is empty or not a string")
        if len(value) > max_bytes * 4 // 3 + 4:
            raise _reject(f"row {row}: image larger than {max_bytes // (1024 * 1024)} MB")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _reject(f"row {row}: 'image' is not valid base64 ({exc})") from exc
        try:
            open_image(data, max_pixels)
        except ImageRejected as exc:
            raise _reject(f"row {row}: {exc}") from exc
        photos.append((name, data))
    return photos


class FaceModel(mlflow.pyfunc.PythonModel):
    """Detection + ``face_input`` + each task's network (config ``tasks``), as one MLflow model."""

    def load_context(self, context) -> None:
        import keras  # noqa: PLC0415

        from face_pipeline.inference.loading import embedding_backend, embedding_heads  # noqa: PLC0415
        from face_pipeline.inference.predictor import FacePredictor  # noqa: PLC0415

        config = context.model_config
        self.limits = ServingLimits.from_config(config)
        tasks = config["tasks"]
        accurate = None
        if config.get("mode", PREDICT_MODES[0]) == "accurate":
            if not config.get("combination"):
                raise MlflowException("mode accurate: this face_model was packaged without embedding heads")
            heads = {
                task: {
                    "head": keras.models.load_model(context.artifacts[f"{task}_head"], safe_mode=True),
                    "combination": config["combination"][task],
                }
                for task in tasks
            }
            accurate = embedding_heads(heads, embedding_backend(config["inference_settings"]))
        self.predictor = FacePredictor.from_settings(
            # safe_mode: a model file cannot run code of its own (Lambda layers) when it loads.
            {task: keras.models.load_model(context.artifacts[f"{task}_model"], safe_mode=True) for task in tasks},
            config["inference_settings"],
            calibration=config.get("calibration", {}),
            accurate=accurate,
        )
        self.max_pixels = self.predictor.spec.max_pixels
        if os.environ.get(SCORING_SERVER_MODEL_PATH):  # loaded by `mlflow models serve`
            limit_scoring_server_requests(self.limits.max_body_bytes)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        try:
            photos = decode_payload(model_input, self.limits.max_image_bytes, self.max_pixels, self.limits.max_rows)
            return self.predictor.predict(photos).rename(columns={"file": "id"})
        except MlflowException:
            raise  # the request's own fault, already with a message naming the row
        except Exception as exc:
            rows = len(model_input) if isinstance(model_input, pd.DataFrame) else "?"
            raise internal_error(f"prediction on {rows} row(s)") from exc


def internal_error(what: str) -> MlflowException:
    """A 500 for a failure inside the model: a short message and a request id; the traceback
    goes to the server's log under that id, never into the reply."""
    request_id = uuid.uuid4().hex[:12]
    logger.exception("request %s: %s failed", request_id, what)
    return MlflowException(
        f"internal error in the face model (request {request_id}); the server log has the details",
        error_code=INTERNAL_ERROR,
    )


# The environment variable `mlflow models serve` sets for its scoring server's app module.
SCORING_SERVER_MODEL_PATH = "__pyfunc_model_path__"
ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class RequestGuard:
    """ASGI middleware in front of MLflow's scoring server.

    - A body declared larger than ``max_bytes`` is refused (413) before any of it is read; one that
      grows past it while arriving (no Content-Length) stops being read (400).
    - No error reply carries a traceback: MLflow puts one into the reply (``stack_trace``) for an
      exception it did not expect; it goes to the log instead, under a request id the reply names.
    - A request that makes MLflow's own parsing fail unexpectedly gets a 400 with one line, not a
      bare 500.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _reply(send, 413, "REQUEST_LIMIT_EXCEEDED", self._too_large(f"{int(declared):,} bytes"))
            return
        received = 0
        started = False
        error_start: dict | None = None

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise MlflowException.invalid_parameter_value(self._too_large(f"over {self.max_bytes:,} bytes"))
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started, error_start
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 400:  # held back until its body is known
                    error_start = message
                    return
            elif message["type"] == "http.response.body" and error_start is not None and not message.get("more_body"):
                body = without_stack_trace(message.get("body", b""))
                headers = [(k, v) for k, v in error_start.get("headers", []) if k.lower() != b"content-length"]
                await send({**error_start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                error_start = None
                message = {**message, "body": body}
            elif error_start is not None:
                await send(error_start)
                error_start = None
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception as exc:
            if started:
                raise
            request_id = uuid.uuid4().hex[:12]
            logger.warning("request %s: unreadable request", request_id, exc_info=True)
            message = f"could not read the request as a table (request {request_id}): {_one_line(exc)}"
            await _reply(send, 400, "BAD_REQUEST", message)

    def _too_large(self, size: str) -> str:
        return (
            f"request body of {size} exceeds the limit of {self.max_bytes:,} bytes; "
            "send fewer or smaller photos per request"
        )


def without_stack_trace(body: bytes) -> bytes:
    """An error reply's JSON without its ``stack_trace``: logged under a request id the message names."""
    try:
        error = json.loads(body)
    except ValueError:
        return body
    if not isinstance(error, dict) or "stack_trace" not in error:
        return body
    request_id = uuid.uuid4().hex[:12]
    logger.error("request %s: %s\n%s", request_id, error.get("message", ""), error.pop("stack_trace"))
    error["message"] = f"{error.get('message', '')} (request {request_id}; the server log has the details)"
    return json.dumps(error).encode()


def _one_line(exc: Exception, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text[:limit]


async def _reply(send: Callable, status: int, error_code: str, message: str) -> None:
    body = json.dumps({"error_code": error_code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def limit_scoring_server_requests(max_body_bytes: int) -> None:
    """Put ``RequestGuard`` in front of the app MLflow's scoring server builds next.

    `mlflow models serve` loads the model (this class's ``load_context``) and right after builds
    its FastAPI app (``scoring_server.init``), with no setting for a body limit. So the next
    ``FastAPI()`` made in this process gets the guard; later ones are left alone.
    """
    import fastapi  # noqa: PLC0415 - installed with mlflow's serving extras

    original = fastapi.FastAPI

    class GuardedFastAPI(original):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            fastapi.FastAPI = original
            super().__init__(*args, **kwargs)
            self.add_middleware(RequestGuard, max_bytes=max_body_bytes)

    fastapi.FastAPI = GuardedFastAPI
