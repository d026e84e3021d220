"""Configuration: the one typed settings registry and the defaults it starts from."""

from config.settings import (
    CONFIG_ENV,
    ConfigError,
    FlowerSettings,
    LoggingSettings,
    ProducerSettings,
    RedisSettings,
    RouteSettings,
    Settings,
    SourceSettings,
    WorkerSettings,
    load_settings,
)

__all__ = [
    "CONFIG_ENV",
    "ConfigError",
    "FlowerSettings",
    "LoggingSettings",
    "ProducerSettings",
    "RedisSettings",
    "RouteSettings",
    "Settings",
    "SourceSettings",
    "WorkerSettings",
    "load_settings",
]
