"""A fault-injection TCP proxy for tests: slow, black-holed, reset or refusing servers.

:class:`FaultProxy` listens on ``127.0.0.1`` (a free port) and forwards every connection to one
upstream ``host:port``. It runs on its own event loop in a background thread, so it serves
synchronous tests, ``pytest-asyncio`` tests and any client library (redis-py, asyncpg, the
neo4j driver) alike, and a test can inject a fault while its own loop is blocked in a call.

Every control is a plain synchronous method that takes effect before it returns:

==========================  ==================================================================
``set_latency(s, jitter)``  every chunk is delayed ``s`` plus ``uniform(-jitter, +jitter)``
                            seconds (never negative), per direction or both; order is kept
``blackhole()``             bytes in both directions are discarded; new connections are
                            accepted but never answered (a hung server)
``pause()`` / ``resume()``  bytes are held, not lost; ``resume()`` delivers them in order
``reset()``                 every live connection is closed with a TCP RST (``SO_LINGER 0``)
``drop(which)``             one live connection is reset (newest by default), e.g. a pub/sub one
``refuse()``                the listening socket closes: new connects get ``ECONNREFUSED``
``restore()``               healthy again: no latency, no black hole, not paused, listening
==========================  ==================================================================

Connections that lost bytes to a black hole are out of step with their server; ``restore()``
resets them so clients see a clean connection error instead of a desynchronised stream.
``accepted`` counts connections accepted since start, ``live`` those still open.

Costs: one extra loopback hop per chunk (tens of microseconds) when healthy; one thread and
one event loop per proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = ["ConnectionInfo", "FaultProxy"]

Direction = Literal["both", "upstream", "downstream"]
"""``upstream`` = client to server, ``downstream`` = server to client."""

_T = TypeVar("_T")
_CHUNK = 64 * 1024
_CONTROL_TIMEOUT = 10.0


@dataclass(frozen=True)
class ConnectionInfo:
    """A snapshot of one proxied connection.

    ``number`` is its position in accept order (1 = first accepted by this proxy);
    ``client_port`` is the client's local port as the proxy saw it.
    """

    number: int
    client_port: int
    accepted_at: float
    bytes_upstream: int
    bytes_downstream: int


class _Connection:
    """One client connection and its upstream twin; owned by the proxy's loop."""

    def __init__(self, number: int, client: asyncio.StreamWriter) -> None:
        self.number = number
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        peer = client.get_extra_info("peername")
        self.client_port = int(peer[1]) if peer else 0
        self.accepted_at = time.monotonic()
        self.bytes = {"upstream": 0, "downstream": 0}
        self.lost_bytes = False
        self.tasks: list[asyncio.Task[None]] = []

    def info(self) -> ConnectionInfo:
        return ConnectionInfo(
            number=self.number,
            client_port=self.client_port,
            accepted_at=self.accepted_at,
            bytes_upstream=self.bytes["upstream"],
            bytes_downstream=self.bytes["downstream"],
        )

    def abort(self) -> None:
        """Close both sides with an RST (``SO_LINGER`` 0) and stop forwarding."""
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class _TrackedProtocol(asyncio.StreamReaderProtocol):
    """``asyncio.start_server``'s protocol, remembering its transport so close() can end it."""

    def __init__(
        self,
        transports: weakref.WeakSet[asyncio.Transport],
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(asyncio.StreamReader(limit=_CHUNK, loop=loop), handler, loop=loop)
        self._transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            self._transports.add(transport)
        super().connection_made(transport)


class FaultProxy:
    """A TCP proxy in front of one server that injects latency, black holes, resets and refusals.

    Create it with the upstream port (and host), use it as a context manager or call
    :meth:`start` / :meth:`close`, and point the client at :attr:`port` (or at
    :meth:`url_for` of the server's URL). Every control method is thread-safe and has taken
    effect when it returns. Raises ``OSError`` from :meth:`start` when it cannot listen.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = "127.0.0.1"
        self.port = 0
        self.accepted = 0
        self._latency: dict[str, tuple[float, float]] = {
            "upstream": (0.0, 0.0),
            "downstream": (0.0, 0.0),
        }
        self._blackholed = False
        self._flowing: asyncio.Event | None = None  # set = not paused
        self._healthy: asyncio.Event | None = None  # set = not black-holed
        self._connections: dict[int, _Connection] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._transports: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()
        self._closing = False
        self._numbers = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._random = random.Random()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start the loop thread and listen; returns ``self``. Idempotent."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"fault-proxy-{id(self):x}", daemon=True)
        self._thread.start()
        ready.wait()
        try:
            self._call(self._start())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop listening, close every connection and stop the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            with contextlib.suppress(Exception):
                self._call(self._shutdown())
            loop.call_soon_threadsafe(loop.stop)
        thread.join(_CONTROL_TIMEOUT)
        if not loop.is_running():
            loop.close()
        self._loop = None
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- addressing -----------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` clients should connect to."""
        return (self.host, self.port)

    def url_for(self, url: str) -> str:
        """``url`` with its ``host:port`` replaced by the proxy's (user, path, query kept)."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{self.host}:{self.port}" if userinfo else f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # -- counters -------------------------------------------------------------------------

    @property
    def live(self) -> int:
        """Connections open right now."""
        return len(self._connections)

    def connections(self) -> list[ConnectionInfo]:
        """Snapshots of the live connections, oldest first."""
        return self._call(self._snapshot())

    # -- controls -------------------------------------------------------------------------

    def set_latency(
        self, seconds: float, jitter: float = 0.0, *, direction: Direction = "both"
    ) -> None:
        """Delay each forwarded chunk by ``seconds`` ± ``jitter`` (uniform, floored at 0).

        ``direction``: ``"upstream"`` (client to server), ``"downstream"`` or ``"both"``.
        Raises ``ValueError`` for a negative delay or jitter or an unknown direction.
        """
        if seconds < 0 or jitter < 0:
            raise ValueError(
                f"latency and jitter must be >= 0, got seconds={seconds!r}, jitter={jitter!r}"
            )
        if direction not in ("both", "upstream", "downstream"):
            raise ValueError(
                f"direction must be 'both', 'upstream' or 'downstream', got {direction!r}"
            )
        for side in ("upstream", "downstream"):
            if direction in ("both", side):
                self._latency[side] = (float(seconds), float(jitter))

    def blackhole(self) -> None:
        """Forward nothing: bytes are discarded, new connections accepted and never answered."""
        self._call(self._set_blackhole(True))

    def pause(self) -> None:
        """Hold all bytes (none lost) until :meth:`resume` or :meth:`restore`."""
        self._call(self._set_flowing(False))

    def resume(self) -> None:
        """Deliver the bytes held since :meth:`pause`, in order, and keep forwarding."""
        self._call(self._set_flowing(True))

    def reset(self) -> int:
        """Reset (TCP RST) every live connection; returns how many were reset."""
        return self._call(self._reset_where(lambda _: True))

    def drop(self, which: int | Callable[[ConnectionInfo], bool] = -1) -> ConnectionInfo:
        """Reset one live connection and return its snapshot.

        ``which`` is an index into :meth:`connections` (``-1``, the default, is the newest;
        ``0`` the oldest) or a predicate (the newest match is dropped). Raises ``LookupError``
        when no live connection matches.
        """
        return self._call(self._drop(which))

    def refuse(self) -> None:
        """Close the listening socket: new connects fail with ``ECONNREFUSED``.

        Live connections are untouched; :meth:`restore` listens again on the same port.
        """
        self._call(self._stop_listening())

    def restore(self) -> None:
        """Back to healthy: no latency, not black-holed, not paused, listening.

        Connections that lost bytes to a black hole are reset.
        """
        self._latency = {"upstream": (0.0, 0.0), "downstream": (0.0, 0.0)}
        self._call(self._restore())

    # -- loop side ------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("FaultProxy is not started: call start() or use `with`")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(_CONTROL_TIMEOUT)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._healthy = asyncio.Event()
        self._healthy.set()
        await self._listen()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            return _TrackedProtocol(self._transports, self._handle, loop)

        self._server = await loop.create_server(protocol, self.host, self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # Stop accepting first and let accepts already under way finish while the server is
        # open: on Python 3.11 an accept that completes after Server.close() leaks its socket.
        loop = asyncio.get_running_loop()
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())
        for _ in range(5):
            await asyncio.sleep(0)
        server.close()

    async def _shutdown(self) -> None:
        self._closing = True
        await self._stop_listening()
        current = asyncio.current_task()
        for _ in range(100):  # until accepts in progress, handlers and pipes have all ended
            for conn in list(self._connections.values()):
                conn.abort()
            self._connections.clear()
            others = [task for task in asyncio.all_tasks() if task is not current]
            if not others:
                break
            for task in self._handlers:
                task.cancel()
            await asyncio.wait(others, timeout=0.05)
        for transport in list(self._transports):  # accepted, but close() came before its handler
            transport.abort()
        for _ in range(3):  # let aborted transports run connection_lost and close sockets
            await asyncio.sleep(0)

    async def _snapshot(self) -> list[ConnectionInfo]:
        return [conn.info() for conn in self._connections.values()]

    async def _set_blackhole(self, on: bool) -> None:
        assert self._healthy is not None
        self._blackholed = on
        if on:
            self._healthy.clear()
        else:
            self._healthy.set()

    async def _set_flowing(self, on: bool) -> None:
        assert self._flowing is not None
        if on:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _reset_where(self, match: Callable[[_Connection], bool]) -> int:
        doomed = [conn for conn in self._connections.values() if match(conn)]
        for conn in doomed:
            self._connections.pop(conn.number, None)
            conn.abort()
        return len(doomed)

    async def _drop(self, which: int | Callable[[ConnectionInfo], bool]) -> ConnectionInfo:
        live = list(self._connections.values())
        if callable(which):
            matches = [conn for conn in live if which(conn.info())]
            if not matches:
                raise LookupError("no live connection matches the predicate")
            conn = matches[-1]
        else:
            try:
                conn = live[which]
            except IndexError:
                raise LookupError(
                    f"no live connection at index {which} ({len(live)} live)"
                ) from None
        info = conn.info()
        await self._reset_where(lambda c: c is conn)
        return info

    async def _restore(self) -> None:
        await self._reset_where(lambda conn: conn.lost_bytes)
        await self._set_blackhole(False)
        await self._set_flowing(True)
        await self._listen()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._healthy is not None
        conn = _Connection(next(self._numbers), writer)
        self.accepted += 1
        if self._closing:
            conn.abort()
            return
        self._connections[conn.number] = conn
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._healthy.wait()  # a black hole answers nothing, not even the connect
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
            except OSError:
                return
            conn.upstream = up_writer
            conn.tasks = [
                asyncio.create_task(self._pipe(conn, reader, up_writer, "upstream")),
                asyncio.create_task(self._pipe(conn, up_reader, writer, "downstream")),
            ]
            await asyncio.wait(conn.tasks)
        except asyncio.CancelledError:
            return  # only close() cancels a handler; the connection is aborted below
        finally:
            self._handlers.discard(handler)
            if self._connections.pop(conn.number, None) is not None:
                conn.abort()

    async def _pipe(
        self,
        conn: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        side: str,
    ) -> None:
        """Forward ``reader`` to ``writer`` through a queue that applies the current faults."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        last_due = 0.0

        async def deliver() -> None:
            assert self._flowing is not None
            while True:
                due, chunk = await queue.get()
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._flowing.wait()
                if not chunk:
                    if writer.can_write_eof():
                        writer.write_eof()
                    else:
                        writer.close()
                    return
                if self._blackholed:
                    conn.lost_bytes = True
                    continue
                writer.write(chunk)
                await writer.drain()
                conn.bytes[side] += len(chunk)

        delivery = asyncio.create_task(deliver())
        try:
            while True:
                try:
                    chunk = await reader.read(_CHUNK)
                except OSError:
                    chunk = b""
                if chunk and self._blackholed:
                    conn.lost_bytes = True
                    continue
                seconds, jitter = self._latency[side]
                delay = seconds + (self._random.uniform(-jitter, jitter) if jitter else 0.0)
                last_due = max(last_due, time.monotonic() + max(delay, 0.0))
                queue.put_nowait((last_due, chunk))
                if not chunk:
                    break
            await delivery
        except (OSError, RuntimeError):
            conn.abort()  # one side broke: the other side sees a reset, as through a router
        finally:
            delivery.cancel()
