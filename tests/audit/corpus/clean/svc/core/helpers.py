"""Look-alike helpers that are fine."""

import asyncio
import json
import time
from functools import lru_cache

import httpx
import redis
from redis.asyncio import Redis

redis_client = Redis()
http = httpx.AsyncClient()  # clean: a client built once at module level


def connect_with_retry(connect, attempts=5):  # clean: sync retry only run in a thread or at startup
    for attempt in range(attempts):
        try:
            return connect()
        except OSError:
            time.sleep(2**attempt)
    raise RuntimeError("no connection")


def format_rows(rows):  # clean: a sync helper that does no I/O
    return "\n".join(json.dumps(r) for r in rows)


def summarise_sync(chain, text):  # clean: sync invoke, only reached through to_thread
    return chain.invoke({"text": text})


async def redis_get_json(key):
    raw = await redis_client.get(key)
    return json.loads(raw) if raw else None


async def redis_set_json(key, value, ttl=600):
    await redis_client.set(key, json.dumps(value), ex=ttl)


async def acquire_lock(key):  # clean: get then set on a lock, nothing cached
    taken = await redis_client.get(key)
    if taken:
        return False
    await redis_client.set(key, "1", nx=True, ex=30)
    return True


@lru_cache
def sync_redis():  # clean: memoised factory
    return redis.Redis()


class Store:
    def __init__(self):  # clean: built once in the lifespan
        self.redis = redis.from_url("redis://localhost")


async def pace(items, send):  # clean: paced on purpose
    for item in items:
        await send(item)
        await asyncio.sleep(0.1)
