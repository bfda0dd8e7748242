"""The code location: everything under `obs_platform/defs/` is loaded, concern by concern."""

from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).resolve())
