"""RespClient (donjon.stores._resp) against real redis-server processes, and its parsers.

The standalone server comes from tests/servers/fixtures_redis.py; a second
server of this module's own (password, unix socket, TLS) is started with the
same helper. Nothing here mocks Redis; two tests use a raw TCP server that
sends malformed replies, to check that a protocol error closes the connection.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import ipaddress
import random
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.stores import _resp
from donjon.stores._resp import (
    ConnectionLostError,
    PyReader,
    ReplyError,
    RespClient,
    RespConnectionError,
)
from tests.servers.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

PASSWORD = "s3cr:t@p/ss%w0rd"
"""The password of this module's own server: it needs percent-encoding in a URL."""


# -- fixtures ---------------------------------------------------------------


@pytest.fixture(params=["hiredis", "python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with the hiredis reader and encoder, then with the pure-Python ones."""
    if request.param == "python":
        monkeypatch.setattr(_resp, "_make_reader", PyReader)
        monkeypatch.setattr(_resp, "_encode", _resp._encode_py)
    return str(request.param)


@pytest.fixture
async def client(redis_url: str, parser: str) -> AsyncIterator[RespClient]:
    c = RespClient(redis_url)
    yield c
    await c.aclose()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class OwnServer:
    """A redis-server of this module: password, unix socket and TLS port."""

    def __init__(self, tmp: Path) -> None:
        self.socket = tmp / "redis.sock"
        self.tls_port = free_port()
        cert, key = _self_signed(tmp)
        self.server = RedisServer(
            tmp,
            extra_args=(
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--tls-port", str(self.tls_port),
                "--tls-cert-file", str(cert),
                "--tls-key-file", str(key),
                "--tls-auth-clients", "no",
            ),
        )  # fmt: skip

    def start(self) -> None:
        self.server.start()
        # Set after start: the helper waits for an unauthenticated PING.
        self.server.command("CONFIG", "SET", "requirepass", PASSWORD)
        self.raw("ACL", "SETUSER", "alice", "on", ">alice-pw", "~*", "+@all")

    def raw(self, *args: str) -> bytes:
        """Send one command after AUTH over a plain socket; return the raw reply bytes."""
        parts = [["AUTH", PASSWORD], list(args)]
        data = b"".join(_resp._encode_py([p]) for p in parts)
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=2) as s:
            s.sendall(data)
            time.sleep(0.05)
            return s.recv(65536)

    def stop(self) -> None:
        # SHUTDOWN must be authenticated, or the helper waits for a kill.
        self.raw("CONFIG", "SET", "requirepass", "")
        self.server.stop()

    def url(self, *, user: str | None = None, password: str = PASSWORD, db: int = 0) -> str:
        auth = f"{quote(user or '', safe='')}:{quote(password, safe='')}@"
        return f"redis://{auth}127.0.0.1:{self.server.port}/{db}"


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnServer]:
    server = OwnServer(tmp_path_factory.mktemp("resp"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _key() -> str:
    return f"resp:{uuid.uuid4().hex}"


# -- replies ----------------------------------------------------------------


async def test_every_reply_type(client: RespClient) -> None:
    k, h, n = _key(), _key(), _key()
    script = "return {1, {2, 'x', {}}, redis.error_reply('MYERR boom'), false, -7}"
    replies = await client.execute(
        [
            ["PING"],
            ["SET", k, ""],
            ["GET", k],
            ["GET", _key()],
            ["INCRBY", n, -5],
            ["INCRBY", n, 2**62],
            ["HSET", h, "f1", "v1", "f2", "v2"],
            ["HGETALL", h],
            ["LRANGE", _key(), 0, -1],
            ["BLPOP", _key(), "0.01"],
            ["EVAL", script, 0],
            ["HGET", k, "f"],
        ]
    )
    assert replies[:9] == [
        b"PONG",
        b"OK",
        b"",
        None,
        -5,
        2**62 - 5,
        2,
        [b"f1", b"v1", b"f2", b"v2"],
        [],
    ]
    assert replies[9] is None  # nil array
    nested = replies[10]
    assert nested[:2] == [1, [2, b"x", []]]
    assert isinstance(nested[2], ReplyError) and str(nested[2]) == "MYERR boom"
    assert nested[3:] == [None, -7]
    assert isinstance(replies[11], ReplyError) and str(replies[11]).startswith("WRONGTYPE")


async def test_empty_batch_and_bad_arguments_send_nothing(client: RespClient) -> None:
    assert await client.execute([]) == []
    with pytest.raises(ValueError, match="empty"):
        await client.execute([["PING"], []])
    with pytest.raises(TypeError):
        await client.execute([["SET", _key(), True]])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        await client.execute([["SET", _key(), None]])  # type: ignore[list-item]
    assert await client.execute([["PING"]]) == [b"PONG"]


async def test_argument_encoding(client: RespClient) -> None:
    k = _key()
    values: list[str | bytes | int | float] = ["ключ ☃ é", b"\x00\xff\r\n", -12, 2**70, 0.1, 1e20]
    replies = await client.execute([["RPUSH", k, *values], ["LRANGE", k, 0, -1]])
    assert replies == [
        6,
        ["ключ ☃ é".encode(), b"\x00\xff\r\n", b"-12", str(2**70).encode(), b"0.1", b"1e+20"],
    ]


async def test_pipelined_batch_keeps_order(client: RespClient) -> None:
    k = _key()
    replies = await client.execute([["RPUSH", k, i] for i in range(1000)] + [["LLEN", k]])
    assert replies == [*range(1, 1001), 1000]


async def test_error_reply_is_a_value_and_the_batch_goes_on(client: RespClient) -> None:
    k = _key()
    replies = await client.execute(
        [["SET", k, "v"], ["HGET", k, "f"], ["GET", k], ["NOSUCHCOMMAND"], ["PING"]]
    )
    assert replies[0] == b"OK"
    assert isinstance(replies[1], ReplyError) and str(replies[1]).startswith("WRONGTYPE")
    assert replies[2] == b"v"
    assert isinstance(replies[3], ReplyError) and str(replies[3]).startswith("ERR")
    assert replies[4] == b"PONG"


async def test_evalsha_noscript(client: RespClient) -> None:
    script = "return ARGV[1]"
    [missing] = await client.execute([["EVALSHA", "0" * 40, 0, "x"]])
    assert isinstance(missing, ReplyError) and str(missing).startswith("NOSCRIPT")
    [sha] = await client.execute([["SCRIPT", "LOAD", script]])
    assert await client.execute([["EVALSHA", sha, 0, "x"]]) == [b"x"]


async def test_big_values(client: RespClient) -> None:
    k = _key()
    big = random.randbytes(1 << 20)
    assert await client.execute([["SET", k, big], ["GET", k], ["STRLEN", k]]) == [
        b"OK",
        big,
        1 << 20,
    ]
    many = [["GET", k]] * 8
    assert await client.execute(many) == [big] * 8


async def test_unicode(client: RespClient) -> None:
    k = "clé:ключ:☃:" + _key()
    await client.execute([["SET", k, "värde 😀"]])
    assert await client.execute([["GET", k], ["KEYS", "clé:ключ:☃:*"]]) == [
        "värde 😀".encode(),
        [k.encode()],
    ]


# -- concurrency ------------------------------------------------------------


async def test_concurrent_callers_get_their_own_replies(client: RespClient) -> None:
    prefix = _key()

    async def caller(i: int) -> None:
        for _ in range(3):
            k = f"{prefix}:{i}"
            replies = await client.execute([["SET", k, i], ["INCR", k], ["GET", k], ["ECHO", k]])
            assert replies[1:] == [i + 1, str(i + 1).encode(), k.encode()]
            await client.execute([["DEL", k]])

    await asyncio.gather(*(caller(i) for i in range(200)))


async def test_concurrent_first_calls_share_one_connection(redis_url: str) -> None:
    c = RespClient(redis_url)
    try:
        ids = await asyncio.gather(*(c.execute([["CLIENT", "ID"]]) for _ in range(50)))
        assert len({i[0] for i in ids}) == 1
    finally:
        await c.aclose()


async def test_cancelled_caller_does_not_desync_the_next_one(client: RespClient) -> None:
    k = _key()
    blocked = asyncio.create_task(client.execute([["BLPOP", k, "5"], ["ECHO", "first"]]))
    await asyncio.sleep(0.05)
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    # The cancelled batch's replies arrive after this push; they must be skipped.
    pusher = RespClient(_url_of(client))
    try:
        await pusher.execute([["RPUSH", k, "value"]])
    finally:
        await pusher.aclose()
    assert await client.execute([["ECHO", "second"], ["PING"]]) == [b"second", b"PONG"]


def _url_of(c: RespClient) -> str:
    return f"redis://{c._host}:{c._port}/{c._db}"


async def test_cancelled_while_connecting(redis_url: str) -> None:
    c = RespClient(redis_url)
    try:
        first = asyncio.create_task(c.execute([["PING"]]))
        second = asyncio.create_task(c.execute([["ECHO", "x"]]))
        await asyncio.sleep(0)
        first.cancel()
        assert await second == [b"x"]
        assert first.cancelled()
    finally:
        await c.aclose()


# -- auth, db, url forms ----------------------------------------------------


async def test_password_user_and_percent_decoding(own_server: OwnServer, parser: str) -> None:
    urls = {
        b"default": own_server.url(db=2),
        b"alice": own_server.url(user="alice", password="alice-pw"),
    }
    for user, url in urls.items():
        c = RespClient(url)
        try:
            assert await c.execute([["ACL", "WHOAMI"], ["PING"]]) == [user, b"PONG"]
        finally:
            await c.aclose()


@pytest.mark.parametrize("user", [None, "alice"])
async def test_wrong_password(own_server: OwnServer, user: str | None) -> None:
    wrong = "n0t-the:p@ssword"
    c = RespClient(own_server.url(user=user, password=wrong))
    with pytest.raises(RespConnectionError, match="AUTH refused") as info:
        await c.execute([["PING"]])
    assert wrong not in str(info.value) and PASSWORD not in str(info.value)
    assert "WRONGPASS" in str(info.value)
    await c.aclose()


async def test_no_password_gets_noauth_replies(own_server: OwnServer) -> None:
    c = RespClient(f"redis://127.0.0.1:{own_server.server.port}")
    try:
        [reply] = await c.execute([["GET", "x"]])
        assert isinstance(reply, ReplyError) and str(reply).startswith("NOAUTH")
    finally:
        await c.aclose()


async def test_select_db_isolation(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    k = _key()
    one, two = RespClient(f"{base}/1"), RespClient(f"{base}?db=2")
    zero = RespClient(redis_url)
    try:
        await one.execute([["SET", k, "one"]])
        await two.execute([["SET", k, "two"]])
        assert await one.execute([["GET", k]]) == [b"one"]
        assert await two.execute([["GET", k]]) == [b"two"]
        assert await zero.execute([["GET", k]]) == [None]
    finally:
        for c in (one, two, zero):
            await c.aclose()


async def test_select_refused(redis_url: str) -> None:
    c = RespClient(redis_url.rsplit("/", 1)[0] + "/999")
    with pytest.raises(RespConnectionError, match="SELECT refused"):
        await c.execute([["PING"]])


async def test_unix_socket(own_server: OwnServer) -> None:
    pw = quote(PASSWORD, safe="")
    c = RespClient(f"unix://:{pw}@{own_server.socket}?db=3")
    try:
        [info] = await c.execute([["CLIENT", "INFO"]])
        assert b" db=3 " in info and b"addr=/" in info
    finally:
        await c.aclose()


async def test_tls(own_server: OwnServer) -> None:
    pw = quote(PASSWORD, safe="")
    c = RespClient(f"rediss://:{pw}@127.0.0.1:{own_server.tls_port}/0?ssl_cert_reqs=none")
    try:
        assert await c.execute([["PING"]]) == [b"PONG"]
    finally:
        await c.aclose()
    verified = RespClient(f"rediss://:{pw}@127.0.0.1:{own_server.tls_port}/0")
    with pytest.raises(RespConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await verified.execute([["PING"]])


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost", ("localhost", 6379, "", 0, None, None, False)),
        ("redis://h:7000/5", ("h", 7000, "", 5, None, None, False)),
        ("redis://h/?db=4", ("h", 6379, "", 4, None, None, False)),
        ("REDIS://h:1/2?db=2", ("h", 1, "", 2, None, None, False)),
        ("redis://:p%40ss%3Aw@h", ("h", 6379, "", 0, None, "p@ss:w", False)),
        ("redis://us%20er:pw@[::1]:6380", ("::1", 6380, "", 0, "us er", "pw", False)),
        ("redis://:@h", ("h", 6379, "", 0, None, "", False)),
        ("rediss://h", ("h", 6379, "", 0, None, None, True)),
        ("rediss://h?ssl_cert_reqs=none", ("h", 6379, "", 0, None, None, True)),
        ("unix:///tmp/r.sock", ("", 6379, "/tmp/r.sock", 0, None, None, False)),
        ("unix://:pw@/tmp/r.sock?db=7", ("", 6379, "/tmp/r.sock", 7, None, "pw", False)),
    ],
)
def test_url_forms(url: str, expected: tuple[Any, ...]) -> None:
    c = RespClient(url)
    got = (c._host, c._port, c._path, c._db, c._username, c._password, c._ssl is not None)
    assert got == expected


def test_ssl_cert_reqs_none_disables_verification() -> None:
    import ssl

    ctx = RespClient("rediss://h?ssl_cert_reqs=none")._ssl
    assert ctx is not None and ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    ctx = RespClient("rediss://h")._ssl
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h", "scheme"),
        ("h:6379", "scheme"),
        ("", "scheme"),
        ("redis://", "no host"),
        ("redis://h:abc", "invalid Redis URL"),
        ("redis://h:99999", "invalid Redis URL"),
        ("redis://h/x", "db must be"),
        ("redis://h/-1", "db must be"),
        ("redis://h/?db=x", "db must be"),
        ("redis://h/1?db=2", "two different dbs"),
        ("redis://h?timeout=3", "unsupported"),
        ("redis://h?db=1&db=1", "repeated"),
        ("redis://h?ssl_cert_reqs=none", "needs rediss"),
        ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs must be"),
        ("redis://user@h", "needs a password"),
        ("redis://h#x", "fragment"),
        ("unix://", "socket path"),
        ("unix://host/tmp/s", "without a host"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RespClient(url)


def test_bad_timeouts() -> None:
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="socket_timeout"):
            RespClient("redis://h", socket_timeout=bad)
        with pytest.raises(ValueError, match="socket_connect_timeout"):
            RespClient("redis://h", socket_connect_timeout=bad)


def test_repr_hides_the_password() -> None:
    c = RespClient("redis://alice:hunter2@h:7000/3")
    assert "hunter2" not in repr(c)
    assert "h:7000" in repr(c) and "db=3" in repr(c)
    with pytest.raises(ValueError, match="db must be") as info:
        RespClient("redis://alice:hunter2@h:7000/x")
    assert "hunter2" not in str(info.value)


# -- failures and recovery --------------------------------------------------


async def test_connection_refused_is_quick(parser: str) -> None:
    c = RespClient(f"redis://127.0.0.1:{free_port()}", socket_connect_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(RespConnectionError, match="cannot connect"):
        await c.execute([["PING"]])
    assert time.monotonic() - start < 1.5


@pytest.mark.slow
async def test_server_stopped_then_restarted(redis_server: RedisServer, redis_url: str) -> None:
    # A long socket_timeout: only the closed connection can fail the waiter quickly.
    c = RespClient(redis_url, socket_timeout=5.0)
    try:
        assert await c.execute([["PING"]]) == [b"PONG"]
        waiting = asyncio.create_task(c.execute([["BLPOP", _key(), "10"]]))
        await asyncio.sleep(0.05)
        start = time.monotonic()
        stopping = asyncio.create_task(asyncio.to_thread(redis_server.stop))
        with pytest.raises(ConnectionLostError, match="lost"):
            await waiting
        assert time.monotonic() - start < 2.0
        await stopping
        with pytest.raises(RespConnectionError, match="cannot connect") as refused:
            await c.execute([["PING"]])
        assert not isinstance(refused.value, ConnectionLostError)
        redis_server.start()
        assert await c.execute([["PING"]]) == [b"PONG"]
    finally:
        await c.aclose()


@pytest.mark.slow
async def test_server_stopped_between_calls_fails_fast(
    redis_server: RedisServer, redis_url: str
) -> None:
    c = RespClient(redis_url, socket_timeout=1.0)
    try:
        assert await c.execute([["PING"]]) == [b"PONG"]
        redis_server.stop()
        start = time.monotonic()
        with pytest.raises(RespConnectionError):
            await c.execute([["PING"]])
        assert time.monotonic() - start < 1.0 + 1.0
        redis_server.start()
        # The dead connection was noticed: this one reconnects transparently.
        assert await c.execute([["PING"]]) == [b"PONG"]
    finally:
        await c.aclose()


async def test_reply_timeout_fails_every_waiter_and_recovers(client: RespClient) -> None:
    c = RespClient(_url_of(client), socket_timeout=0.2)
    try:
        [before] = await c.execute([["CLIENT", "ID"]])
        start = time.monotonic()
        slow = asyncio.create_task(c.execute([["BLPOP", _key(), "1"]]))
        behind = asyncio.create_task(c.execute([["PING"]]))
        with pytest.raises(RespConnectionError, match="no reply") as timed_out:
            await slow
        # A timeout is no broken connection: the batch may have run, and is not resent.
        assert not isinstance(timed_out.value, ConnectionLostError)
        with pytest.raises(RespConnectionError):
            await behind
        assert 0.15 < time.monotonic() - start < 0.6
        [after] = await c.execute([["CLIENT", "ID"]])
        assert after != before
    finally:
        await c.aclose()


async def test_no_false_timeout_under_steady_load(redis_url: str) -> None:
    # One watchdog per connection: it must not fire while replies keep coming.
    c = RespClient(redis_url, socket_timeout=0.3)
    try:
        [first] = await c.execute([["CLIENT", "ID"]])
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            await asyncio.gather(*(c.execute([["PING"]]) for _ in range(4)))
        # Redis may notice a BLPOP timeout up to 100 ms late (hz 10).
        assert await c.execute([["BLPOP", _key(), "0.01"]]) == [None]
        await asyncio.sleep(0.4)
        assert await c.execute([["CLIENT", "ID"]]) == [first]
    finally:
        await c.aclose()


async def test_aclose_fails_waiters_and_client_reconnects(client: RespClient) -> None:
    await client.aclose()  # before any connection: nothing to do
    [first] = await client.execute([["CLIENT", "ID"]])
    waiting = asyncio.create_task(client.execute([["BLPOP", _key(), "5"]]))
    await asyncio.sleep(0.05)
    await client.aclose()
    with pytest.raises(RespConnectionError, match="closed by the client"):
        await waiting
    await client.aclose()
    [second] = await client.execute([["CLIENT", "ID"]])
    assert second != first


async def test_aclose_while_connecting(redis_url: str) -> None:
    c = RespClient(redis_url)
    calls = [asyncio.create_task(c.execute([["PING"]])) for _ in range(3)]
    await asyncio.sleep(0)  # the connection attempt has started
    start = time.monotonic()
    await c.aclose()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert time.monotonic() - start < 0.5
    for result in results:
        assert result == [b"PONG"] or isinstance(result, RespConnectionError)
    assert c._conn is None or c._conn.closed
    assert await c.execute([["PING"]]) == [b"PONG"]
    await c.aclose()


def test_loop_change_reconnects_and_closes_the_old_socket(redis_url: str) -> None:
    c = RespClient(redis_url)
    [first] = asyncio.run(c.execute([["CLIENT", "ID"]]))
    [second] = asyncio.run(c.execute([["CLIENT", "ID"]]))
    assert second != first
    gc.collect()  # an unclosed transport would warn (an error under this test config)

    async def clients() -> list[Any]:
        replies = await c.execute([["CLIENT", "ID"], ["CLIENT", "LIST"]])
        await c.aclose()
        return replies

    third, listing = asyncio.run(clients())
    assert f"id={third} ".encode() in listing
    assert f"id={first} ".encode() not in listing
    assert f"id={second} ".encode() not in listing


def test_loop_change_on_a_loop_left_open(redis_url: str) -> None:
    c = RespClient(redis_url)
    old = asyncio.new_event_loop()
    try:
        [first] = old.run_until_complete(c.execute([["CLIENT", "ID"]]))
        [second] = asyncio.run(c.execute([["CLIENT", "ID"]]))
        assert second != first
        old.run_until_complete(asyncio.sleep(0))  # the old loop closes its transport
        assert asyncio.run(c.execute([["PING"]])) == [b"PONG"]
        asyncio.run(c.aclose())
    finally:
        old.close()
    gc.collect()


def test_a_loop_running_in_another_thread_is_not_borrowed(redis_url: str) -> None:
    """The connection's loop still runs, in another thread: this thread's loop connects anew."""
    c = RespClient(redis_url)
    other = asyncio.new_event_loop()
    runner = threading.Thread(target=other.run_forever, daemon=True)
    runner.start()
    try:
        first = asyncio.run_coroutine_threadsafe(c.execute([["CLIENT", "ID"]]), other).result(5)
        assert other.is_running()

        async def here() -> Any:
            [second] = await c.execute([["CLIENT", "ID"]])
            await c.aclose()
            return second

        assert asyncio.run(here()) != first[0], "a new connection, on this thread's loop"
        # The old loop closes its own transport.
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), other).result(5)
    finally:
        other.call_soon_threadsafe(other.stop)
        runner.join(5)
        other.close()
    gc.collect()


async def _raw_server(reply: bytes) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(reply)
        await writer.drain()
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"redis://127.0.0.1:{port}"


@pytest.mark.parametrize("reply", [b"?garbage\r\n", b":12x\r\n", b"+PONG\r\n+EXTRA\r\n"])
async def test_protocol_error_closes_the_connection(reply: bytes, parser: str) -> None:
    server, url = await _raw_server(reply)
    c = RespClient(url)
    try:
        if reply.startswith(b"+PONG"):
            # The first reply resolves the call; the unexpected one breaks the connection.
            assert await c.execute([["PING"]]) == [b"PONG"]
            await asyncio.sleep(0.05)
            assert c._conn is not None and c._conn.closed
        else:
            with pytest.raises(RespConnectionError, match="protocol"):
                await c.execute([["PING"]])
    finally:
        await c.aclose()
        server.close()
        await server.wait_closed()


# -- parsers and encoders ---------------------------------------------------

# A generated reply: (RESP bytes, the value a reader must return).
_Gen = tuple[bytes, Any]

_line = st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b)
_leaf: st.SearchStrategy[_Gen] = st.one_of(
    st.binary(max_size=40).map(lambda b: (b"$%d\r\n%b\r\n" % (len(b), b), b)),
    st.just((b"$-1\r\n", None)),
    st.just((b"*-1\r\n", None)),
    st.integers(-(2**63), 2**63 - 1).map(lambda n: (b":%d\r\n" % n, n)),
    _line.map(lambda b: (b"+%b\r\n" % b, b)),
    st.text(max_size=20)
    .filter(lambda s: "\r" not in s and "\n" not in s)
    .map(lambda s: (b"-ERR %b\r\n" % s.encode(), ReplyError("ERR " + s))),
)


def _array(children: st.SearchStrategy[_Gen]) -> st.SearchStrategy[_Gen]:
    return st.lists(children, max_size=5).map(
        lambda items: (
            b"*%d\r\n" % len(items) + b"".join(i[0] for i in items),
            [i[1] for i in items],
        )
    )


_reply: st.SearchStrategy[_Gen] = st.recursive(_leaf, _array, max_leaves=20)


def _comparable(value: Any) -> Any:
    if isinstance(value, ReplyError):
        return ("error", str(value))
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _read_all(reader: Any, chunks: list[bytes]) -> list[Any]:
    out = []
    for chunk in chunks:
        reader.feed(chunk)
        while (value := reader.gets()) is not _resp._MORE:
            out.append(_comparable(value))
    return out


def _hiredis_reader() -> Any:
    return hiredis.Reader(
        protocolError=RespConnectionError, replyError=ReplyError, notEnoughData=_resp._MORE
    )


@settings(max_examples=300, deadline=None)
@given(replies=st.lists(_reply, min_size=1, max_size=8), data=st.data())
def test_python_parser_matches_hiredis_on_random_splits(replies: list[_Gen], data: Any) -> None:
    stream = b"".join(r[0] for r in replies)
    expected = [_comparable(r[1]) for r in replies]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert _read_all(PyReader(), chunks) == expected
    assert _read_all(_hiredis_reader(), chunks) == expected


@settings(max_examples=50, deadline=None)
@given(replies=st.lists(_reply, min_size=1, max_size=4))
def test_python_parser_byte_by_byte(replies: list[_Gen]) -> None:
    stream = b"".join(r[0] for r in replies)
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert _read_all(PyReader(), chunks) == [_comparable(r[1]) for r in replies]


def test_python_parser_big_bulk_in_chunks() -> None:
    big = random.randbytes(3 << 20)
    stream = b"$%d\r\n%b\r\n:1\r\n" % (len(big), big)
    chunks = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    assert _read_all(PyReader(), chunks) == [big, 1]


def test_python_parser_deep_nesting_is_a_protocol_error() -> None:
    reader = PyReader()
    reader.feed(b"*1\r\n" * 5000 + b":1\r\n")
    with pytest.raises(RespConnectionError, match="nested"):
        reader.gets()


@pytest.mark.parametrize("bad", [b"?x\r\n", b":x\r\n", b"$3\r\nabcd\r\n", b"*x\r\n"])
def test_parsers_reject_malformed_input(bad: bytes) -> None:
    for reader in (PyReader(), _hiredis_reader()):
        reader.feed(bad)
        with pytest.raises(RespConnectionError):  # hiredis: at the "d" after b"abc"
            _read_all(reader, [b""] * 3)


_arg = st.one_of(
    st.binary(max_size=20),
    st.text(max_size=10),
    st.integers(-(2**80), 2**80),
    st.floats(),
)


@settings(max_examples=200, deadline=None)
@given(commands=st.lists(st.lists(_arg, min_size=1, max_size=5), min_size=1, max_size=4))
def test_encoders_agree(commands: list[list[Any]]) -> None:
    py = _resp._encode_py(commands)
    assert _resp._encode(commands) == py
    # The encoding is a RESP array of bulk strings: read it back as replies.
    decoded = _read_all(PyReader(), [py])
    assert len(decoded) == len(commands)
    for args, got in zip(commands, decoded, strict=True):
        assert got == [_expected_arg(a) for a in args]


def _expected_arg(a: Any) -> bytes:
    if isinstance(a, bytes):
        return a
    if isinstance(a, str):
        return a.encode()
    if isinstance(a, int):
        return str(a).encode()
    return repr(a).encode()
