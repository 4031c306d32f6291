"""Brokers: where offsets, history and cluster-wide presence live.

The hub keeps only what one worker needs (its connections and what they subscribe to) and asks a
broker for the rest. `LocalBroker` keeps it in this process, for one worker; `RedisBroker` keeps it
in Redis so that any number of workers on any number of machines act as one server. Both answer
the same calls, and the same tests run against both.
"""

from __future__ import annotations

from switchboard_server.brokers.base import Broker, BrokerUnavailable, History
from switchboard_server.core.config import Config
from switchboard_server.core.namespaces import Namespaces


def make_broker(config: Config, namespaces: Namespaces | None = None) -> Broker:
    """The broker the configuration asks for: Redis when SWITCHBOARD_REDIS_URL is set (a Redis Cluster
    for a `redis+cluster://` URL); each channel's history size and TTL come from its namespace."""
    if config.redis_url.startswith("redis+cluster://"):
        from switchboard_server.brokers.redis_cluster import RedisClusterBroker

        return RedisClusterBroker(config, namespaces)
    if config.redis_url:
        from switchboard_server.brokers.redis import RedisBroker  # imported only when used: redis-py is optional

        return RedisBroker(config, namespaces)
    from switchboard_server.brokers.local import LocalBroker

    return LocalBroker(config, namespaces)


__all__ = ["Broker", "BrokerUnavailable", "History", "make_broker"]
