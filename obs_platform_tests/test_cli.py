import re
from pathlib import Path

from typer.testing import CliRunner

from obs_platform.cli import app, sample_data_files

runner = CliRunner()


def test_init_lands_the_sample_corpus(monkeypatch, tmp_path):
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path / "home"))
    result = runner.invoke(app, ["init", "--with-sample-data"])
    assert result.exit_code == 0, result.output
    landed = sorted(p.name for p in (tmp_path / "home" / "landing").iterdir() if not p.name.startswith("."))
    assert landed == sorted(p.name for p in sample_data_files())
    assert f"storage root: {tmp_path / 'home'}" in result.output


def test_init_without_data_only_creates_the_root(monkeypatch, tmp_path):
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path / "home"))
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert [p.name for p in (tmp_path / "home" / "landing").iterdir()] == [".keep"]


def test_run_without_landed_data_fails_with_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    runner.invoke(app, ["init"])
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 1
    assert "run `obs-platform init --with-sample-data` first" in result.output
    assert "Traceback" not in result.output


def test_every_command_has_help():
    commands = ([], ["init"], ["run"], ["evaluate"], ["classify"], ["jobs"], ["endpoint"], ["endpoint", "start"],
                ["endpoint", "stop"], ["endpoint", "status"])  # fmt: skip
    for command in commands:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, command


def test_evaluate_without_a_model_fails_with_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    result = runner.invoke(app, ["evaluate"])
    assert result.exit_code == 1 and "no model to evaluate yet" in result.output and "Traceback" not in result.output


def test_the_env_example_lists_every_variable_the_code_reads():
    """`.env.example` documents every setting: each OBS_PLATFORM_* name in the code appears in it."""
    root = Path(__file__).resolve().parent.parent
    code = "\n".join(
        p.read_text() for folder in ("obs_platform", "trainer_container") for p in (root / folder).rglob("*.py")
    )
    names = set(re.findall(r"OBS_PLATFORM_[A-Z0-9_]*[A-Z0-9]", code))
    names |= {f"OBS_PLATFORM_VERTEX_{key}" for key in ("PROJECT", "REGION", "BUCKET", "TRAINER_IMAGE")}
    example = (root / ".env.example").read_text()
    assert sorted(name for name in names if name not in example) == []
