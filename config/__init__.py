"""Configuration: the one typed settings registry and the defaults it starts from."""

from config.settings import (
    CONFIG_ENV,
    ConfigError,
    FlowerSettings,
    LoggingSettings,
    MetricsSettings,
    ProducerSettings,
    RedisSettings,
    RouteSettings,
    Settings,
    SourceSettings,
    WorkerSettings,
    load_settings,
    multiproc_dir,
)

__all__ = [
    "CONFIG_ENV",
    "ConfigError",
    "FlowerSettings",
    "LoggingSettings",
    "MetricsSettings",
    "ProducerSettings",
    "RedisSettings",
    "RouteSettings",
    "Settings",
    "SourceSettings",
    "WorkerSettings",
    "load_settings",
    "multiproc_dir",
]
