import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import LogCapture

from sight_core.observability import (
    LogContextFilter,
    bind_log_context,
    get_log_context,
    install_log_context,
    log_context,
    structlog_processor,
    uninstall_log_context,
)


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(request_id)s %(project_id)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def handler() -> Iterator[ListHandler]:
    h = ListHandler()
    install_log_context(h)
    logger = logging.getLogger("sight_test")
    logger.addHandler(h)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield h
    logger.removeHandler(h)


def test_stdlib_records_carry_the_context(handler: ListHandler) -> None:
    log = logging.getLogger("sight_test.child")  # propagates to the handler's logger
    log.info("outside")
    with log_context(request_id="r1", project_id="p1"):
        log.info("inside")
        with log_context(project_id="p2", persona_id="x"):
            log.info("nested")
        log.info("back")
    log.info("after")
    assert handler.lines == [
        "- - outside",
        "r1 p1 inside",
        "r1 p2 nested",
        "r1 p1 back",
        "- - after",
    ]
    assert handler.records[2].persona_id == "x"  # type: ignore[attr-defined]
    assert not hasattr(handler.records[3], "persona_id")


def test_extra_wins_and_none_removes(handler: ListHandler) -> None:
    log = logging.getLogger("sight_test")
    with log_context(request_id="ctx", project_id="p"):
        log.info("a", extra={"request_id": "explicit"})
        with log_context(project_id=None):
            log.info("b")
    assert handler.lines == ["explicit p a", "ctx - b"]


def test_bind_lasts_until_the_enclosing_block_ends(handler: ListHandler) -> None:
    log = logging.getLogger("sight_test")
    with log_context(request_id="r"):
        bind_log_context(project_id="bound")
        log.info("a")
        assert get_log_context() == {"request_id": "r", "project_id": "bound"}
    log.info("b")
    assert handler.lines == ["r bound a", "- - b"]
    assert dict(get_log_context()) == {}


async def test_context_is_isolated_across_asyncio_tasks(handler: ListHandler) -> None:
    log = logging.getLogger("sight_test")
    gate = asyncio.Event()

    async def request(rid: str) -> None:
        with log_context(request_id=rid, project_id=f"p-{rid}"):
            log.info("start")
            await gate.wait()  # every task is inside its block at the same time
            bind_log_context(project_id=f"q-{rid}")
            await asyncio.sleep(0)
            log.info("end")

    tasks = [asyncio.create_task(request(f"r{i}")) for i in range(5)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
    for i in range(5):
        assert f"r{i} p-r{i} start" in handler.lines
        assert f"r{i} q-r{i} end" in handler.lines
    assert len(handler.lines) == 10


async def test_tasks_inherit_the_context_of_their_creator(handler: ListHandler) -> None:
    log = logging.getLogger("sight_test")

    async def child() -> None:
        bind_log_context(project_id="child-only")
        log.info("child")

    with log_context(request_id="parent"):
        await asyncio.create_task(child())
        log.info("parent")
    assert handler.lines == ["parent child-only child", "parent - parent"]


def test_install_on_root_handlers_is_idempotent() -> None:
    root = logging.getLogger()
    h = ListHandler()
    root.addHandler(h)
    try:
        install_log_context()
        install_log_context()
        assert sum(isinstance(f, LogContextFilter) for f in h.filters) == 1
        uninstall_log_context()
        assert not any(isinstance(f, LogContextFilter) for f in h.filters)
    finally:
        root.removeHandler(h)


def test_filter_custom_defaults() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    with log_context(request_id="r"):
        assert LogContextFilter(defaults={"tenant": "none"}).filter(record) is True
    assert (record.request_id, record.tenant) == ("r", "none")  # type: ignore[attr-defined]
    assert not hasattr(record, "project_id")


async def test_structlog_processor_adds_context_per_task() -> None:
    capture = LogCapture()
    log = structlog.wrap_logger(
        structlog.PrintLogger(), processors=[structlog_processor, capture], context_class=dict
    )

    async def request(rid: str) -> None:
        with log_context(request_id=rid):
            await asyncio.sleep(0)
            log.info("answer", persona=rid)

    await asyncio.gather(request("a"), request("b"))
    with log_context(request_id="c"):
        log.info("explicit", request_id="kept")
    by_persona = {e.get("persona"): e for e in capture.entries}
    assert by_persona["a"]["request_id"] == "a"
    assert by_persona["b"]["request_id"] == "b"
    assert capture.entries[-1]["request_id"] == "kept"


def test_importing_observability_imports_no_optional_library() -> None:
    code = (
        "import sys, sight_core.observability\n"
        "names = ('structlog', 'prometheus_client', 'opentelemetry')\n"
        "bad = [m for m in names if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


async def test_context_follows_work_sent_to_a_thread(handler: ListHandler) -> None:
    log = logging.getLogger("sight_test")
    with log_context(request_id="threaded"):
        await asyncio.to_thread(log.info, "in a worker thread")
    assert handler.lines == ["threaded - in a worker thread"]
