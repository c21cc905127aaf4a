"""Typed, validated experiment configuration.

One YAML file describes one experiment. It is read with ``yaml.safe_load`` (nothing in a config
can import or execute code), merged with ``key=value`` overrides, and validated by pydantic
(:mod:`adaptkd.config.schema`) and against the registries (:mod:`adaptkd.config.validate`)
before anything runs. Every error is a :class:`~adaptkd.errors.ConfigError` whose message names
the field, the value and what was expected.
"""

from adaptkd.config.schema import (
    CUSTOM_ARCH,
    BalanceConfig,
    Config,
    DataConfig,
    MethodConfig,
    NetConfig,
    OptimConfig,
    RunConfig,
    TeachersCacheConfig,
    apply_overrides,
    config_to_dict,
    format_validation_error,
    merge_config,
    read_yaml,
)
from adaptkd.config.validate import check_config, load_config, roster_of
from adaptkd.errors import ConfigError

__all__ = [
    "ConfigError",
    "Config",
    "DataConfig",
    "NetConfig",
    "MethodConfig",
    "BalanceConfig",
    "OptimConfig",
    "RunConfig",
    "TeachersCacheConfig",
    "CUSTOM_ARCH",
    "load_config",
    "check_config",
    "roster_of",
    "apply_overrides",
    "merge_config",
    "read_yaml",
    "format_validation_error",
    "config_to_dict",
]
