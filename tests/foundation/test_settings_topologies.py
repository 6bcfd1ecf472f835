"""``RedisSettings.mode``: standalone, sentinel and cluster, checked when settings load."""

from __future__ import annotations

import pytest

from sight_core.errors import ConfigurationError
from sight_core.settings import RedisSettings, SightSettings


def _load(monkeypatch: pytest.MonkeyPatch, **env: str) -> SightSettings:
    for name, value in env.items():
        monkeypatch.setenv(f"SIGHT_REDIS__{name.upper()}", value)
    return SightSettings(_env_file=None)


def test_standalone_is_the_default() -> None:
    assert RedisSettings().mode == "standalone"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"mode": "sentinel"}, "mode='sentinel' needs sentinels and sentinel_master"),
        ({"mode": "sentinel", "sentinels": "a:1"}, "needs sentinel_master"),
        (
            {"mode": "sentinel", "sentinels": "a:port", "sentinel_master": "m"},
            "'a:port' is not host:port",
        ),
        ({"sentinels": "a:1"}, "sentinels apply to mode='sentinel' only (got mode='standalone')"),
        ({"mode": "cluster", "sentinel_master": "m"}, "sentinel_master apply to mode='sentinel'"),
        ({"cluster_nodes": "a:1"}, "cluster_nodes apply to mode='cluster' only"),
        ({"mode": "cluster", "url": "redis://h:6379/2"}, "database 0 only, got /2"),
        ({"mode": "cluster", "url": "unix:///tmp/r.sock"}, "needs a TCP url"),
        ({"mode": "clustered"}, "mode"),
    ],
)
def test_bad_topology_settings_fail_at_load_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigurationError) as err:
        _load(monkeypatch, **env)
    assert needle in str(err.value)


def test_good_topologies_load(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _load(
        monkeypatch,
        mode="sentinel",
        sentinels="10.0.0.5:26379,[::1]:26380",
        sentinel_master="mymaster",
    )
    assert s.redis.addresses("sentinels") == [("10.0.0.5", 26379), ("::1", 26380)]
    assert s.redis.sentinel_master == "mymaster"
    c = RedisSettings(mode="cluster", url="redis://h:7000", cluster_nodes='["h2:7001"]')
    assert c.addresses("cluster_nodes") == [("h2", 7001)]
