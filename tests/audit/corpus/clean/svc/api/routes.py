"""Routes and dependencies that reuse what the lifespan built."""

import asyncio
from contextlib import asynccontextmanager
from functools import lru_cache

from fastapi import APIRouter, Depends, FastAPI, Request

from ..core.helpers import Store, connect_with_retry
from ..services.chat import ChatService, get_store

router = APIRouter()
_service = None


@asynccontextmanager
async def lifespan(app: FastAPI):  # clean: blocking retry once at startup
    app.state.store = connect_with_retry(lambda: Store())
    app.state.chat = ChatService(session_factory=None)
    yield


def get_chat_service(request: Request):  # clean: service from app.state
    return request.app.state.chat


@lru_cache
def get_cached_service():  # clean: memoised dependency building the service
    return ChatService(session_factory=None)


def get_singleton():  # clean: module-level singleton
    global _service
    if _service is None:
        _service = Store()
    return _service


@router.get("/health")
async def health(request: Request):  # clean: uses what the lifespan opened
    return {"ok": request.app.state.store is not None}


@router.get("/health/deep")
async def deep_health(connect=None):  # clean: blocking retry in a thread
    store = await asyncio.to_thread(connect_with_retry, connect)
    return {"ok": store is not None}


@router.post("/chat")
async def chat(service: ChatService = Depends(get_chat_service)):  # clean
    return {"ok": service is not None}


@router.post("/chat/cached")
async def chat_cached(service: ChatService = Depends(get_cached_service)):  # clean
    return {"ok": service is not None}


@router.get("/store")
async def store(s: Store = Depends(get_store), t: Store = Depends(get_singleton)):  # clean
    return {"ok": s is t}
