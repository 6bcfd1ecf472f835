"""Hand-written cache helpers, as services grow them."""

import json
import pickle

from redis.asyncio import Redis

redis_client = Redis()


async def redis_get_json(key):
    raw = await redis_client.get(key)
    return json.loads(raw) if raw else None


async def redis_set_json(key, value, ttl=600):
    await redis_client.set(key, json.dumps(value), ex=ttl)


class CacheHelper:
    def __init__(self, redis: Redis):
        self.redis = redis

    async def get_from_cache(self, key):
        raw = await self.redis.get(key)
        if raw is None:
            return None
        return pickle.loads(raw)

    async def save_to_cache(self, key, value):
        await self.redis.setex(key, 300, pickle.dumps(value))

    async def profile(self, user_id, load):
        cached = await self.get_from_cache(f"profile:v2:{user_id}")  # expect: SC401
        if cached:
            return cached
        value = await load(user_id)
        await self.save_to_cache(f"profile:v2:{user_id}", value)
        return value
