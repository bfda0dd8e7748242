"""The project's boundaries, read from its source: data flows between assets as values, not as metadata read back
from the event log; serving and evaluation meet only in neutral modules."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "obs_platform"
EVENT_LOG = PACKAGE / "defs" / "event_log.py"
# Reading an event's metadata back: the event log's API, or the metadata of what it returns.
READS_METADATA = re.compile(
    r"get_latest_materialization_event|fetch_materializations|fetch_observations|get_event_records"
    r"|asset_materialization|asset_observation|\.metadata\.items\(\)"
)
# What may read the event log through the helper: the sensors, the job list, and an asset's own previous state.
EVENT_LOG_READERS = {"training/sensors.py", "training/job_log.py", "training/assets.py"}


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE / "defs").as_posix()


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_only_the_event_log_helper_reads_metadata_back_in_the_definitions():
    readers = {
        _relative(path): sorted(set(READS_METADATA.findall(path.read_text())))
        for path in sorted((PACKAGE / "defs").rglob("*.py"))
        if path != EVENT_LOG and READS_METADATA.search(path.read_text())
    }
    assert readers == {}, f"read it through obs_platform.defs.event_log, or take the value as an input: {readers}"


def test_assets_read_no_other_assets_metadata():
    users = {
        _relative(path)
        for path in (PACKAGE / "defs").rglob("*.py")
        if any(module.startswith("obs_platform.defs.event_log") for module in _imported_modules(path))
    }
    assert users <= EVENT_LOG_READERS, users - EVENT_LOG_READERS
    # The one asset module among them reads only its own previous materialisation (a tuning job's submission).
    source = (PACKAGE / "defs" / "training" / "assets.py").read_text()
    assert set(re.findall(r"event_log import ([\w, ]+)", source)) == {"own_previous_metadata"}


def test_serving_and_evaluation_do_not_import_each_other():
    def imports(package: str, other: str) -> dict[str, list[str]]:
        found = {}
        for path in sorted((PACKAGE / package).rglob("*.py")):
            # `from obs_platform import serving` counts as `obs_platform.serving`.
            crossing = sorted(m for m in _imported_modules(path) if m.startswith(f"obs_platform.{other}"))
            if crossing:
                found[path.name] = crossing
        return found

    assert imports("serving", "evaluation") == {}
    assert imports("evaluation", "serving") == {}
