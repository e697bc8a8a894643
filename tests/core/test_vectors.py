"""Known-answer vectors of the v1 token format (tests/vectors/tokens.json).

They pin the exact token text: if issue() or verify() drift, these fail. When a
format change is intended, bump the token version and regenerate the file with
``tests/vectors/make_token_vectors.py``.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from donjon.core import TOKEN_VERSION, KeyRing, Secret, TokenCodec, Verdict
from donjon.testing import FrozenClock
from tests.vectors import json_parametrize, load_vectors
from tests.vectors.make_token_vectors import build, check, render

DOCUMENT = load_vectors("tokens.json")


def _secret(label: str) -> Secret:
    text = DOCUMENT["secrets"][label]
    return Secret(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


@pytest.fixture(scope="module")
def codec() -> TokenCodec:
    ring = KeyRing.from_dict(DOCUMENT["keyring"])
    # The clock is far from every vector's time: verify must use the given `now`.
    return TokenCodec(ring, clock=FrozenClock(0.0), skew=DOCUMENT["skew"])


@json_parametrize("tokens.json")
def test_verify_gives_the_expected_verdict_and_fields(
    codec: TokenCodec, vector: dict[str, Any]
) -> None:
    result = codec.verify(vector["token"], **vector["verify"])
    assert result.verdict is Verdict(vector["expected"]["verdict"])
    assert {**result._asdict(), "verdict": result.verdict.value} == vector["expected"]


@json_parametrize("tokens.json")
def test_verify_accepts_the_vector_as_bytes(codec: TokenCodec, vector: dict[str, Any]) -> None:
    result = codec.verify(vector["token"].encode("utf-8"), **vector["verify"])
    assert {**result._asdict(), "verdict": result.verdict.value} == vector["expected"]


@json_parametrize("tokens.json", where=lambda vector: vector["issue"] is not None)
def test_issue_reproduces_the_exact_token(vector: dict[str, Any]) -> None:
    spec = vector["issue"]
    ring = KeyRing().add_class(
        spec["session_class"], keys={spec["key_id"]: _secret(spec["secret"])}
    )
    token = TokenCodec(ring, clock=FrozenClock(0.0)).issue(
        session_class=spec["session_class"],
        ttl=spec["ttl"],
        session_id=spec["session_id"],
        binding=spec["binding"],
        now=spec["now"],
    )
    assert token == vector["token"]


def test_vectors_cover_every_codec_verdict_and_reason() -> None:
    verdicts = {v["expected"]["verdict"] for v in DOCUMENT["vectors"]}
    reasons = {v["expected"]["reason"] for v in DOCUMENT["vectors"]}
    assert verdicts == {
        "valid",
        "malformed",
        "forged",
        "expired",
        "revoked",
        "retired",
        "binding_mismatch",
    }
    assert reasons >= {
        "",
        "empty",
        "too_long",
        "not_ascii",
        "field_count",
        "version",
        "mac_shape",
        "unknown_class",
        "unknown_key",
        "bad_mac",
        "issued_in_future",
        "expired",
        "class_epoch",
        "retired_key",
        "grace_over",
        "binding_missing",
        "binding_differs",
    }
    issued = [v for v in DOCUMENT["vectors"] if v["issue"] is not None]
    assert len(issued) >= 20


def test_vectors_are_the_generator_output() -> None:
    assert DOCUMENT["format"] == TOKEN_VERSION
    assert build() == DOCUMENT
    assert check(DOCUMENT) == []


def test_generator_check_notices_a_wrong_expectation() -> None:
    document = build()
    document["vectors"][0]["expected"] = {**document["vectors"][0]["expected"], "verdict": "forged"}
    assert document["vectors"][0]["name"] in check(document)
    assert render(document).endswith("\n")
