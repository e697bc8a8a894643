"""Reading the session cookie, the client key and ``next``: every edge case is defined."""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from donjon.adapters import Proxy, _cookies, find_cookie
from donjon.adapters._common import (
    ClientResolver,
    parse_address,
    refresh_location,
    response_headers,
    safe_next,
)
from donjon.adapters._cookies import MAX_COOKIE_HEADER, CookieLookup
from donjon.config import CookiePolicy, TwoCredentials
from donjon.errors import ConfigurationError

NAME = "donjon"


class TestFindCookie:
    def test_absent_without_header(self) -> None:
        found = find_cookie([], NAME)
        assert found == CookieLookup(None)
        assert not found.presented

    def test_absent_when_other_cookies_only(self) -> None:
        assert find_cookie([b"a=1; b=2"], NAME).value is None

    def test_name_must_match_exactly(self) -> None:
        # A longer name containing ours, or a prefix of it, is another cookie.
        found = find_cookie([b"xdonjon=1; donjonx=2; __Host-donjon=3"], NAME)
        assert found.value is None
        assert not found.presented

    @pytest.mark.parametrize("raw", [b"donjon=tok", "donjon=tok"])
    def test_bytes_and_text(self, raw: bytes | str) -> None:
        found = find_cookie([raw], NAME)
        assert found == CookieLookup("tok")
        assert found.presented

    def test_among_others_with_whitespace(self) -> None:
        assert find_cookie([b"a=1;   donjon =  tok  ; b=2"], NAME).value == "tok"

    def test_several_headers_are_joined(self) -> None:
        # HTTP/2 may split cookies over several header lines.
        assert find_cookie([b"a=1", b"donjon=tok"], NAME).value == "tok"

    def test_first_wins_and_duplicate_is_flagged(self) -> None:
        found = find_cookie([b"donjon=first; donjon=second"], NAME)
        assert found == CookieLookup("first", "duplicate")
        assert found.presented

    def test_first_wins_across_headers(self) -> None:
        assert find_cookie([b"donjon=first", b"donjon=second"], NAME).value == "first"

    @pytest.mark.parametrize(
        "raw",
        [b"donjon", b"donjon;", b";;donjon", b"=tok", b"; ; ;", b""],
    )
    def test_pairs_without_equals_or_name_are_skipped(self, raw: bytes) -> None:
        found = find_cookie([raw], NAME)
        assert found.value is None
        assert not found.presented

    def test_stray_semicolons_do_not_hide_the_cookie(self) -> None:
        assert find_cookie([b";; donjon=tok;;; a=1;"], NAME).value == "tok"

    def test_quotes_are_kept(self) -> None:
        # No unquoting: a token never needs quotes, so a quoted value is malformed later.
        assert find_cookie([b'donjon="tok"'], NAME).value == '"tok"'

    def test_value_with_equals_is_kept_whole(self) -> None:
        assert find_cookie([b"donjon=a=b=c"], NAME).value == "a=b=c"

    @pytest.mark.parametrize("raw", [b'donjon=""', b'a=1; donjon=""; b=2', b'donjon = "" '])
    def test_quoted_empty_value_is_empty_not_malformed(self, raw: bytes) -> None:
        # Django writes a deleted cookie as donjon="", and its test client
        # sends it back: no token, no attack (never counted by the guard).
        found = find_cookie([raw], NAME)
        assert found == CookieLookup(None, "empty")
        assert found.presented, "it is still cleared"

    def test_empty_value_is_presented_but_absent(self) -> None:
        found = find_cookie([b"donjon="], NAME)
        assert found.value is None, "an empty value is no token (and no attack)"
        assert found.problem == "empty"
        assert found.presented, "it is still cleared"

    def test_high_bytes_decode_as_latin1(self) -> None:
        assert find_cookie([b"donjon=\xe9\xff"], NAME).value == "\xe9\xff"

    def test_limit_is_inclusive(self) -> None:
        raw = b"donjon=" + b"x" * (MAX_COOKIE_HEADER - len(b"donjon="))
        assert len(raw) == MAX_COOKIE_HEADER
        assert find_cookie([raw], NAME).value == "x" * (MAX_COOKIE_HEADER - 7)

    def test_huge_header_still_finds_the_session_cookie(self) -> None:
        """Other cookies (analytics...) make the header huge, not the session cookie."""
        pad = b"; ".join(b"a%d=" % i + b"x" * 1000 for i in range(17))
        assert len(pad) > MAX_COOKIE_HEADER
        for raw in (b"donjon=tok; " + pad, pad + b"; donjon=tok", pad + b";donjon=tok"):
            assert find_cookie([raw], NAME) == CookieLookup("tok")
        assert find_cookie([pad], NAME) == CookieLookup(None), "absent: nothing to clear"
        assert not find_cookie([pad + b"; xdonjon=tok"], NAME).presented, "a boundary only"
        assert find_cookie([pad + b"; donjon=a; donjon=b"], NAME) == CookieLookup("a", "duplicate")
        assert find_cookie([pad + b"; donjon="], NAME) == CookieLookup(None, "empty")

    def test_huge_total_over_several_headers(self) -> None:
        half = b"p=" + b"x" * (MAX_COOKIE_HEADER // 2)
        assert find_cookie([half, half, b"donjon=tok"], NAME) == CookieLookup("tok")

    def test_a_huge_session_cookie_is_found_and_left_to_the_engine(self) -> None:
        raw = b"donjon=" + b"A" * 20_000
        assert find_cookie([raw], NAME).value == "A" * 20_000  # MALFORMED (too_long) there


class TestClientResolver:
    def test_no_proxy_means_the_peer(self) -> None:
        resolver = ClientResolver(None)
        assert not resolver.trusts_proxies
        assert resolver.client("198.51.100.7", ["203.0.113.1"]) == "198.51.100.7"

    def test_forwarded_for_ignored_from_untrusted_peer(self) -> None:
        resolver = ClientResolver(Proxy(trusted=["10.0.0.0/8"]))
        assert resolver.client("198.51.100.7", ["203.0.113.1"]) == "198.51.100.7"

    def test_trusted_peer_gives_rightmost_untrusted_hop(self) -> None:
        resolver = ClientResolver(Proxy(trusted=["10.0.0.0/8"]))
        # The client can put anything left of the real address: it is not believed.
        hops = ["1.1.1.1, 203.0.113.9", "10.0.0.2"]
        assert resolver.client("10.0.0.1", hops) == "203.0.113.9"

    def test_all_hops_trusted_gives_the_leftmost(self) -> None:
        resolver = ClientResolver(Proxy(trusted=["10.0.0.0/8"]))
        assert resolver.client("10.0.0.1", ["10.0.0.5, 10.0.0.2"]) == "10.0.0.5"

    def test_trusted_peer_without_header(self) -> None:
        resolver = ClientResolver(Proxy(trusted=["10.0.0.1"]))
        assert resolver.client("10.0.0.1", []) == "10.0.0.1"

    def test_garbage_hop_falls_back_to_the_peer(self) -> None:
        resolver = ClientResolver(Proxy(trusted=["10.0.0.0/8"]))
        assert resolver.client("10.0.0.1", ["not-an-ip"]) == "10.0.0.1"

    def test_ipv6_is_normalised(self) -> None:
        resolver = ClientResolver(Proxy(trusted=["::1"]))
        assert resolver.client("::1", ["2001:DB8:0:0::1"]) == "2001:db8::1"

    def test_unknown_peer(self) -> None:
        resolver = ClientResolver(Proxy(trusted=["10.0.0.0/8"]))
        assert resolver.client(None, ["203.0.113.1"]) is None

    def test_ipv4_mapped_peer_is_a_trusted_proxy(self) -> None:
        # A dual-stack socket reports an IPv4 proxy as ::ffff:10.0.0.1.
        resolver = ClientResolver(Proxy(trusted=["10.0.0.0/8"]))
        assert resolver.client("::ffff:10.0.0.1", ["203.0.113.9"]) == "203.0.113.9"
        assert resolver.is_secure("http", "::ffff:10.0.0.1", "https")

    def test_ipv4_mapped_hops_are_unwrapped(self) -> None:
        resolver = ClientResolver(Proxy(trusted=["10.0.0.0/8"]))
        assert resolver.client("10.0.0.1", ["203.0.113.9, ::ffff:10.0.0.5"]) == "203.0.113.9"
        assert resolver.client("10.0.0.1", ["::ffff:203.0.113.9"]) == "203.0.113.9"

    @pytest.mark.parametrize(
        ("hop", "client"),
        [
            ("203.0.113.9:5555", "203.0.113.9"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            (" 203.0.113.9:1 ", "203.0.113.9"),
            ("203.0.113.9:", "10.0.0.1"),  # no port: not an address
            ("203.0.113.9:x", "10.0.0.1"),
            ("[2001:db8::1]x", "10.0.0.1"),
            ("[2001:db8::1", "10.0.0.1"),
        ],
    )
    def test_hops_with_ports(self, hop: str, client: str) -> None:
        resolver = ClientResolver(Proxy(trusted=["10.0.0.0/8"]))
        assert resolver.client("10.0.0.1", [hop]) == client

    def test_trusted_proxy_hop_with_port_is_skipped(self) -> None:
        resolver = ClientResolver(Proxy(trusted=["10.0.0.0/8"]))
        assert resolver.client("10.0.0.1", ["203.0.113.9, 10.0.0.7:8080"]) == "203.0.113.9"

    def test_missing_peer_trusted_as_unix_socket_reads_forwarded_for(self) -> None:
        resolver = ClientResolver(Proxy(trust_unix_socket=True))
        assert resolver.trusts_proxies
        assert resolver.client(None, ["198.51.100.1, 203.0.113.9"]) == "203.0.113.9"
        assert resolver.client(None, []) is None
        assert resolver.is_secure("http", None, "https")
        # A real peer is still not trusted unless listed.
        assert resolver.client("198.51.100.7", ["203.0.113.9"]) == "198.51.100.7"

    def test_missing_peer_without_trust_warns_once(self, caplog: pytest.LogCaptureFixture) -> None:
        resolver = ClientResolver(Proxy(trusted=["10.0.0.0/8"]))
        with caplog.at_level(logging.WARNING, logger="donjon.adapters"):
            for _ in range(3):
                assert resolver.client(None, ["203.0.113.9"]) is None
            resolver.unknown_peer()
        [record] = caplog.records
        assert record.levelno == logging.WARNING
        assert "trust_unix_socket=True" in record.getMessage()
        other = ClientResolver(None)
        with caplog.at_level(logging.WARNING, logger="donjon.adapters"):
            other.unknown_peer()
        assert len(caplog.records) == 2, "once per resolver (per middleware), not per process"

    def test_missing_peer_is_not_worth_a_warning_without_a_guard(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="donjon.adapters"):
            ClientResolver(None, guarded=False).unknown_peer()
        assert caplog.records == []


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("1.2.3.4:80", "1.2.3.4"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("[::ffff:1.2.3.4]:80", "1.2.3.4"),
        ("2001:DB8::1", "2001:db8::1"),
        ("unknown", None),
        ("", None),
        ("1.2.3.4\x00", None),
        ("x" * 10_000, None),
    ],
)
def test_parse_address(text: str, address: str | None) -> None:
    parsed = parse_address(text)
    assert (str(parsed) if parsed is not None else None) == address


class TestSafeNext:
    @pytest.mark.parametrize(
        ("query", "target"),
        [
            (b"next=/ok", "/ok"),
            (b"a=1&next=/ok%3Fx%3D1&b=2", "/ok?x=1"),
            (b"next=/caf%C3%A9", "/caf%C3%A9"),
            (b"next=/caf%25C3%25A9", "/caf%C3%A9"),  # double-encoded by refresh_location
            (b"next=/%C4%80", "/%C4%80"),
            (b"next=/%FF", "/%FF"),  # invalid UTF-8: kept as the byte it is
            (b"next=/\xc4\x80", "/%C4%80"),  # raw bytes in the query
            ("next=/\xc4\x80".encode("latin-1"), "/%C4%80"),
            ("next=/\u0100", "/%C4%80"),  # a str that is not Latin-1 does not crash
            (b"next=/a%2Bb", "/a+b"),
            (b"next=/a%22%3Cb%3E", "/a%22%3Cb%3E"),
            (b"next=/%E2%80%A8x", "/%E2%80%A8x"),
            (b"next=/ok&" + b"&".join(b"f%d=1" % i for i in range(500)), "/ok"),
            (b"&".join(b"f%d=1" % i for i in range(500)) + b"&next=/ok", "/ok"),
            (b"next=/x&next=/y", "/x"),
        ],
    )
    def test_local_targets_come_out_as_ascii(self, query: bytes | str, target: str) -> None:
        got = safe_next(query)
        assert got == target
        assert got.isascii()

    @pytest.mark.parametrize(
        "query",
        [
            b"",
            b"next=",
            b"nxt=/ok",
            b"next=https://evil.example/",
            b"next=//evil.example",
            b"next=/%2F/evil.example",
            b"next=%2F%2Fevil.example",
            b"next=/\\evil.example",
            b"next=/%5Cevil.example",
            b"next=/%09/evil.example",
            b"next=/a%0d%0aSet-Cookie:%20x=1",
            b"next=/a%00",
            b"next=/a%7F",
            b"next=/a b",
            b"next=/a+b",  # a form-encoded space
            b"next=evil",
            b"next=/" + b"a" * 3000,
            b"next=/ok&pad=" + b"x" * 20_000,
        ],
    )
    def test_anything_else_is_no_target(self, query: bytes) -> None:
        assert safe_next(query) is None

    def test_stray_percent_is_kept(self) -> None:
        assert safe_next(b"next=/100%") == "/100%"


@pytest.mark.parametrize(
    ("path", "query", "location"),
    [
        (b"/count", b"x=1", "/r?next=%2Fcount%3Fx%3D1"),
        (b"/count", b"", "/r?next=%2Fcount"),
        ("/café".encode(), b"", "/r?next=%2Fcaf%25C3%25A9"),
        ("/中文".encode(), b"", "/r?next=%2F%25E4%25B8%25AD%25E6%2596%2587"),
        (b"/a?b#c%d", b"", "/r?next=%2Fa%253Fb%2523c%2525d"),
        (b"/a", "q=\u00e9".encode("latin-1"), "/r?next=%2Fa%3Fq%3D%25E9"),
    ],
)
def test_refresh_location_is_ascii_and_round_trips(
    path: bytes, query: bytes, location: str
) -> None:
    where = refresh_location("/r", path, query)
    assert where == location
    # What the refresh path makes of it is the same request, encoded.
    target = safe_next(where.partition("?")[2])
    assert target is not None and target.isascii()
    assert urllib.parse.unquote_to_bytes(target.partition("?")[0]) == path


class TestCookiePolicyValues:
    @pytest.mark.parametrize(
        "path",
        ["/\u4e2d", "/caf\u00e9", "/a\tb", "/a b", "/x\x7f", "/a;b", "/a,b", "/a=b", "/a\r\n", "x"],
    )
    def test_bad_path_is_refused(self, path: str) -> None:
        with pytest.raises(ConfigurationError, match="cookie path"):
            CookiePolicy(path=path)

    @pytest.mark.parametrize(
        "domain",
        ["", "\u4e2d.example", "a=b", "ex\tample.com", "a b", "a;b", "a,b", "x\x00"],
    )
    def test_bad_domain_is_refused(self, domain: str) -> None:
        with pytest.raises(ConfigurationError, match="cookie domain"):
            CookiePolicy(domain=domain)

    @pytest.mark.parametrize(
        "name", ["", "a b", "a;b", "a=b", "a,b", "\u00e9", "a\x00", "__Host-x", "a\"b", "x" * 65]
    )
    def test_bad_name_is_refused(self, name: str) -> None:
        with pytest.raises(ConfigurationError, match="cookie name"):
            CookiePolicy(name=name)

    def test_good_values_are_kept(self) -> None:
        policy = CookiePolicy(path="/app/v1.2~x", domain=".example.com", secure=False)
        assert policy.header("t", max_age=1).startswith(
            "donjon=t; Path=/app/v1.2~x; Domain=.example.com;"
        )

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"refresh_path": "/r\u00e9"}, "refresh_path"),
            ({"refresh_path": "/r?x=1"}, "refresh_path"),
            ({"refresh_path": "/r;x"}, "refresh_path"),
            ({"refresh_path": "/r%20"}, "refresh_path"),
            ({"refresh_name": "a b"}, "refresh cookie name"),
            ({"refresh_name": "__Host-r"}, "refresh cookie name"),
        ],
    )
    def test_two_credentials_values(self, kwargs: dict[str, str], match: str) -> None:
        with pytest.raises(ConfigurationError, match=match):
            TwoCredentials(**kwargs)  # type: ignore[arg-type]

    def test_bad_proxy_address_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="not an address"):
            ClientResolver(Proxy(trusted=["proxy.example"]))

    @pytest.mark.parametrize(
        ("scheme", "peer", "proto", "secure"),
        [
            ("https", "198.51.100.7", None, True),
            ("http", "198.51.100.7", "https", False),  # untrusted peer: header ignored
            ("http", "10.0.0.1", "https", True),
            ("http", "10.0.0.1", "HTTPS, http", True),
            ("http", "10.0.0.1", "http", False),
            ("http", None, "https", False),
        ],
    )
    def test_is_secure(
        self, scheme: str, peer: str | None, proto: str | None, secure: bool
    ) -> None:
        resolver = ClientResolver(Proxy(trusted=["10.0.0.0/8"]))
        assert resolver.is_secure(scheme, peer, proto) is secure


def test_response_headers() -> None:
    assert response_headers(None) == []
    assert response_headers("donjon=x") == [
        ("set-cookie", "donjon=x"),
        ("cache-control", "no-store"),
    ]


_COOKIE_TEXT = st.text(alphabet=st.sampled_from(list("donjab =;\t\"x1")), max_size=24)


@given(_COOKIE_TEXT)
def test_the_one_cookie_shortcut_agrees_with_the_general_parse(raw: str) -> None:
    """A header without ';' takes a shortcut: it must answer as the split-and-scan does."""
    general = _cookies._pick(raw + ";", "donjon")  # the ';' forces the general path
    assert find_cookie([raw], "donjon") == general
    assert find_cookie([raw.encode("latin-1")], "donjon") == general


@given(_COOKIE_TEXT)
def test_the_over_size_scan_agrees_with_the_general_parse(raw: str) -> None:
    """Padding that makes a header over-size changes nothing about the session cookie,
    for every header whose cookie is spelt exactly ``name=`` (the scan's needle)."""
    from donjon.adapters._cookies import _pick, _scan

    if any(p.partition("=")[0].strip() == "donjon" and "donjon=" not in p for p in raw.split(";")):
        return  # "donjon =x": only the general parse trims inside the name
    assert _scan(raw, NAME) == _pick(raw, NAME)


def _fail(outage: Any, logger: logging.Logger) -> None:
    try:
        raise RuntimeError("store down")  # noqa: TRY301 - the except is what is tested
    except RuntimeError:
        outage(logger, "session store unavailable while loading")


def test_an_outage_is_logged_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    from donjon.adapters._common import OutageLog

    outage = OutageLog(every=3600)
    logger = logging.getLogger("donjon.test-outage")
    with caplog.at_level(logging.ERROR, logger="donjon.test-outage"):
        for _ in range(1000):
            _fail(outage, logger)
    records = [r for r in caplog.records if r.name == "donjon.test-outage"]
    assert len(records) == 1, "one record, not a thousand tracebacks"
    assert records[0].exc_info is not None
    other = logging.getLogger("donjon.test-outage-2")
    with caplog.at_level(logging.ERROR, logger="donjon.test-outage-2"):
        _fail(outage, other)  # another outage (another logger): its own first record
    assert [r.name for r in caplog.records].count("donjon.test-outage-2") == 1
    for state in outage._state.values():
        state[0] -= 7200  # the period is over: the next record counts the rest
    with caplog.at_level(logging.ERROR, logger="donjon.test-outage"):
        _fail(outage, logger)
    assert "(999 more like it" in caplog.records[-1].getMessage()
