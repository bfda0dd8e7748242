"""Configuration read from the environment (and `.env`): one place, so every entry point agrees."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv

from obs_platform.taxonomy import default_taxonomy_path

DEFAULT_HOME = Path("~/.local/share/obs-platform/home").expanduser()
LANDING_PREFIX = "landing"


@dataclass(frozen=True)
class Settings:
    home: str
    taxonomy_path: str

    @classmethod
    def from_env(cls) -> Settings:
        """`OBS_PLATFORM_HOME` (folder or `gs://bucket/prefix`) and `OBS_PLATFORM_TAXONOMY` (a file)."""
        load_dotenv(override=False)
        home = os.environ.get("OBS_PLATFORM_HOME") or str(DEFAULT_HOME)
        taxonomy = os.environ.get("OBS_PLATFORM_TAXONOMY") or str(default_taxonomy_path())
        return cls(home=home, taxonomy_path=taxonomy)
