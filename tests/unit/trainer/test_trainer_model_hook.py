"""The model hook: Label Studio ML backend answers read and scored, the HTTP client's retries,
timeouts and credentials (httpx's MockTransport: no sockets), and the project file's section."""

from __future__ import annotations

import base64
import json
import logging
import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from labelloop.project import ProjectConfigError, parse_project
from labelloop_trainer.domain.boxes import (
    BoxPrediction,
    ContractError,
    box_uncertainty,
    label_config,
    parse_predict_response,
)
from labelloop_trainer.model_hook import HookError, ModelHook

LABELS = ["cat", "dog"]
SECRET = "s3cret-token-value"


def _region(label: str = "cat", score: Any = 0.9, **value: Any) -> dict[str, Any]:
    box = {"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0, **value}
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {**box, "rectanglelabels": [label]},
        "score": score,
    }


def _project(**hook: Any) -> dict[str, Any]:
    return {
        "name": "boxes",
        "task_type": "bounding_boxes",
        "labels": {"classes": LABELS},
        "data_fields": [{"name": "image", "kind": "image"}],
        "model_hook": {"url": "http://model.internal:9090", **hook},
    }


# ----------------------------------------------------------------------------- the answers


def test_a_good_answer_gives_boxes_scores_and_versions() -> None:
    body = {
        "results": [
            {
                "result": [_region("cat"), _region("dog", score=0.6)],
                "score": 0.75,
                "model_version": "yolo-7",
            },
            [{"result": [], "score": 0.98, "model_version": "yolo-7"}, {"result": [_region()]}],
        ]
    }
    first, second = parse_predict_response(body, 2, LABELS)
    assert first.model_version == "yolo-7"
    assert first.score == 0.75
    assert first.dropped == 0
    assert first.boxes[0] == {
        "x": 10.0,
        "y": 20.0,
        "width": 30.0,
        "height": 40.0,
        "rotation": 0.0,
        "label": "cat",
        "score": 0.9,
    }
    assert first.boxes[1]["label"] == "dog"
    assert first.boxes[1]["score"] == 0.6
    # several predictions for a task (ModelResponse allows it): the first one
    assert second.boxes == []
    assert second.score == 0.98


def test_the_model_version_beside_results_counts_for_every_prediction() -> None:
    body = {"results": [{"result": []}], "model_version": "v3"}
    (only,) = parse_predict_response(body, 1, LABELS)
    assert only.model_version == "v3"
    assert only.score is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "not an object"),
        ({"predictions": []}, "no 'results' list"),
        ({"results": {"result": []}}, "no 'results' list"),
        ({"results": [{"result": []}]}, "1 results for 2 tasks"),
        ({"results": ["cat", {"result": []}]}, "result 0 is a str"),
        ({"results": [{"score": 0.5}, {"result": []}]}, "result 0 has no 'result'"),
        ({"results": [{"result": []}, {"result": "cat"}]}, "result 1: 'result' is a str"),
    ],
)
def test_an_answer_that_breaks_the_contract_is_refused(body: Any, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        parse_predict_response(body, 2, LABELS)


def test_regions_that_are_not_boxes_of_the_project_are_left_out_and_counted() -> None:
    regions = [
        _region("bird"),  # a label the project lacks
        _region("cat", x="10"),  # a coordinate that is not a number
        _region("cat", width=True),  # nor is a boolean
        _region("cat", x=float("nan")),
        {"type": "choices", "value": {"choices": ["cat"]}},
        "cat",
        _region("dog", x=120, y=5),  # wholly outside the image
        _region("dog", x=-10, y=90, width=30, height=40),  # clipped to the image
        _region("cat", score=7),  # a score out of [0, 1]: no score
    ]
    (prediction,) = parse_predict_response({"results": [{"result": regions}]}, 1, LABELS)
    assert prediction.dropped == 7
    clipped, unscored = prediction.boxes
    assert clipped == {
        "x": 0.0,
        "y": 90.0,
        "width": 20.0,
        "height": 10.0,
        "rotation": 0.0,
        "label": "dog",
        "score": 0.9,
    }
    assert "score" not in unscored


def test_box_uncertainty_maps_the_scores_to_the_sequence_measures() -> None:
    two = BoxPrediction(
        boxes=[{"label": "cat", "score": 0.9}, {"label": "dog", "score": 0.6}],
        score=None,
        model_version=None,
        dropped=0,
    )
    least, margin, entropy = box_uncertainty(two)
    assert least == pytest.approx(1 - 0.9 * 0.6)
    assert margin == pytest.approx(1 - 0.2)  # the doubtful box: |2 * 0.6 - 1|
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    assert entropy == pytest.approx(h(0.9) + h(0.6))
    # nothing found, sure of it; nothing found, no score: as doubtful as can be
    sure = BoxPrediction(boxes=[], score=0.99, model_version=None, dropped=0)
    assert box_uncertainty(sure)[0] == pytest.approx(0.01)
    blind = BoxPrediction(boxes=[], score=None, model_version=None, dropped=0)
    assert box_uncertainty(blind) == pytest.approx((0.5, 1.0, math.log(2)))
    # more doubt ranks higher on every measure
    assert all(a > b for a, b in zip(box_uncertainty(two), box_uncertainty(sure), strict=True))


def test_the_label_config_sent_along_is_escaped() -> None:
    xml = label_config("image", ['a "quoted" <label>', "dog"])
    assert '<Image name="image" value="$image"/>' in xml
    assert "&lt;label&gt;" in xml
    assert '<RectangleLabels name="label" toName="image">' in xml


# ----------------------------------------------------------------------------- the client


class _Model:
    """A Label Studio ML backend on httpx's MockTransport: answers by a script."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        tasks = json.loads(request.content)["tasks"]
        return httpx.Response(200, json=answer(tasks))


def _boxes(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "results": [{"result": [_region()], "score": 0.9, "model_version": "m1"} for _ in tasks]
    }


async def _no_sleep(_: float) -> None:
    return None


def _hook(model: _Model, env: dict[str, str] | None = None, **hook: Any) -> ModelHook:
    config = parse_project(_project(**hook)).model_hook
    assert config is not None
    return ModelHook(config, transport=httpx.MockTransport(model), env=env or {}, sleep=_no_sleep)


ITEMS = [(f"i{k}", {"image": f"https://img.example/{k}.png"}) for k in range(5)]


async def test_the_pool_goes_in_batches_in_the_ml_backend_format_with_a_bearer_token() -> None:
    model = _Model(_boxes)
    hook = _hook(
        model, {"HOOK_TOKEN": SECRET}, batch_size=2, auth="bearer", credentials_env="HOOK_TOKEN"
    )
    answer = await hook.predict_pool("boxes", ITEMS, field_name="image", labels=LABELS)
    assert [len(json.loads(r.content)["tasks"]) for r in model.requests] == [2, 2, 1]
    first = json.loads(model.requests[0].content)
    assert first["tasks"] == [
        {"id": 0, "data": {"image": "https://img.example/0.png"}},
        {"id": 1, "data": {"image": "https://img.example/1.png"}},
    ]
    assert first["project"] == "boxes"
    assert "<RectangleLabels" in first["label_config"]
    assert str(model.requests[0].url) == "http://model.internal:9090/predict"
    assert model.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert answer.item_ids == [i for i, _ in ITEMS]
    assert len(answer.predictions) == 5
    assert answer.model_versions == ["m1"]
    assert (answer.requests, answer.retries) == (3, 0)


async def test_basic_credentials_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "hook-credentials"
    secret.write_text("ml:pa55word\n")
    model = _Model(_boxes)
    hook = _hook(model, auth="basic", credentials_file=str(secret))
    await hook.predict_pool("boxes", ITEMS[:1], field_name="image", labels=LABELS)
    expected = "Basic " + base64.b64encode(b"ml:pa55word").decode()
    assert model.requests[0].headers["authorization"] == expected


async def test_a_500_is_tried_again_and_then_answers() -> None:
    model = _Model(httpx.Response(500), httpx.Response(503), _boxes)
    answer = await _hook(model, retries=2).predict_pool(
        "boxes", ITEMS[:2], field_name="image", labels=LABELS
    )
    assert len(model.requests) == 3
    assert answer.retries == 2
    assert len(answer.predictions) == 2


async def test_a_model_that_keeps_failing_is_a_hook_error_after_its_retries() -> None:
    model = _Model(httpx.Response(500))
    with pytest.raises(HookError, match="HTTP 500 after 3 attempts"):
        await _hook(model, retries=2).predict_pool(
            "boxes", ITEMS, field_name="image", labels=LABELS
        )
    assert len(model.requests) == 3


async def test_a_timeout_is_a_hook_error_after_its_retries() -> None:
    model = _Model(httpx.ReadTimeout("slow"))
    with pytest.raises(HookError, match="no answer within 2 s after 2 attempts"):
        await _hook(model, retries=1, timeout_seconds=2).predict_pool(
            "boxes", ITEMS, field_name="image", labels=LABELS
        )
    assert len(model.requests) == 2


async def test_a_refusal_and_garbage_fail_at_once() -> None:
    refused = _Model(httpx.Response(401, text="Unauthorized"))
    with pytest.raises(HookError, match="HTTP 401"):
        await _hook(refused).predict_pool("boxes", ITEMS, field_name="image", labels=LABELS)
    assert len(refused.requests) == 1
    garbage = _Model(httpx.Response(200, text="<html>oops</html>"))
    with pytest.raises(HookError, match="not JSON"):
        await _hook(garbage).predict_pool("boxes", ITEMS, field_name="image", labels=LABELS)
    odd = _Model(httpx.TooManyRedirects("loop"))
    with pytest.raises(HookError, match="TooManyRedirects"):
        await _hook(odd).predict_pool("boxes", ITEMS, field_name="image", labels=LABELS)
    assert len(odd.requests) == 1
    short = _Model(lambda tasks: {"results": []})
    with pytest.raises(HookError, match=r"tasks 0-4\): 0 results for 5 tasks"):
        await _hook(short, batch_size=10).predict_pool(
            "boxes", ITEMS, field_name="image", labels=LABELS
        )


async def test_credentials_are_never_in_errors_nor_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    missing = _Model(_boxes)
    with pytest.raises(HookError, match="HOOK_TOKEN is not set"):
        await _hook(missing, {}, auth="bearer", credentials_env="HOOK_TOKEN").predict_pool(
            "boxes", ITEMS, field_name="image", labels=LABELS
        )
    assert missing.requests == []
    failing = _Model(httpx.Response(502))
    hook = _hook(
        failing,
        {"HOOK_TOKEN": SECRET},
        url="http://model.internal:9090/v1?key=query-secret",
        auth="bearer",
        credentials_env="HOOK_TOKEN",
    )
    with pytest.raises(HookError) as raised:
        await hook.predict_pool("boxes", ITEMS, field_name="image", labels=LABELS)
    assert str(failing.requests[0].url) == "http://model.internal:9090/v1/predict"
    for text in (str(raised.value), caplog.text):
        assert SECRET not in text
        assert "query-secret" not in text
    assert "http://model.internal:9090/v1/predict" in str(raised.value)


# ----------------------------------------------------------------------------- the project file


def test_the_project_file_names_where_the_credentials_are() -> None:
    config = parse_project(_project(auth="bearer", credentials_env="HOOK_TOKEN"))
    assert config.model_hook is not None
    assert config.model_hook.batch_size == 32
    assert config.model_hook.retries == 2


@pytest.mark.parametrize(
    ("hook", "problem"),
    [
        ({"auth": "bearer"}, "exactly one of credentials_env or credentials_file"),
        ({"credentials_env": "HOOK_TOKEN"}, "without auth"),
        ({"url": "http://user:pw@model:9090"}, "model_hook.url"),
        ({"url": "ftp://model"}, "model_hook.url"),
        ({"timeout_seconds": 0}, "model_hook.timeout_seconds"),
        ({"batch_size": 0}, "model_hook.batch_size"),
        ({"auth": "token", "credentials_env": "X"}, "model_hook.auth"),
        ({"token": SECRET}, "model_hook.token: unknown field"),
    ],
)
def test_a_wrong_model_hook_is_refused_by_field(hook: dict[str, Any], problem: str) -> None:
    with pytest.raises(ProjectConfigError, match=problem):
        parse_project(_project(**hook))


def test_a_model_hook_is_for_bounding_boxes_only() -> None:
    raw = {**_project(), "task_type": "image_classification"}
    with pytest.raises(ProjectConfigError, match="model_hook is for bounding_boxes"):
        parse_project(raw)
