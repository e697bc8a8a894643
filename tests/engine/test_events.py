"""Verdict events: log levels, hooks, and the per-client limit on log records."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from donjon import KeyRing, Verdict
from donjon.engine import Engine
from donjon.events import LEVELS, Events, VerdictEvent
from donjon.guard import Guard, GuardPolicy
from donjon.stores import MemoryStore
from donjon.testing import FrozenClock

T0 = 1_800_000_000.0


def event(verdict: Verdict, client: str | None = "10.0.0.1", at: float = T0) -> VerdictEvent:
    return VerdictEvent(
        verdict=verdict,
        reason="r",
        session_class=None,
        key_id="k",
        client=client,
        path="/p",
        session_ref=None,
        time=at,
    )


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def verdicts(self) -> list[logging.LogRecord]:
        return [r for r in self.records if hasattr(r, "donjon_event")]

    def summaries(self) -> list[logging.LogRecord]:
        return [r for r in self.records if hasattr(r, "donjon_suppressed")]


@pytest.fixture
def records() -> Iterator[Records]:
    logger = logging.getLogger("donjon.security")
    handler = Records()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.mark.parametrize("verdict", [v for v in Verdict if v is not Verdict.VALID])
def test_each_verdict_is_logged_at_its_level(records: Records, verdict: Verdict) -> None:
    Events().emit(event(verdict))
    (rec,) = records.verdicts()
    assert rec.levelno == LEVELS[verdict]
    assert rec.donjon_event.verdict is verdict  # type: ignore[attr-defined]
    assert f"verdict={verdict.value}" in rec.getMessage()
    assert rec.pathname.endswith("events.py")
    assert rec.funcName == "deliver"


def test_valid_is_logged_only_when_asked(records: Records) -> None:
    Events().emit(event(Verdict.VALID))
    assert records.verdicts() == []
    Events(log_valid=True).emit(event(Verdict.VALID))
    assert [r.levelno for r in records.verdicts()] == [logging.DEBUG]


def test_a_flood_from_one_client_is_summarised(records: Records) -> None:
    seen: list[VerdictEvent] = []
    events = Events([seen.append], log_burst=5, log_window=1.0)
    for i in range(8):
        events.emit(event(Verdict.FORGED, at=T0 + i * 0.01))
    events.emit(event(Verdict.MALFORMED, at=T0 + 0.5))
    events.emit(event(Verdict.FORGED, client="10.0.0.2", at=T0 + 0.5))
    assert len(seen) == 10  # every hook call, whatever the log limit
    assert [r.donjon_event.client for r in records.verdicts()] == ["10.0.0.1"] * 5 + [  # type: ignore[attr-defined]
        "10.0.0.2"
    ]
    assert records.summaries() == []
    events.emit(event(Verdict.FORGED, at=T0 + 1.2))  # the next window
    (summary,) = records.summaries()
    assert summary.levelno == logging.WARNING
    assert summary.donjon_suppressed == {  # type: ignore[attr-defined]
        "client": "10.0.0.1",
        "counts": {"forged": 3, "malformed": 1},
    }
    assert "4 verdict records held back for client 10.0.0.1" in summary.getMessage()
    assert len(records.verdicts()) == 7  # the new window logs again


def test_flush_writes_pending_summaries(records: Records) -> None:
    events = Events(log_burst=1)
    events.emit(event(Verdict.FORGED))
    events.emit(event(Verdict.FORGED))
    events.flush(T0 + 0.1)
    assert [r.donjon_suppressed["counts"] for r in records.summaries()] == [{"forged": 1}]  # type: ignore[attr-defined]
    events.flush(T0 + 0.2)
    assert len(records.summaries()) == 1


def test_no_limit_logs_everything(records: Records) -> None:
    events = Events(log_burst=None)
    for _ in range(100):
        events.emit(event(Verdict.FORGED))
    assert len(records.verdicts()) == 100


def test_held_clients_are_bounded(records: Records) -> None:
    events = Events(log_burst=1)
    for i in range(1200):
        for _ in range(2):
            events.emit(event(Verdict.FORGED, client=f"c{i}"))
    events.flush(T0 + 0.5)
    summaries = records.summaries()
    assert len(summaries) == 1001  # 1000 clients, then everyone else together
    others = summaries[-1]
    assert others.donjon_suppressed["counts"] == {"forged": 200}  # type: ignore[attr-defined]
    assert "(more clients)" in others.getMessage()


def test_a_silenced_logger_holds_nothing_back(records: Records) -> None:
    logging.getLogger("donjon.security").setLevel(logging.ERROR)
    seen: list[VerdictEvent] = []
    events = Events([seen.append], log_burst=1)
    for _ in range(5):
        events.emit(event(Verdict.FORGED))
    events.flush(T0 + 2)
    assert records.records == []
    assert len(seen) == 5


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="log_burst"):
        Events(log_burst=0)
    with pytest.raises(ValueError, match="log_window"):
        Events(log_window=0)


def test_engine_logs_a_forged_flood_within_the_limit(records: Records) -> None:
    clock = FrozenClock(T0)
    seen: list[VerdictEvent] = []
    engine = Engine(
        keyring=KeyRing.generate(["user"]),
        store=MemoryStore(clock=clock),
        clock=clock,
        events=Events([seen.append], log_burst=20),
        guard=Guard(GuardPolicy(threshold=10**9, unknown_threshold=10**9)),
    )
    forged = KeyRing.generate(["user"])
    from donjon import TokenCodec

    token = TokenCodec(forged).issue(ttl=60)
    for _ in range(50):
        assert engine.load(token, client="203.0.113.9").verdict is Verdict.FORGED
    assert len(seen) == 50
    assert len(records.verdicts()) == 20
    clock.advance(1.5)
    engine.load(None, client="203.0.113.9")  # absent cookie: no record, but rolls the window
    engine.load(token, client="203.0.113.9")
    (summary,) = records.summaries()
    assert summary.donjon_suppressed["counts"] == {"forged": 30}  # type: ignore[attr-defined]


def test_closing_the_engine_writes_pending_summaries(records: Records) -> None:
    clock = FrozenClock(T0)
    engine = Engine(
        keyring=KeyRing.generate(["user"]),
        store=MemoryStore(clock=clock),
        clock=clock,
        events=Events(log_burst=2),
        guard=None,
    )
    for _ in range(5):
        engine.load("v1.bad", client="198.51.100.4")
    assert records.summaries() == []
    engine.close()
    (summary,) = records.summaries()
    assert summary.donjon_suppressed == {  # type: ignore[attr-defined]
        "client": "198.51.100.4",
        "counts": {"malformed": 3},
    }


def test_a_path_cannot_forge_a_log_line(records: Records) -> None:
    """The ASGI/WSGI path is percent-decoded: %0A arrives as a real newline."""
    engine = Engine(keyring=KeyRing.generate(), store=MemoryStore(), guard=None)
    forged = "/x\nsession verdict=valid reason= class=admin client=9.9.9.9 path=/admin"
    engine.load("garbage", client="1.2.3.4", path=forged + "\x1b[2J" + "a" * 500)
    (rec,) = records.verdicts()
    line = rec.getMessage()
    assert "\n" not in line and "\x1b" not in line
    assert "/x\\nsession verdict=valid" in line and "\\x1b[2J" in line
    assert len(line) < 400, "client-supplied text is cut"
    assert rec.donjon_event.path.startswith(forged)  # type: ignore[attr-defined]  # hooks: raw


def test_life_cycle_and_administration_are_audited(caplog: pytest.LogCaptureFixture) -> None:
    """ASVS 16.3.1: logins, logouts, regenerations, revocations and kills are logged."""
    caplog.set_level(logging.INFO, logger="donjon.audit")
    engine = Engine(keyring=KeyRing.generate(["user", "admin"]), store=MemoryStore(), guard=None)
    s = engine.load(None)
    s.login("alice\nforged line")
    token = engine.commit(s, presented=False).token
    s = engine.load(token)
    s.regenerate()
    token = engine.commit(s, presented=True).token
    s = engine.load(token)
    s.logout()
    engine.commit(s, presented=True)
    engine.revoke_user("bob")
    engine.kill("admin")
    lines = [r.getMessage() for r in caplog.records if r.name == "donjon.audit"]
    assert len(lines) == 5, lines
    assert lines[0].startswith("session login user=alice\\nforged line class=user ref=")
    assert lines[1].startswith("session id regenerated user=alice")
    assert lines[2].startswith("session ended (logout) ref=")
    assert lines[3] == "log out everywhere: user=bob sessions=0"
    assert lines[4].startswith("kill switch: every admin session")
    assert all(token is not None and token not in line for line in lines)
