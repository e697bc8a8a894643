"""A lean asyncio Redis client speaking RESP2 to one server (private).

:class:`RespClient` keeps one multiplexed connection: concurrent
:meth:`~RespClient.execute` calls share it, each call's commands go out in one
write (pipelined) and replies are matched to callers in order. It exists
because a general-purpose client costs several times more CPU per command;
it offers no retries (its caller knows whether a batch may be resent: see
:class:`ConnectionLostError`), no pooling, no cluster, no pub/sub and no RESP3.

Replies are parsed by ``hiredis`` when it is importable (and behaves as
expected), else by :class:`PyReader`, a pure-Python RESP2 parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from threading import get_ident
from typing import Any, Final, Protocol, cast
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["ConnectionLostError", "PyReader", "ReplyError", "RespClient", "RespConnectionError"]


class ReplyError(Exception):
    """An error reply from the server (e.g. WRONGTYPE, NOSCRIPT).

    :meth:`RespClient.execute` returns it as a value in the reply list, in the
    position of the command that failed; it never raises it. ``str(error)`` is
    the server's message, starting with the error code.
    """


class RespConnectionError(ConnectionError):
    """Cannot connect, connection lost, reply timed out, or protocol desync.

    When :meth:`RespClient.execute` raises it, the commands may or may not
    have been executed by the server.
    """


class ConnectionLostError(RespConnectionError):
    """The connection broke (closed, reset) while replies were awaited.

    Unlike a timeout or a failed connect, the server may simply have been
    restarted: an idempotent batch can be sent once more on a new connection.
    """


class _Reader(Protocol):
    def feed(self, data: bytes, /) -> None: ...
    def gets(self) -> Any: ...


_MORE: Final[Any] = object()
"""What a reader's ``gets()`` returns while no complete reply is buffered."""

_COMPACT_AT: Final = 1 << 16


def _int(line: bytes) -> int:
    try:
        return int(line)
    except ValueError:
        raise RespConnectionError(f"bad integer {line[:40]!r}") from None


class PyReader:
    """An incremental pure-Python RESP2 parser with the contract used of ``hiredis.Reader``.

    :meth:`feed` accepts data split anywhere; :meth:`gets` returns the next
    complete reply, or the module's "more data needed" marker. Bulk and simple
    strings come back as ``bytes``, integers as ``int``, nil bulk strings and
    nil arrays as ``None``, arrays as lists, error replies as
    :class:`ReplyError` instances. Malformed input raises
    :class:`RespConnectionError`; the reader is unusable after that.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes, /) -> None:
        """Append received bytes."""
        self._buf += data

    def gets(self) -> Any:
        """Return the next complete reply, or the "more data needed" marker."""
        try:
            value, pos = self._parse(self._pos)
        except RecursionError:
            raise RespConnectionError("reply nested too deeply") from None
        if pos < 0:
            return _MORE
        if pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif pos > _COMPACT_AT:
            del self._buf[:pos]
            self._pos = 0
        else:
            self._pos = pos
        return value

    def _parse(self, pos: int) -> tuple[Any, int]:
        # Returns (value, position after it), or (None, -1) while incomplete:
        # an incomplete reply is parsed again from its start on the next call.
        buf = self._buf
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None, -1
        kind = buf[pos]
        line = bytes(buf[pos + 1 : eol])
        pos = eol + 2
        if kind == 0x24:  # $ bulk string
            size = _int(line)
            if size < 0:
                return None, pos
            end = pos + size
            if len(buf) < end + 2:
                return None, -1
            if buf[end : end + 2] != b"\r\n":
                raise RespConnectionError("bulk string not followed by CRLF")
            return bytes(buf[pos:end]), end + 2
        if kind == 0x2B:  # + simple string
            return line, pos
        if kind == 0x3A:  # : integer
            return _int(line), pos
        if kind == 0x2D:  # - error
            return ReplyError(line.decode("utf-8", "replace")), pos
        if kind == 0x2A:  # * array
            size = _int(line)
            if size < 0:
                return None, pos
            items = []
            for _ in range(size):
                item, pos = self._parse(pos)
                if pos < 0:
                    return None, -1
                items.append(item)
            return items, pos
        raise RespConnectionError(f"unknown reply type {bytes([kind])!r}")


def _hiredis_factory() -> Callable[[], _Reader] | None:
    try:
        import hiredis
    except ImportError:
        return None

    def make() -> _Reader:
        return cast(
            _Reader,
            hiredis.Reader(
                protocolError=RespConnectionError, replyError=ReplyError, notEnoughData=_MORE
            ),
        )

    # Older hiredis versions raised top-level error replies: accept only the
    # behaviour this module relies on.
    try:
        probe = make()
        probe.feed(b"-ERR x\r\n*1\r\n-ERR y\r\n")
        if not (isinstance(probe.gets(), ReplyError) and isinstance(probe.gets()[0], ReplyError)):
            return None
        if probe.gets() is not _MORE:
            return None
    except Exception:
        return None
    return make


_make_reader: Callable[[], _Reader] = _hiredis_factory() or PyReader
"""The parser factory every new connection uses (tests swap it)."""

_Commands = Sequence[Sequence[str | bytes | int | float]]
_EMPTY: Final = "empty Redis command"


def _encode_py(commands: _Commands) -> bytes:
    """RESP arrays of bulk strings; the fallback of :func:`_encode_hiredis`, same output."""
    out: list[bytes] = []
    add = out.append
    for command in commands:
        n = len(command)
        if not n:
            # The server answers nothing to an empty command: the replies
            # would no longer match the callers.
            raise ValueError(_EMPTY)
        add(b"*%d\r\n" % n)
        for arg in command:
            if isinstance(arg, bytes):
                b = arg
            elif isinstance(arg, str):
                b = arg.encode()
            elif type(arg) is int:
                b = b"%d" % arg
            else:
                b = _coerce(arg)
            add(b"$%d\r\n" % len(b))
            add(b)
            add(b"\r\n")
    return b"".join(out)


def _coerce(arg: object) -> bytes:
    if isinstance(arg, bool) or not isinstance(arg, int | float):
        raise TypeError(f"cannot send a {type(arg).__name__} as a Redis argument")
    if isinstance(arg, int):
        return b"%d" % arg
    return repr(arg).encode()


def _hiredis_encoder() -> Callable[[_Commands], bytes] | None:
    try:
        import hiredis
    except ImportError:
        return None
    # Its stub declares a one-item tuple; it takes any number of items.
    pack = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)

    def encode(commands: _Commands) -> bytes:
        if len(commands) == 1:  # the commonest batch
            (command,) = commands
            if not command:
                raise ValueError(_EMPTY)
            return pack(tuple(command))
        out: list[bytes] = []
        for command in commands:
            if not command:
                raise ValueError(_EMPTY)
            out.append(pack(tuple(command)))
        return b"".join(out)

    # pack_command is about twice as fast; use it only if its output is ours.
    probe: _Commands = [["SET", "k\u00e9", b"\x00\r\n", -12, 0.1, 1e20, 2**70]]
    try:
        return encode if encode(probe) == _encode_py(probe) else None
    except Exception:
        return None


_encode: Callable[[_Commands], bytes] = _hiredis_encoder() or _encode_py


class _Batch:
    __slots__ = ("deadline", "future", "replies", "size")

    def __init__(self, future: asyncio.Future[list[Any]], size: int, deadline: float) -> None:
        self.future = future
        self.size = size
        self.deadline = deadline
        self.replies: list[Any] = []


class _Connection(asyncio.Protocol):
    """One socket: a FIFO of batches waiting for replies, fed by ``data_received``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, where: str, reply_timeout: float) -> None:
        self.loop = loop
        self.thread = get_ident()
        self.where = where
        self.reply_timeout = reply_timeout
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.pending: deque[_Batch] = deque()
        self.reader = _make_reader()
        self.closed = False
        self.lost: asyncio.Future[None] = loop.create_future()
        # One watchdog timer per connection, not one per batch: arming and
        # cancelling a timer per batch costs more than the rest of a PING.
        self.watchdog: asyncio.TimerHandle | None = None
        # Batches written by the tasks of one loop iteration leave in one send.
        self.out: list[bytes] = []

    def flush(self) -> None:
        data = b"".join(self.out)
        self.out.clear()
        if not self.closed:
            self.transport.write(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        pending = self.pending
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except RespConnectionError as exc:
                self.abort(f"protocol error from {self.where}: {exc}")
                return
            if reply is _MORE:
                return
            if not pending:
                self.abort(f"protocol desync: unexpected reply from {self.where}")
                return
            batch = pending[0]
            replies = batch.replies
            replies.append(reply)
            if len(replies) == batch.size:
                pending.popleft()
                # A cancelled caller's replies are consumed all the same.
                if not batch.future.done():
                    batch.future.set_result(replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(
            f"connection to {self.where} lost" + (f": {exc}" if exc else ""), ConnectionLostError
        )
        if not self.lost.done():
            self.lost.set_result(None)

    def arm(self, when: float) -> None:
        self.watchdog = self.loop.call_at(when, self.check)

    def check(self) -> None:
        """Abort if the oldest waiting batch is overdue, else wait for its deadline."""
        self.watchdog = None
        if self.closed or not self.pending:
            return
        deadline = self.pending[0].deadline
        if deadline <= self.loop.time():
            self.abort(f"no reply from {self.where} within {self.reply_timeout}s")
        else:
            self.arm(deadline)

    def fail(self, message: str, kind: type[RespConnectionError] = RespConnectionError) -> None:
        self.closed = True
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        pending = self.pending
        while pending:
            future = pending.popleft().future
            if not future.done():
                future.set_exception(kind(message))

    def abort(self, message: str) -> None:
        self.fail(message)
        if self.transport is not None:
            self.transport.abort()


def _discard(conn: _Connection) -> None:
    """Drop a connection made on another event loop, without awaiting anything."""
    conn.closed = True
    old = conn.loop
    if old.is_running():  # in another thread: let it close its own transport
        old.call_soon_threadsafe(conn.abort, "the client moved to another event loop")
        return
    if not old.is_closed():
        conn.abort("the client moved to another event loop")
        return
    # The loop is closed: the tasks awaiting these batches are gone, and the
    # transport cannot finish closing (that needs a callback on its loop). So
    # close the socket directly, or it leaks and warns "unclosed transport".
    conn.pending.clear()
    transport: Any = conn.transport
    if transport is None:
        return
    with contextlib.suppress(RuntimeError):  # "Event loop is closed"
        transport.abort()
    inner: Any = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    for t in (transport, inner):
        sock = getattr(t, "_sock", None)
        if sock is not None:
            sock.close()
            t._sock = None


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def _parse_db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"invalid Redis URL: db must be a non-negative integer, not {text!r}")
    return int(text)


_CERT_REQS: Final = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


class RespClient:
    """An asyncio Redis client for one server, on one multiplexed connection.

    Args:
        url: ``redis://[[username]:password@]host[:port][/db]``, the same with
            ``rediss://`` for TLS (certificates verified against the system's
            CAs; ``?ssl_cert_reqs=none`` turns verification off), or
            ``unix://[[username]:password@]/path/to/socket``. ``?db=N`` selects
            a database in either form. User name and password are
            percent-decoded. Any other query option is refused.
        socket_timeout: Seconds a batch's replies may take: after that the
            connection is closed and every waiting caller fails.
        socket_connect_timeout: Seconds connecting (TCP, TLS) may take.

    Raises:
        ValueError: The URL or a timeout is invalid (the message never
            contains the password).

    Nothing connects until the first :meth:`execute`. A client may be used by
    any number of coroutines of one event loop at a time; it is not
    thread-safe. When used from another event loop than before, it drops the
    old connection and connects again.
    """

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float = 1.0,
        socket_connect_timeout: float = 1.0,
    ) -> None:
        self._timeout = _positive("socket_timeout", socket_timeout)
        self._connect_timeout = _positive("socket_connect_timeout", socket_connect_timeout)
        self._host = ""
        self._port = 6379
        self._path = ""
        self._db = 0
        self._username: str | None = None
        self._password: str | None = None
        self._ssl: ssl.SSLContext | None = None
        self._parse_url(url)
        self._where = f"unix:{self._path}" if self._path else f"{self._host}:{self._port}"
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    def _parse_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except (ValueError, TypeError) as exc:
            raise ValueError(f"invalid Redis URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"invalid Redis URL: scheme must be redis://, rediss:// or unix://, "
                f"not {parts.scheme + '://' if parts.scheme else 'missing'}"
            )
        if parts.fragment:
            raise ValueError("invalid Redis URL: it must not have a #fragment")
        options: dict[str, str] = {}
        try:
            pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            pairs = [] if not parts.query else [("", "")]
        for name, value in pairs:
            if name not in ("db", "ssl_cert_reqs") or name in options:
                raise ValueError(
                    f"invalid Redis URL: unsupported or repeated query option {name!r} "
                    "(only db, and ssl_cert_reqs for rediss://, are accepted)"
                )
            options[name] = value
        if parts.password is not None:
            self._password = unquote(parts.password)
            self._username = unquote(parts.username) if parts.username else None
        elif parts.username:
            raise ValueError("invalid Redis URL: a user name needs a password (user:password@)")
        if scheme == "unix":
            if parts.hostname or port is not None:
                raise ValueError("invalid Redis URL: use unix:///path/to/socket, without a host")
            if not parts.path:
                raise ValueError("invalid Redis URL: unix:// needs a socket path")
            self._path = unquote(parts.path)
        else:
            if not parts.hostname:
                raise ValueError("invalid Redis URL: no host")
            self._host = parts.hostname
            self._port = 6379 if port is None else port
            path = parts.path.strip("/")
            if path:
                self._db = _parse_db(path)
                if "db" in options and _parse_db(options["db"]) != self._db:
                    raise ValueError("invalid Redis URL: two different dbs in path and ?db=")
        if "db" in options:
            self._db = _parse_db(options["db"])
        if scheme == "rediss":
            self._ssl = ssl.create_default_context()
            reqs = options.get("ssl_cert_reqs", "required").lower()
            if reqs not in _CERT_REQS:
                raise ValueError(
                    "invalid Redis URL: ssl_cert_reqs must be none, optional or required"
                )
            if reqs == "none":
                self._ssl.check_hostname = False
            self._ssl.verify_mode = _CERT_REQS[reqs]
        elif "ssl_cert_reqs" in options:
            raise ValueError("invalid Redis URL: ssl_cert_reqs needs rediss://")

    def __repr__(self) -> str:
        tls = ", tls" if self._ssl is not None else ""
        user = f", user={self._username!r}" if self._username else ""
        return f"<RespClient {self._where} db={self._db}{tls}{user}>"

    async def execute(self, commands: _Commands) -> list[Any]:
        """Send ``commands`` in one write and return their replies: see :meth:`send`."""
        return await self.send(commands)

    def send(self, commands: _Commands) -> Awaitable[list[Any]]:
        """Send ``commands`` in one write (pipelined) and return their replies in order.

        Arguments are sent as bulk strings: ``str`` as UTF-8, ``int`` in
        decimal, ``float`` as its ``repr``, ``bytes`` as they are. Replies:
        bulk and simple strings as ``bytes`` (``b"OK"``), integers as ``int``,
        nils as ``None``, arrays as (nested) lists, error replies as
        :class:`ReplyError` instances in the list (never raised). The commands
        of one call are never interleaved with another caller's. Connects
        first when there is no usable connection (there is none at first,
        after :meth:`aclose`, after a failure, or on another event loop).

        Not guaranteed: atomicity (use MULTI/EXEC or a script for that), or
        that the commands did not run when this raises. A batch that was
        written is never sent again.

        Raises:
            RespConnectionError: Cannot connect, AUTH or SELECT was refused,
                the connection was lost, or the replies took longer than
                ``socket_timeout``; every caller waiting on the connection
                gets it, and the next call connects again.
            TypeError / ValueError: An argument cannot be sent, or a command
                is empty (nothing is sent then).
        """
        # A plain function returning the reply future (a coroutine only when
        # it must connect first): one frame less to suspend and resume than
        # execute(), which wraps it for asyncio.create_task() and the like.
        if not commands:
            return _replied([])
        data = _encode(commands)
        conn = self._conn
        if (
            conn is not None
            and not conn.closed
            and conn.thread == get_ident()
            and conn.loop.is_running()
        ):
            # One thread runs one loop at a time: the connection's loop is the
            # running one (asyncio.get_running_loop() would cost a getpid()
            # system call per command on Python 3.11).
            return self._send(conn, conn.loop, data, len(commands))
        loop = asyncio.get_running_loop()
        if conn is None or conn.closed or conn.loop is not loop:
            return self._connect_then_send(loop, data, len(commands))
        return self._send(conn, loop, data, len(commands))

    async def _connect_then_send(
        self, loop: asyncio.AbstractEventLoop, data: bytes, size: int
    ) -> list[Any]:
        conn = await self._connect(loop)
        return await self._send(conn, loop, data, size)

    def _send(
        self, conn: _Connection, loop: asyncio.AbstractEventLoop, data: bytes, size: int
    ) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = loop.create_future()
        deadline = loop.time() + self._timeout
        conn.pending.append(_Batch(future, size, deadline))
        out = conn.out
        out.append(data)
        if len(out) == 1:
            # Sent at the next loop iteration, with whatever the other tasks
            # running in this one add: one system call for all of them.
            loop.call_soon(conn.flush)
        if conn.watchdog is None:
            conn.arm(deadline)
        return future

    async def aclose(self) -> None:
        """Close the connection; callers still waiting get :class:`RespConnectionError`.

        A connection attempt in progress is waited for (its callers get its
        outcome), then closed. The client stays usable: a later
        :meth:`execute` connects again. Never raises connection errors.
        """
        loop = asyncio.get_running_loop()
        task = self._connecting
        if task is not None and task.get_loop() is loop:
            # Not cancelled: its other callers would get a CancelledError
            # they did not ask for.
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.loop is not loop:
            _discard(conn)
            return
        conn.abort(f"connection to {self._where} closed by the client")
        # Let the transport close its socket before returning (the loop may
        # be closed right after).
        await asyncio.shield(conn.lost)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        old = self._conn
        if old is not None and old.loop is not loop:
            self._conn = None
            _discard(old)
        task = self._connecting
        if task is None or task.get_loop() is not loop:
            # A task, so that concurrent callers share one attempt and a
            # cancelled caller does not cancel it for the others.
            task = self._connecting = loop.create_task(self._open(loop))
            task.add_done_callback(_retrieve)
        conn = await asyncio.shield(task)
        if conn.closed:  # by aclose() or the server, while this caller waited
            raise RespConnectionError(f"connection to {self._where} closed before use")
        return conn

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        try:
            return await self._open_connection(loop)
        finally:
            if self._connecting is asyncio.current_task():
                self._connecting = None

    async def _open_connection(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        def factory() -> _Connection:
            return _Connection(loop, self._where, self._timeout)

        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._path:
                    _, conn = await loop.create_unix_connection(factory, self._path)
                else:
                    _, conn = await loop.create_connection(
                        factory,
                        self._host,
                        self._port,
                        ssl=self._ssl,
                        server_hostname=self._host if self._ssl is not None else None,
                    )
        except TimeoutError:
            raise RespConnectionError(
                f"cannot connect to {self._where}: timed out after {self._connect_timeout}s"
            ) from None
        except OSError as exc:
            raise RespConnectionError(f"cannot connect to {self._where}: {exc}") from exc
        setup: list[list[str | int]] = []
        if self._password is not None:
            user = [self._username] if self._username else []
            setup.append(["AUTH", *user, self._password])
        if self._db:
            setup.append(["SELECT", self._db])
        if setup:
            try:
                await self._handshake(conn, loop, setup)
            except BaseException:
                conn.abort(f"connection to {self._where} failed during setup")
                raise
        self._conn = conn
        return conn

    async def _handshake(
        self, conn: _Connection, loop: asyncio.AbstractEventLoop, setup: list[list[str | int]]
    ) -> None:
        future: asyncio.Future[list[Any]] = loop.create_future()
        deadline = loop.time() + self._timeout
        conn.pending.append(_Batch(future, len(setup), deadline))
        conn.transport.write(_encode(setup))
        conn.arm(deadline)
        replies = await future
        for command, reply in zip(setup, replies, strict=True):
            if isinstance(reply, ReplyError):
                # The server's message (e.g. WRONGPASS ...) never echoes the password.
                raise RespConnectionError(f"{command[0]} refused by {self._where}: {reply}")


async def _replied(value: list[Any]) -> list[Any]:
    return value


def _retrieve(task: asyncio.Task[_Connection]) -> None:
    # Mark the error as seen when every caller waiting on the attempt left.
    if not task.cancelled():
        task.exception()
