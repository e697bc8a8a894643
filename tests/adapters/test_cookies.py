"""Reading the session cookie and the client key: every edge case is defined."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from donjon.adapters import Proxy, _cookies, find_cookie
from donjon.adapters._common import ClientResolver, response_headers
from donjon.adapters._cookies import MAX_COOKIE_HEADER, OVERSIZE, CookieLookup
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

    def test_huge_header_is_not_parsed(self) -> None:
        raw = b"donjon=tok; pad=" + b"x" * MAX_COOKIE_HEADER
        found = find_cookie([raw], NAME)
        assert found == CookieLookup(OVERSIZE, "header_too_large")
        assert found.presented  # so the engine rejects it (MALFORMED) and it is cleared

    def test_huge_total_over_several_headers(self) -> None:
        half = b"p=" + b"x" * (MAX_COOKIE_HEADER // 2)
        assert find_cookie([half, half, b"donjon=tok"], NAME).problem == "header_too_large"


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
