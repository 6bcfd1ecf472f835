"""Shared by the resilience tests: an injectable clock, the SDK's 503, a breakable TCP proxy."""

from __future__ import annotations

import asyncio

from google.genai.errors import ServerError


class Clock:
    """Monotonic seconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unavailable() -> ServerError:
    """What google-genai raises for a 503 (transient)."""
    return ServerError(503, {"error": {"code": 503, "message": "overloaded"}})


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of a real server, to break it on purpose.

    ``mode``: ``"pass"`` forwards bytes; ``"refuse"`` closes every connection and refuses new
    ones (a dead server); ``"blackhole"`` accepts connections and never answers (a hung server).
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.mode = "pass"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode != "pass":  # existing connections die (or go silent, for a black hole)
            for writer in list(self._writers):
                if mode == "refuse":
                    writer.transport.abort()
            for task in list(self._tasks):
                task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.transport.abort()
            return
        self._writers.add(writer)
        if self.mode == "blackhole":
            return  # keep it open, say nothing
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        for task in (
            asyncio.ensure_future(pipe(reader, up_writer)),
            asyncio.ensure_future(pipe(up_reader, writer)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
