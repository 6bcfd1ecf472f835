"""Routes and dependencies that build services per request."""

import asyncio
import time

from fastapi import APIRouter, Depends

from ..core.retry import VectorStore
from ..services.chat import ChatService

router = APIRouter()


def _retry_forever(fn):
    while True:
        try:
            return fn()
        except OSError:
            time.sleep(1)


def get_vector_store():
    return _retry_forever(lambda: VectorStore(lambda: None))


def get_chat_service():
    return ChatService(llm=None, session_factory=None)  # expect: SC701


class Reports:
    def __init__(self):
        self.chat = ChatService(llm=None, session_factory=None)  # expect: SC701


def get_reports():
    return Reports()


@router.get("/health")
async def health():
    store = get_vector_store()  # expect: SC301
    return {"ok": store is not None}


@router.post("/chat")
async def chat(service: ChatService = Depends(get_chat_service)):
    return {"ok": service is not None}


@router.get("/reports")
async def reports(r: Reports = Depends(get_reports)):
    return {"ok": r is not None}


@router.post("/chat2")
async def chat_direct(question: str):
    service = ChatService(llm=None, session_factory=None)  # expect: SC701
    return await service.interview([question])


@router.post("/events")
async def events(payload: dict):
    task = asyncio.create_task(handle(payload))  # expect: SC501
    task.add_done_callback(lambda t: t.exception())
    return {"queued": True}


@router.post("/events2")
async def events_loop(payloads: list[dict]):
    for payload in payloads:
        task = asyncio.ensure_future(handle(payload))  # expect: SC501
        task.add_done_callback(print)
    asyncio.create_task(handle({}))  # expect: SC501
    return {"queued": len(payloads)}


async def handle(payload):
    return payload
