"""``face-pipeline demo``: a local web page on which to try the models with one's own photos.

One FastAPI app (FastAPI and uvicorn come with MLflow; ``pip install -e '.[demo]'`` names them)
serving a self-contained page (no CDN, no analytics, nothing fetched from outside) and one
endpoint: ``POST /predict`` takes one photo as the request body (its name in ``X-Filename``) and
answers the table of faces and the annotated picture, from the same ``FacePredictor`` (detection,
alignment, calibration and settings) as ``face-pipeline predict`` and the served model. A file
that is not an image, too large or without a face gets a message the page shows; the server goes
on serving.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from face_pipeline.imaging.annotate import annotate, encoded
from face_pipeline.inference.predictor import FacePredictor
from face_pipeline.tasks import face_label

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
FACE_FIELDS = ["face", "gender", "female_probability", "gender_uncertain", "age", "age_low", "age_high"]


def create_app(predictor: FacePredictor, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    """The demo page and its ``/predict`` endpoint around ``predictor``."""
    app = FastAPI(title="face_pipeline demo", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.replace("{{MAX_MB}}", str(max_upload_bytes // (1024 * 1024)))

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        name = unquote(request.headers.get("x-filename") or "photo")
        declared = request.headers.get("content-length")
        too_large = {"file": name, "error": f"larger than {max_upload_bytes // (1024 * 1024)} MB"}
        if declared and declared.isdigit() and int(declared) > max_upload_bytes:
            return JSONResponse(too_large, status_code=413)
        body = bytearray()
        async for part in request.stream():
            body.extend(part)
            if len(body) > max_upload_bytes:
                return JSONResponse(too_large, status_code=413)
        try:
            answer = await run_in_threadpool(_answer, predictor, name, bytes(body))
        except Exception:
            logger.exception("demo: prediction on %s failed", name)
            return JSONResponse({"file": name, "error": "the prediction failed (see the server's log)"}, 500)
        return JSONResponse(answer, status_code=422 if "error" in answer else 200)

    return app


def _answer(predictor: FacePredictor, name: str, data: bytes) -> dict[str, Any]:
    """The faces in one photo and the photo annotated (a data URL), or the reason there are none."""
    table = predictor.predict([(name, data)])
    if (table["status"] == "error").all():
        return {"file": name, "error": str(table["reason"].iloc[0])}
    faces = table[table["status"] == "ok"]
    picture = encoded(annotate(data, table, face_label, predictor.spec.max_pixels), "picture.jpg")
    return {
        "file": name,
        "faces": json.loads(faces[FACE_FIELDS].to_json(orient="records")),
        "note": None if len(faces) else str(table["reason"].iloc[0]),
        "image": "data:image/jpeg;base64," + base64.b64encode(picture).decode(),
    }


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>face_pipeline: try a photo</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 960px; padding: 1.5rem; color: #1d1d1f; }
  h1 { font-size: 1.5rem; margin-bottom: 0.25rem; }
  p.lead { color: #555; margin-top: 0; }
  #drop { display: block; margin-top: 1rem; border: 2px dashed #888; border-radius: 10px; padding: 2rem;
          text-align: center; cursor: pointer; }
  #drop.over { background: #fff8d6; border-color: #d4a000; }
  .result { margin-top: 1.5rem; border-top: 1px solid #ddd; padding-top: 1rem; }
  .result img { max-width: 100%; border-radius: 6px; }
  .error { color: #a40000; font-weight: 600; }
  .note { color: #555; }
  table { border-collapse: collapse; margin-top: 0.5rem; }
  th, td { padding: 0.25rem 0.75rem; border-bottom: 1px solid #ddd; text-align: right; }
  th:first-child, td:first-child { text-align: left; }
</style>
</head>
<body>
<h1>face_pipeline: gender and age from a photo</h1>
<p class="lead">Photos stay on this machine. Each face gets its gender with a calibrated probability
(<code>?</code>: uncertain), its age and the range that holds the true age of 80 % of faces.
Up to {{MAX_MB}} MB per photo.</p>
<label id="drop" for="files">Drop photos here, or click to pick some
  <input id="files" type="file" accept="image/*" multiple hidden>
</label>
<div id="results"></div>
<script>
const results = document.getElementById("results");
const drop = document.getElementById("drop");
const input = document.getElementById("files");

function cell(value, digits) {
  if (value === null || value === undefined) return "";
  return typeof value === "number" ? value.toFixed(digits) : String(value);
}

function show(file, answer) {
  const box = document.createElement("section");
  box.className = "result";
  box.dataset.file = file.name;
  const title = document.createElement("h2");
  title.textContent = file.name;
  box.appendChild(title);
  if (answer.error) {
    const message = document.createElement("p");
    message.className = "error";
    message.textContent = file.name + ": " + answer.error;
    box.appendChild(message);
  } else {
    const image = document.createElement("img");
    image.alt = "annotated " + file.name;
    image.src = answer.image;
    box.appendChild(image);
    if (answer.note) {
      const note = document.createElement("p");
      note.className = "note";
      note.textContent = answer.note;
      box.appendChild(note);
    }
    if (answer.faces.length) {
      const table = document.createElement("table");
      table.innerHTML = "<thead><tr><th>face</th><th>gender</th><th>P(female)</th><th>uncertain</th>" +
        "<th>age</th><th>range</th></tr></thead>";
      const body = document.createElement("tbody");
      for (const face of answer.faces) {
        const row = document.createElement("tr");
        const range = face.age_low === null ? "" : cell(face.age_low, 0) + "-" + cell(face.age_high, 0);
        for (const value of [face.face, face.gender, cell(face.female_probability, 2),
                             face.gender_uncertain ? "yes" : "no", cell(face.age, 1), range]) {
          const td = document.createElement("td");
          td.textContent = value;
          row.appendChild(td);
        }
        body.appendChild(row);
      }
      table.appendChild(body);
      box.appendChild(table);
    }
  }
  results.prepend(box);
}

async function send(files) {
  for (const file of files) {
    let answer;
    try {
      const reply = await fetch("predict", {method: "POST", body: file,
        headers: {"X-Filename": encodeURIComponent(file.name)}});
      answer = await reply.json();
    } catch (error) {
      answer = {error: "no answer from the server (" + error + ")"};
    }
    show(file, answer);
  }
}

input.addEventListener("change", () => { send(Array.from(input.files)); input.value = ""; });
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  send(Array.from(event.dataTransfer.files));
});
</script>
</body>
</html>
"""
