"""The real `mlflow models serve` of the bundled face model under concurrent, mixed and hostile requests.

A short run of bench/load.py (the long one measures throughput and memory): tiny networks, a couple
of dozen requests per round.
"""

import json
import sys
from pathlib import Path

import mlflow
import pytest
import requests
from fake_faces import encode, face_like
from fuzz_inputs import mutated_photos
from PIL import Image
from skimage import data

from face_pipeline.inference.packaging import log_face_model
from face_pipeline.inference.photos import inference_settings
from face_pipeline.inference.serving import SERVING_LIMITS, without_stack_trace
from face_pipeline.modelling.builders import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from load import LEAK_MARKERS, b64, request_mix, run_round, serve, table_body

pytestmark = pytest.mark.integration

SIZE = 32
SETTINGS = inference_settings({"image": {"size": SIZE, "color_mode": "grayscale"}}, {"detection": {"mode": "auto"}})
PHOTOS = [encode(Image.fromarray(data.astronaut()), quality=90)] + [encode(face_like(i, 96)) for i in range(3)]


def tiny_network(task: str, size: int = SIZE):
    return build_model("default_cnn", (size, size, 1), task, stem_filters=4, filters=[4], batch_norm=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("served_load_tests")
    return uri


@pytest.fixture(scope="module")
def server(store):
    with mlflow.start_run():
        uri = log_face_model(SETTINGS, gender_model=tiny_network("gender"), age_model=tiny_network("age"))
    with serve(uri, workers=1, env={"MLFLOW_TRACKING_URI": store}) as running:
        yield running


def assert_no_leak(text: str) -> None:
    assert not [marker for marker in LEAK_MARKERS if marker in text], text[:2000]


@pytest.mark.parametrize("clients", [1, 4])
def test_concurrent_mixed_requests_well_formed_succeed_bad_ones_are_4xx_with_a_message(server, clients):
    result = run_round(server, request_mix(PHOTOS, seed=clients), clients, requests_total=24, seed=clients)
    summary = result.summary()
    assert summary["well_formed_failed"] == {}, summary
    assert summary["bad_not_refused_with_4xx"] == {}, summary
    assert summary["bad_without_message"] == 0
    assert summary["replies_leaking_internals"] == 0
    assert summary["faces_per_s"] > 0
    assert server.alive()


def test_each_bad_payload_is_explained_without_internals(server):
    mix = {request.kind: request for request in request_mix(PHOTOS, seed=0) if not request.well_formed}
    expected = {
        "bad: not base64": "row 0: 'image' is not valid base64",
        "bad: not an image": "row 0: not an image",
        "bad: no image column": "column 'image'",
        "bad: broken JSON": "valid JSON",
        "bad: too many rows": f"{SERVING_LIMITS.max_rows + 1} rows in one request; at most {SERVING_LIMITS.max_rows}",
        "bad: decompression bomb": "row 0: too many pixels",
        "bad: wrong table shape": "not a valid dataframe representation",
    }
    assert set(expected) == set(mix)
    for kind, words in expected.items():
        reply = requests.post(
            f"{server.url}/invocations", data=mix[kind].body, headers={"Content-Type": "application/json"}
        )
        assert 400 <= reply.status_code < 500, (kind, reply.status_code, reply.text[:500])
        assert words in reply.json()["message"], (kind, reply.text[:500])
        assert_no_leak(reply.text)


def test_an_oversized_body_is_refused_before_it_is_read_and_others_are_still_served(server):
    limit = SERVING_LIMITS.max_body_bytes
    declared = requests.post(
        f"{server.url}/invocations",
        data=b"A" * (limit + 1),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert declared.status_code == 413
    assert "exceeds the limit" in declared.json()["message"]

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"dataframe_split": {"columns": ["image"], "data": [["'
        for _ in range(limit // 2**20 + 2):
            yield b"A" * 2**20

    streamed = requests.post(
        f"{server.url}/invocations", data=chunks(), headers={"Content-Type": "application/json"}, timeout=60
    )
    assert streamed.status_code == 400
    assert "exceeds the limit" in streamed.json()["message"]
    good = requests.post(
        f"{server.url}/invocations", data=table_body([b64(PHOTOS[0])]), headers={"Content-Type": "application/json"}
    )
    assert good.status_code == 200, good.text


def test_a_failure_inside_the_model_is_a_500_with_a_request_id_and_the_traceback_only_in_the_log(store, tmp_path):
    # Networks for 48-pixel inputs served with settings for 32: every prediction fails inside the model.
    with mlflow.start_run():
        uri = log_face_model(SETTINGS, gender_model=tiny_network("gender", 48), age_model=tiny_network("age", 48))
    # The limits can be changed when serving (docs/security.md): here at most 2 rows per request.
    env = {"MLFLOW_TRACKING_URI": store, "MLFLOW_PYFUNC_INFERENCE_CONFIG": json.dumps({"max_rows": 2})}
    with serve(uri, workers=1, env=env, log=tmp_path / "server.log") as broken:
        reply = post(broken, table_body([b64(PHOTOS[0])]))
        assert reply.status_code == 500, reply.text[:1000]
        message = reply.json()["message"]
        assert "internal error in the face model (request " in message
        assert_no_leak(reply.text)
        request_id = message.split("(request ")[1].split(")")[0]
        assert broken.alive()
        three = post(broken, table_body([b64(PHOTOS[0])] * 3))
        assert three.status_code == 400
        assert "3 rows in one request; at most 2" in three.json()["message"]
    log = (tmp_path / "server.log").read_text()
    assert f"request {request_id}: prediction on 1 row(s) failed" in log
    assert "Traceback (most recent call last)" in log


def post(server, body: bytes) -> requests.Response:
    return requests.post(
        f"{server.url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=60
    )


def test_a_stack_trace_mlflow_puts_into_a_reply_goes_to_the_log_instead(caplog):
    reply = json.dumps({"error_code": "BAD_REQUEST", "message": "unexpected", "stack_trace": 'File "/srv/x.py"'})
    with caplog.at_level("ERROR", logger="face_pipeline.inference.serving"):
        cleaned = json.loads(without_stack_trace(reply.encode()))
    assert "stack_trace" not in cleaned
    request_id = cleaned["message"].split("(request ")[1].split(";")[0]
    assert cleaned["message"].startswith("unexpected (request ")
    assert request_id in caplog.text and 'File "/srv/x.py"' in caplog.text
    assert without_stack_trace(b"not json") == b"not json"


def test_fuzzed_photos_get_a_row_or_a_4xx_never_a_5xx(server):
    for kind, _, photo in mutated_photos(40, seed=7):
        reply = post(server, table_body([b64(photo)]))
        assert reply.status_code == 200 or 400 <= reply.status_code < 500, (kind, reply.status_code, reply.text[:500])
        assert_no_leak(reply.text)
        if reply.status_code == 200:
            rows = reply.json()["predictions"]
            assert rows and all(row["status"] in ("ok", "no face") or row["reason"] for row in rows), (kind, rows)
        else:
            assert reply.json()["message"].startswith("Failed to predict data"), (kind, reply.text[:500])
    assert server.alive()
