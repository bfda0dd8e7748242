"""A snapshot of the asset graph, as Dagster's own production project keeps one: every asset with its group,
kinds, dependencies, automation condition and checks, and the jobs, sensors and schedules, compared with
`snapshots/asset_graph.json`. A change to the graph is then a visible diff in review: when it is meant, write the
new snapshot with `OBS_PLATFORM_UPDATE_SNAPSHOTS=1 pytest obs_platform_tests/test_asset_graph.py` and commit it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from .test_data_assets import load_defs

SNAPSHOT = Path(__file__).with_name("snapshots") / "asset_graph.json"


def condition_text(condition: dg.AutomationCondition | None) -> str | None:
    """A named condition by its name (`eager`), a composed one as its tree; with what its dependency conditions
    ignore, which neither shows."""
    if condition is None:
        return None
    ignored = sorted({str(selection) for selection in _ignored(condition)})
    text = _tree(condition)
    return f"{text} ignoring {', '.join(ignored)}" if ignored else text


def _tree(condition: dg.AutomationCondition) -> str:
    children = ", ".join(_tree(child) for child in condition.children)
    return condition.get_label() or (f"{condition.name}({children})" if children else condition.name)


def _ignored(condition: dg.AutomationCondition) -> list[dg.AssetSelection]:
    own = getattr(condition, "ignore_selection", None)
    return [*([own] if own is not None else []), *(s for child in condition.children for s in _ignored(child))]


def graph_snapshot(defs: dg.Definitions) -> dict[str, Any]:
    graph = defs.resolve_asset_graph()
    checks: dict[str, list[str]] = {}
    for key in graph.asset_check_keys:
        spec = graph.get_check_spec(key)
        checks.setdefault(key.asset_key.to_user_string(), []).append(
            f"{key.name}{' (blocking)' if spec.blocking else ''}"
        )
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "executable": node.is_executable,
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "automation": condition_text(node.automation_condition),
            "checks": sorted(checks.get(key.to_user_string(), [])),
        }
    jobs = {}
    for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue  # Dagster's implicit asset job
        selected = job.asset_layer.executable_asset_keys if job.asset_layer else set()
        jobs[job.name] = sorted(key.to_user_string() for key in selected)
    sensors = {
        sensor.name: {
            "default_status": sensor.default_status.value,
            "jobs": sorted(target.job_name for target in sensor.targets if target.job_name),
        }
        for sensor in sorted(defs.sensors or [], key=lambda s: s.name)
    }
    schedules = {
        schedule.name: {
            "cron": schedule.cron_schedule,
            "job": schedule.job_name,
            "default_status": schedule.default_status.value,
        }
        for schedule in sorted(defs.schedules or [], key=lambda s: s.name)
    }
    return {"assets": assets, "jobs": jobs, "sensors": sensors, "schedules": schedules}


def test_the_asset_graph_matches_its_snapshot(monkeypatch, tmp_path):
    update = os.environ.get("OBS_PLATFORM_UPDATE_SNAPSHOTS") == "1"
    for name in list(os.environ):  # the local defaults, whatever this shell sets
        if name.startswith("OBS_PLATFORM_") and name != "OBS_PLATFORM_VENV":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no `.env` of a developer's checkout
    snapshot = graph_snapshot(load_defs(monkeypatch, tmp_path))
    text = json.dumps(snapshot, indent=2, sort_keys=True) + "\n"
    if update:
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text)
    expected = json.loads(SNAPSHOT.read_text())
    assert snapshot == expected, (
        "the asset graph changed; if that is meant, write the new snapshot with "
        "OBS_PLATFORM_UPDATE_SNAPSHOTS=1 and commit obs_platform_tests/snapshots/asset_graph.json"
    )
