"""Print the known-answer vectors of the v1 token format as JSON.

Run from the repository root and commit the output::

    .venv/bin/python tests/vectors/make_token_vectors.py > tests/vectors/tokens.json

Secrets and times are fixed, so the output only changes when the token format
does. The expected verdicts are written out by hand below, and the script
refuses to print if the codec disagrees with them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from typing import Any

from donjon.core import KeyRing, Secret, TokenCodec

T0 = 1_800_000_000.0
SKEW = 5.0
LABELS = ("user/k0", "user/k1", "user/k2", "admin/a1", "api/p1", "api/p2", "evil/k2")


def secret(label: str) -> bytes:
    return hashlib.sha256(f"donjon token vectors {label}".encode()).digest()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def verify_ring() -> KeyRing:
    """The ring that verifies every vector."""
    ring = KeyRing()
    ring.add_class("user", keys={"k2": secret("user/k2"), "k1": secret("user/k1")}, retired=["k0"])
    ring.add_class("admin", keys={"a1": secret("admin/a1")}, epoch=T0 - 3600)
    ring.add_class(
        "api",
        keys={"p2": secret("api/p2"), "p1": secret("api/p1")},
        not_after={"p1": T0 - 60},
    )
    return ring


def issue(
    label: str,
    *,
    session_class: str,
    key_id: str,
    session_id: str,
    ttl: float,
    now: float,
    binding: str | None = None,
) -> dict[str, Any]:
    return {
        "secret": label,
        "session_class": session_class,
        "key_id": key_id,
        "session_id": session_id,
        "ttl": ttl,
        "binding": binding,
        "now": now,
    }


def make_token(spec: dict[str, Any]) -> str:
    ring = KeyRing().add_class(
        spec["session_class"], keys={spec["key_id"]: Secret(secret(spec["secret"]))}
    )
    return TokenCodec(ring).issue(
        session_class=spec["session_class"],
        ttl=spec["ttl"],
        session_id=spec["session_id"],
        binding=spec["binding"],
        now=spec["now"],
    )


def expected(
    verdict: str,
    reason: str = "",
    spec: dict[str, Any] | None = None,
    *,
    fields: str = "all",
) -> dict[str, Any]:
    """What verify must return; ``fields`` says how much of the token it had read."""
    out: dict[str, Any] = {
        "verdict": verdict,
        "session_id": None,
        "session_class": None,
        "key_id": None,
        "issued_at": None,
        "expires_at": None,
        "bound": False,
        "reason": reason,
    }
    if spec is not None and fields in {"all", "key", "class"}:
        out["session_class"] = spec["session_class"]
    if spec is not None and fields in {"all", "key"}:
        out["key_id"] = spec["key_id"]
    if spec is not None and fields == "all":
        iat_ms = round(spec["now"] * 1000)
        out["session_id"] = spec["session_id"]
        out["issued_at"] = iat_ms / 1000
        out["expires_at"] = (iat_ms + round(spec["ttl"] * 1000)) / 1000
        out["bound"] = spec["binding"] is not None
    return out


def with_field(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


def build() -> dict[str, Any]:
    vectors: list[dict[str, Any]] = []

    def add(
        name: str,
        spec: dict[str, Any] | None,
        want: dict[str, Any],
        *,
        token: str | None = None,
        now: float = T0,
        binding: str | None = None,
    ) -> str:
        if token is None:
            assert spec is not None, "a vector is either issued or hand-made"
            text = make_token(spec)
        else:
            text = token
        vectors.append(
            {
                "name": name,
                "issue": spec if token is None else None,
                "token": text,
                "verify": {"now": now, "binding": binding},
                "expected": want,
            }
        )
        return text

    user = issue(
        "user/k2", session_class="user", key_id="k2", session_id="vector-1", ttl=3600, now=T0
    )
    valid = add("valid-user-current-key", user, expected("valid", "", user), now=T0 + 60)

    spec = issue(
        "user/k1", session_class="user", key_id="k1", session_id="vector-2", ttl=3600, now=T0 - 60
    )
    add("valid-user-older-key", spec, expected("valid", "", spec))

    spec = issue(
        "user/k2",
        session_class="user",
        key_id="k2",
        session_id="hXo3Q0t6qZ0n8yJm1b2V_c-dEfGhIjKlMnOpQrStUvW",
        ttl=90.5,
        now=T0 + 0.123,
    )
    add("valid-milliseconds", spec, expected("valid", "", spec), now=T0 + 1)

    spec = issue(
        "user/k2",
        session_class="user",
        key_id="k2",
        session_id="vector-2039",
        ttl=1.005,
        now=2_198_912_025.081,
    )
    add("valid-float-edge-2039", spec, expected("valid", "", spec), now=2_198_912_025.081)

    spec = issue(
        "user/k2", session_class="user", key_id="k2", session_id="x" * 128, ttl=400 * 86400, now=T0
    )
    add("valid-longest-id-and-ttl", spec, expected("valid", "", spec))

    spec = issue(
        "admin/a1",
        session_class="admin",
        key_id="a1",
        session_id="vector-admin",
        ttl=86400,
        now=T0 - 3600,
    )
    add("valid-issued-exactly-at-epoch", spec, expected("valid", "", spec))

    spec = issue(
        "api/p2", session_class="api", key_id="p2", session_id="vector-api", ttl=60, now=T0
    )
    add("valid-api-current-key", spec, expected("valid", "", spec))

    bound = issue(
        "user/k2",
        session_class="user",
        key_id="k2",
        session_id="vector-bound",
        ttl=3600,
        now=T0,
        binding="csrf-7f3a",
    )
    add("valid-bound", bound, expected("valid", "", bound), binding="csrf-7f3a")
    add("binding-missing", bound, expected("binding_mismatch", "binding_missing", bound))
    add(
        "binding-differs",
        bound,
        expected("binding_mismatch", "binding_differs", bound),
        binding="csrf-7f3b",
    )
    spec = issue(
        "user/k2",
        session_class="user",
        key_id="k2",
        session_id="vector-bound-utf8",
        ttl=3600,
        now=T0,
        binding="café ☕",
    )
    add("valid-bound-utf8", spec, expected("valid", "", spec), binding="café ☕")

    add("valid-just-before-expiry", user, expected("valid", "", user), now=T0 + 3599.999)
    add("expired-at-expiry", user, expected("expired", "expired", user), now=T0 + 3600)
    add("expired-later", user, expected("expired", "expired", user), now=T0 + 86400)

    spec = issue(
        "user/k2",
        session_class="user",
        key_id="k2",
        session_id="vector-skew",
        ttl=60,
        now=T0 + SKEW,
    )
    add("valid-within-skew", spec, expected("valid", "", spec))
    spec = issue(
        "user/k2",
        session_class="user",
        key_id="k2",
        session_id="vector-future",
        ttl=60,
        now=T0 + SKEW + 0.001,
    )
    add("forged-issued-in-future", spec, expected("forged", "issued_in_future", spec))

    spec = issue(
        "admin/a1",
        session_class="admin",
        key_id="a1",
        session_id="vector-killed",
        ttl=86400,
        now=T0 - 3600.001,
    )
    add("revoked-before-epoch", spec, expected("revoked", "class_epoch", spec))
    spec = issue(
        "admin/a1",
        session_class="admin",
        key_id="a1",
        session_id="vector-killed-2",
        ttl=30,
        now=T0 - 7200,
    )
    add("expired-wins-over-revoked", spec, expected("expired", "expired", spec))

    spec = issue(
        "user/k0", session_class="user", key_id="k0", session_id="vector-retired", ttl=3600, now=T0
    )
    add("retired-key", spec, expected("retired", "retired_key", spec, fields="key"))
    spec = issue(
        "api/p1",
        session_class="api",
        key_id="p1",
        session_id="vector-grace",
        ttl=3600,
        now=T0 - 120,
    )
    add("retired-grace-over", spec, expected("retired", "grace_over", spec))
    add("valid-before-grace-deadline", spec, expected("valid", "", spec), now=T0 - 60)

    spec = issue(
        "evil/k2", session_class="user", key_id="k2", session_id="vector-1", ttl=3600, now=T0
    )
    add("forged-other-secret", spec, expected("forged", "bad_mac", spec, fields="key"))
    spec = issue(
        "user/k2", session_class="guest", key_id="k2", session_id="vector-guest", ttl=3600, now=T0
    )
    add("forged-unknown-class", spec, expected("forged", "unknown_class"))
    spec = issue(
        "user/k2", session_class="user", key_id="k9", session_id="vector-k9", ttl=3600, now=T0
    )
    add("forged-unknown-key", spec, expected("forged", "unknown_key", spec, fields="class"))

    tampered = {
        "forged-changed-session-id": with_field(valid, 3, "vector-2"),
        "forged-changed-expiry": with_field(valid, 5, "1900000000000"),
        "forged-changed-class": with_field(valid, 1, "admin"),
        "forged-uppercase-mac": with_field(valid, 7, valid.split(".")[7].upper()),
        "forged-zero-mac": with_field(valid, 7, "0" * 64),
    }
    for name, text in tampered.items():
        cls, kid = text.split(".")[1:3]
        reason = "bad_mac" if (cls, kid) == ("user", "k2") else "unknown_key"
        want = expected("forged", reason)
        want["session_class"] = cls
        want["key_id"] = kid if reason == "bad_mac" else None
        add(name, None, want, token=text)

    body = valid.rsplit(".", 1)[0]
    mac = valid.rsplit(".", 1)[1]
    malformed = {
        "malformed-empty": ("", "empty"),
        "malformed-too-long": ("v1." + "a" * 398, "too_long"),
        "malformed-non-ascii": (with_field(valid, 3, "vectör-1"), "not_ascii"),
        "malformed-seven-fields": (".".join(valid.split(".")[:7]), "field_count"),
        "malformed-nine-fields": (valid + ".extra", "field_count"),
        "malformed-version": ("v2" + valid[2:], "version"),
        "malformed-mac-short": (valid[:-1], "mac_shape"),
        "malformed-mac-padded": (valid + "=", "mac_shape"),
        "malformed-trailing-newline": (valid + "\n", "mac_shape"),
        "malformed-leading-space": (" " + valid, "version"),
        "malformed-base64-mac": (f"{body}.{b64(bytes.fromhex(mac))}", "mac_shape"),
    }
    for name, (text, reason) in malformed.items():
        add(name, None, expected("malformed", reason), token=text)

    return {
        "comment": "Generated by tests/vectors/make_token_vectors.py; do not edit by hand.",
        "format": "v1",
        "skew": SKEW,
        "secrets": {label: b64(secret(label)) for label in LABELS},
        "keyring": verify_ring().to_dict(),
        "vectors": vectors,
    }


def check(document: dict[str, Any]) -> list[str]:
    """Return the names of vectors whose verdict the codec does not reproduce."""
    codec = TokenCodec(KeyRing.from_dict(document["keyring"]), skew=document["skew"])
    wrong = []
    for vector in document["vectors"]:
        result = codec.verify(vector["token"], **vector["verify"])
        if {**result._asdict(), "verdict": str(result.verdict)} != vector["expected"]:
            wrong.append(vector["name"])
    return wrong


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    document = build()
    wrong = check(document)
    if wrong:
        print(f"codec disagrees with the expected verdicts of: {wrong}", file=sys.stderr)
        return 1
    sys.stdout.write(render(document))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
