"""Resource configuration from the environment, the Dagster way.

Each `@dg.definitions` function reads `Settings.from_env()` first: every variable is validated when the code
location loads, and a bad one is named there with its value. A resource field whose variable is set is then
configured with `dg.EnvVar(variable)` (`dg.EnvVar.int` for a whole number), so the UI's resource page shows which
variable sets it and a run resolves it when it starts; a field whose variable is unset gets the setting's default.
Dagster's config takes environment variables for strings and whole numbers only: a number with a fraction, a switch
or a list keeps the validated value (the UI shows the value, and `Settings`' docstring names the variable).
"""

import os
from typing import Any

import dagster as dg

from obs_platform.settings import Settings


def default(field: str) -> Any:
    """A setting's default, for the resource field it configures: each default has one place, `Settings`."""
    return Settings.model_fields[field].get_default(call_default_factory=True)


def from_env(settings: Settings, field: str) -> Any:
    """The resource value of a setting: `dg.EnvVar` of its variable where that is set, else the value."""
    return env_or_value(Settings.variable(field), getattr(settings, field))


def env_or_value(variable: str, value: Any) -> Any:
    """`dg.EnvVar(variable)` where the variable is set to exactly the validated value (a string or a whole number),
    so what a run resolves is what was validated at load; otherwise the value itself (the variable unset or empty,
    a value `Settings` trimmed, or of a type Dagster's config cannot read from the environment)."""
    given = os.environ.get(variable)
    if not given or isinstance(value, bool) or given != str(value):
        return value
    if isinstance(value, str):
        return dg.EnvVar(variable)
    if isinstance(value, int):
        return dg.EnvVar.int(variable)
    return value
