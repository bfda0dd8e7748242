"""Configuration read from the environment and `.env` through pydantic-settings, and the one error that names every
variable whose value cannot be used, with that value.

`EnvironmentSettings` is the base of every reader: `obs_platform.settings.Settings` (the platform's
`OBS_PLATFORM_*` variables), the prices of `obs_platform.cloud.costs` and the Vertex variables of
`obs_platform.cloud.vertex`. A variable set in the environment wins over the same line in `.env` (in the working
directory: the CLI's, `dagster dev`'s, the code server's); an empty value counts as unset. The Dagster resources
are configured from these readers in `obs_platform/defs/config.py`; nothing here imports Dagster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self

from pydantic import Field, ValidationError, create_model
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

ENV_FILE = ".env"


class SettingsError(ValueError):
    """Variables whose values cannot be used: every one of them, each named with its value, in one message."""


class EnvironmentSettings(BaseSettings):
    """Settings read from the environment, then `.env`: typed and validated once, immutable after."""

    model_config = SettingsConfigDict(
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        str_strip_whitespace=True,
    )

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable that sets a field: its alias, or the prefix and its name."""
        alias = cls.model_fields[field].validation_alias
        return alias if isinstance(alias, str) else (cls.model_config.get("env_prefix", "") + field).upper()

    @classmethod
    def read(cls, error: Callable[[str], ValueError] = SettingsError) -> Self:
        """The settings of this environment, or `error(message)` naming every variable that is wrong and its
        value."""
        try:
            return cls()
        except ValidationError as exc:
            raise error(describe(cls, exc.errors())) from None
        except SourceError as exc:  # a value a source could not decode before validation
            raise error(str(exc)) from None


def environment_model(
    name: str, variables: Mapping[str, str], types: Mapping[str, Any], required: Iterable[str] = ()
) -> type[EnvironmentSettings]:
    """A reader of `variables` (field name: variable), each field of its type in `types` and None where its
    variable is unset (except the `required` ones): a dataclass built from what was set keeps its own defaults."""
    required = set(required)
    fields: dict[str, Any] = {
        field: (types[field], Field(validation_alias=variable))
        if field in required
        else (types[field] | None, Field(None, validation_alias=variable))
        for field, variable in variables.items()
    }
    return create_model(name, __base__=EnvironmentSettings, **fields)


def describe(model: type[EnvironmentSettings], errors: Iterable[ErrorDetails]) -> str:
    """One line for all of pydantic's errors: `VARIABLE='value' what is wrong`, joined by `; `."""
    return "; ".join(_problem(model, error) for error in errors)


def _problem(model: type[EnvironmentSettings], error: ErrorDetails) -> str:
    location, context = error["loc"], error.get("ctx", {})
    key = str(location[0]) if location else ""
    variable = model.variable(key) if key in model.model_fields else key
    if error["type"] == "missing":
        return f"{variable} is not set"
    if error["type"] == "value_error" and isinstance(context.get("error"), SettingsError):
        return str(context["error"])  # a nested reader's own message, its variables already named
    # An item of a list variable (OBS_PLATFORM_BASELINES=a,b) is named as the item.
    subject = f"{variable} item {error['input']!r}" if len(location) > 1 else f"{variable}={error['input']!r}"
    return f"{subject} {_what_is_wrong(error)}"


def _what_is_wrong(error: ErrorDetails) -> str:
    kind, context = error["type"], error.get("ctx", {})
    if kind == "literal_error":
        return f"is not {context['expected']}"
    if kind == "float_parsing":
        return "is not a number"
    if kind in ("int_parsing", "int_from_float"):
        return "is not a whole number"
    if kind == "bool_parsing":
        return "is not on or off (on/off, true/false, yes/no, 1/0)"
    if kind == "greater_than_equal":
        return "is negative" if context["ge"] == 0 else f"is below {context['ge']}"
    if kind == "greater_than":
        return "is not positive" if context["gt"] == 0 else f"is not above {context['gt']}"
    if kind == "less_than_equal":
        return f"is above {context['le']}"
    if kind == "value_error":
        return str(context["error"])
    return f"is refused: {error['msg']}"
