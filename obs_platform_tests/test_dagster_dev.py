"""The loop under a real `dagster dev` (webserver and daemon): a tuning job submitted before it starts is
reported by the job-status sensor, and declarative automation evaluates, gates and serves the model, with
nobody switching anything on. Then the UI in a real browser (Debian's Chromium, headless, driven by Playwright):
the whole lineage shown (group by group, then on one graph), the data group materialised by a click, the
evaluation report's table and confusion matrix found; screenshots are kept in `test-artifacts/ui/`."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest

from obs_platform.cli import sample_data_files
from obs_platform.serving import endpoint

from .browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS
from .conftest import free_port
from .test_data_assets import PROJECT_ROOT, load_defs, metadata

pytestmark = pytest.mark.slow

AFTER_THE_MODEL = ("model_calibration", "evaluation_report", "champion_model", "oss_endpoint")


def start_dagster_dev(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """`dagster dev` in its own session: started from a non-interactive shell it ignores SIGINT/SIGTERM sent to
    it alone, so it is stopped by signalling its whole process group."""
    port = free_port()
    dagster = Path(sys.executable).parent / "dagster"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, f"dagster dev exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop_dagster_dev(process)
    raise AssertionError(f"dagster dev did not answer in 180 s:\n{log.read_text()[-3000:]}")


def stop_dagster_dev(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def wait_for(instance: dg.DagsterInstance, key: str, log: Path, timeout: float = 420) -> None:
    deadline = time.monotonic() + timeout
    while instance.get_latest_materialization_event(dg.AssetKey(key)) is None:
        assert time.monotonic() < deadline, f"{key} was never materialised:\n{log.read_text()[-4000:]}"
        time.sleep(2)


def test_the_daemon_reports_the_job_and_automation_deploys_the_model(monkeypatch, storage, tiny_bert, tmp_path):
    for file in sample_data_files():
        storage.write_bytes(f"landing/{file.name}", file.read_bytes())
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    settings = {
        "DAGSTER_HOME": str(dagster_home),
        "OBS_PLATFORM_BASE_MODEL": str(tiny_bert),
        "OBS_PLATFORM_TRAIN_EPOCHS": "1",
        "OBS_PLATFORM_TRAIN_BATCH_SIZE": "64",
        "OBS_PLATFORM_TRAIN_MAX_LENGTH": "64",
        "OBS_PLATFORM_BASELINES": "majority,tfidf_logistic",
        "OBS_PLATFORM_EXTERNAL_EVAL": "",
        "OBS_PLATFORM_PROMOTION_FLOOR": "none",
        "OBS_PLATFORM_ENDPOINT_RUNTIME": "torch",
        "OBS_PLATFORM_SENSOR_INTERVAL_SECONDS": "5",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    defs = load_defs(monkeypatch, storage.root)  # also sets OBS_PLATFORM_HOME
    log = tmp_path / "dagster-dev.log"
    with dg.DagsterInstance.get() as instance:
        # Submitted from "the UI" before the daemon is up: the job trains while nothing waits for it.
        assert defs.resolve_job_def("train").execute_in_process(instance=instance).success
        job_id = metadata(instance, "oss_tuning_job")["job_id"]
        process, url = start_dagster_dev({**os.environ}, log)
        try:
            wait_for(instance, "oss_endpoint", log)
            drive_the_ui(url, instance, defs, tmp_path)
        finally:
            stop_dagster_dev(process)
            endpoint.stop(storage.root)
        reported = instance.get_latest_materialization_event(dg.AssetKey("tuned_oss_model"))
        assert reported.run_id == ""  # recorded by the sensor, not by a run
        assert metadata(instance, "tuned_oss_model")["job_id"] == job_id
        runs = {key: instance.get_latest_materialization_event(dg.AssetKey(key)).run_id for key in AFTER_THE_MODEL}
        [automation_run] = set(runs.values())  # one run for everything after the model
        tags = instance.get_run_by_id(automation_run).tags
        assert tags.get("dagster/sensor_name") == "model_automation", tags
        assert metadata(instance, "champion_model")["champion"] == "oss-classifier/v1"


def drive_the_ui(url: str, instance: dg.DagsterInstance, defs: dg.Definitions, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (Debian: apt-get install chromium); the daemon part passed")
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    graph = defs.resolve_asset_graph()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        page = browser.new_page()
        page.set_default_timeout(60_000)
        # Dagster's community prompt opens over the page a few seconds after the first load: dismissed whenever.
        prompt = page.get_by_role("button", name="Skip")
        page.add_locator_handler(page.get_by_text("Join the Dagster community"), lambda _: prompt.click())
        try:
            # The lineage: every asset, group by group, on its group's graph.
            for group in sorted({graph.get(key).group_name for key in graph.get_all_asset_keys()}):
                page.goto(f"{url}/locations/obs_platform/asset-groups/{group}")
                for key in graph.get_all_asset_keys():
                    if graph.get(key).group_name == group:
                        expect(page.get_by_text(key.to_user_string(), exact=True).first).to_be_visible()
                page.wait_for_timeout(3000)  # the nodes' latest events load after the graph: for the picture
                page.screenshot(path=str(SCREENSHOTS / f"group-{group}.png"))

            # The data group materialised from the UI: a click, then the run is waited for.
            before = {run.run_id for run in instance.get_runs()}
            page.goto(f"{url}/locations/obs_platform/asset-groups/data")
            page.get_by_role("button", name="Materialize all").click()
            launched = wait_for_new_run(instance, before)
            assert launched.is_success, f"the run launched from the UI ended {launched.status}"
            assert dg.AssetKey("training_splits") in (launched.asset_selection or set())

            # The evaluation report: its markdown summary (the comparison table) and the confusion matrix.
            page.goto(f"{url}/assets/evaluation_report")
            dialogs = [
                ("summary", "table", "evaluation-summary.png"),
                ("confusion_domain_plot", "img[src^='data:image/png']", "confusion.png"),
            ]
            for entry, shown, picture in dialogs:
                page.locator("tr", has_text=entry).first.get_by_text("[Show Markdown]").click()
                dialog = page.get_by_role("dialog").filter(has_text=entry)
                expect(dialog.locator(shown).first).to_be_visible()
                page.wait_for_timeout(1000)  # the dialog fades in: for the picture
                page.screenshot(path=str(SCREENSHOTS / picture))
                dialog.get_by_role("button", name="Close").click()
            draw_the_global_lineage(page, url)
        except Exception:
            page.screenshot(path=str(SCREENSHOTS / "failure.png"))
            raise
        finally:
            browser.close()


def draw_the_global_lineage(page, url: str) -> None:
    """The whole graph on one page, every group expanded, without the side bars (the README's picture)."""
    from playwright.sync_api import expect

    page.goto(f"{url}/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    page.get_by_text("Hide navigation").click()
    page.mouse.click(1200, 850, button="right")  # the graph's own menu
    page.get_by_role("menuitem", name="Expand all groups").click()
    page.reload()  # laid out again to fit, expanded
    expect(page.get_by_text("training_splits", exact=True).first).to_be_visible()
    page.get_by_placeholder("Jump to…").locator("xpath=following::button[1]").click()  # the asset list's toggle
    page.wait_for_timeout(3000)
    page.screenshot(path=str(SCREENSHOTS / "lineage.png"))


def wait_for_new_run(instance: dg.DagsterInstance, before: set[str], timeout: float = 300) -> dg.DagsterRun:
    """The run launched from the UI after `before`, once it has finished (one a sensor requested meanwhile, such as
    the warehouse's after the champion, is not it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [run for run in instance.get_runs() if run.run_id not in before and "dagster/sensor_name" not in run.tags]
        if new and new[0].is_finished:
            return new[0]
        time.sleep(2)
    raise AssertionError("no run launched from the UI finished in time")
