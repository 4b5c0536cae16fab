"""The leaderboards workflow (.github/workflows/leaderboards.yml) and scripts/regenerate-leaderboards.

The workflow is linted with actionlint and its shape read back as YAML; the script is run with a fake
`bench` (fast: what it runs, in which order, and that a failure puts the folder back) and with the
real one on a tiny GBSG2 results file inside a throwaway git repository (what it commits).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "leaderboards.yml"
SCRIPT = REPO / "scripts" / "regenerate-leaderboards"
VENV_BIN = Path(sys.executable).parent
BENCH = VENV_BIN / "bench"
FEATURE_CACHE = "~/.cache/prognosis-bench/cache"
COMMIT_MESSAGE = "Regenerate leaderboards [skip ci]"

# Cheap enough for a test (about ten seconds): one clinical Cox row on a built-in tabular dataset.
TINY = "bench run --dataset veterans --extractor clinical --model coxph --bootstrap 20 --seed 0 --results leaderboards/tiny.json"


# --- the workflow -------------------------------------------------------------------------------------------


def actionlint() -> str:
    found = shutil.which("actionlint", path=str(VENV_BIN)) or shutil.which("actionlint")
    if found is None:
        pytest.fail("no actionlint: it comes with the test extra (pip install -e '.[test]')")
    return found


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint(), "-oneline", "-no-color", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def runs_of(job: dict) -> list[str]:
    """The job's `run:` commands, in order."""
    return [step["run"] for step in job["steps"] if "run" in step]


def step_using(job: dict, action: str) -> dict:
    """The job's one step that uses `action` (any version)."""
    [step] = [s for s in job["steps"] if s.get("uses", "").startswith(f"{action}@")]
    return step


def test_actionlint_finds_nothing() -> None:
    result = lint(WORKFLOW)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize(
    ("good", "bad", "complaint"),
    [
        ("runs-on: ubuntu-latest", "runs-onn: ubuntu-latest", 'unexpected key "runs-onn"'),
        ("group: leaderboards-regenerate", "group: ${{ github.nope( }}", "[expression]"),
    ],
)
def test_actionlint_catches_a_broken_copy(tmp_path: Path, good: str, bad: str, complaint: str) -> None:
    text = WORKFLOW.read_text()
    assert good in text
    broken = tmp_path / "broken.yml"
    broken.write_text(text.replace(good, bad, 1))
    result = lint(broken)
    assert result.returncode != 0
    assert "broken.yml" in result.stdout and complaint in result.stdout, result.stdout + result.stderr


def test_triggers(workflow: dict) -> None:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert set(on) == {"pull_request", "push", "workflow_dispatch", "schedule"}
    assert on["push"]["branches"] == ["**"]
    [schedule] = on["schedule"]
    _minute, _hour, day_of_month, month, day_of_week = schedule["cron"].split()
    assert (day_of_month, month) == ("*", "*") and day_of_week.isdigit(), "weekly: one day of the week"


def test_least_permissions_and_one_regeneration_at_a_time(workflow: dict) -> None:
    assert workflow["permissions"] == {}
    assert workflow["concurrency"] == {"group": "leaderboards-${{ github.ref }}", "cancel-in-progress": False}
    jobs = workflow["jobs"]
    assert jobs["test"]["permissions"] == {"contents": "read"}
    assert jobs["regenerate"]["permissions"] == {"contents": "write"}
    assert jobs["comment"]["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert jobs["regenerate"]["concurrency"]["cancel-in-progress"] is False


def test_test_job(workflow: dict) -> None:
    job = workflow["jobs"]["test"]
    assert "pull_request" in job["if"] and "push" in job["if"]
    runs = runs_of(job)
    python = step_using(job, "actions/setup-python")["with"]
    assert python == {"python-version": "3.11", "cache": "pip", "cache-dependency-path": "pyproject.toml"}
    assert any("apt-get install -y chromium" in run for run in runs)
    assert runs[-2:] == ["make test", ".venv/bin/bench leaderboard --check-all"]


def test_regenerate_job(workflow: dict) -> None:
    job = workflow["jobs"]["regenerate"]
    assert job["needs"] == "test"
    for event in ("workflow_dispatch", "schedule", "push", "default_branch"):
        assert event in job["if"]
    runs = runs_of(job)
    cache = step_using(job, "actions/cache")
    assert cache["with"]["path"] == FEATURE_CACHE
    for hashed in ("feature_extractors/**", "configs/**", "bench/data/**", "pyproject.toml"):
        assert hashed in cache["with"]["key"]
    assert cache["with"]["restore-keys"].strip() == "${{ runner.os }}-features-"
    # Pushes regenerate only when they touch one of these folders.
    assert any("git diff" in run and "configs feature_extractors survival_models bench" in run for run in runs)
    work = [run for run in runs if "git diff" not in run]
    assert "make install" in work
    assert any(run.splitlines()[-1] == "scripts/regenerate-leaderboards --commit" for run in work)
    assert any(run.startswith("git push") for run in work)
    assert f'COMMIT_MESSAGE="{COMMIT_MESSAGE}"' in SCRIPT.read_text()


def test_comment_job(workflow: dict) -> None:
    job = workflow["jobs"]["comment"]
    assert "pull_request" in job["if"]
    runs = runs_of(job)
    assert "scripts/regenerate-leaderboards" in runs  # never --commit on a pull request
    assert any(run.startswith("git diff -- 'leaderboards/*.md'") for run in runs)
    body = step_using(job, "actions/github-script")["with"]["script"]
    assert "<!-- prognosis-bench-leaderboard-diff -->" in body
    assert "updateComment" in body and "createComment" in body


def test_steps_call_the_repository_not_inline_logic(workflow: dict) -> None:
    for name, job in workflow["jobs"].items():
        for run in runs_of(job):
            assert len(run.strip().splitlines()) <= 5, f"{name}: a long inline step belongs in a script:\n{run}"


# --- the script, with a fake bench ------------------------------------------------------------------------

FAKE_BENCH = """#!/usr/bin/env bash
# Logs its arguments, one bracketed word each; "--explode" scribbles over the pages and fails.
printf '[%s]' "$@" >> "$FAKE_BENCH_LOG"; echo >> "$FAKE_BENCH_LOG"
for arg in "$@"; do
    if [ "$arg" = --explode ]; then
        echo scribbled > leaderboards/a.md; echo new > leaderboards/new.svg; echo "boom" >&2; exit 3
    fi
done
"""


def environment(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHON=sys.executable, BENCH_CACHE_DIR=str(tmp / "cache"), FAKE_BENCH_LOG=str(tmp / "log"))
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")  # no signing hooks or aliases of the host
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def regenerate(cwd: Path, *args: str, bench: Path = BENCH) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--bench", str(bench), *args],
        cwd=cwd, env=environment(cwd.parent), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def write_results(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.json").write_text(json.dumps({"source": source}, indent=2) + "\n")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    """A work tree with a leaderboards folder and a fake bench beside it (at tmp_path/bench)."""
    bench = tmp_path / "bench"
    bench.write_text(FAKE_BENCH)
    bench.chmod(0o755)
    (tmp_path / "log").write_text("")
    work = tmp_path / "work"
    (work / "leaderboards").mkdir(parents=True)
    write_results(work / "leaderboards", "a", "bench run --dataset 'my data' --results leaderboards/a.json")
    write_results(work / "leaderboards", "b", "bench grid --config configs/b.yaml")
    (work / "leaderboards" / "a.md").write_text("the committed page\n")
    return work


def test_runs_each_source_then_renders_runs_then_checks_every_page(fake: Path) -> None:
    result = regenerate(fake, bench=fake.parent / "bench")
    assert result.returncode == 0, result.stderr
    assert (fake.parent / "log").read_text().splitlines() == [
        "[run][--dataset][my data][--results][leaderboards/a.json]",
        "[leaderboard][--from][leaderboards/a.json]",  # a `bench run` writes no page
        "[grid][--config][configs/b.yaml]",  # a grid writes its own
        "[leaderboard][--from][leaderboards/a.json][--check]",
        "[leaderboard][--from][leaderboards/b.json][--check]",
    ]
    progress = [line for line in result.stdout.splitlines() if line.startswith("regenerating ")]
    assert [line.split(":")[0] for line in progress] == [f"regenerating leaderboards/{page}.md" for page in "ab"]


def test_a_failure_names_the_page_and_puts_the_folder_back(fake: Path) -> None:
    (fake / "leaderboards" / "notes.txt").write_text("someone's uncommitted file\n")
    write_results(fake / "leaderboards", "c", "bench run --explode --results leaderboards/c.json")
    before = snapshot(fake / "leaderboards")
    result = regenerate(fake, bench=fake.parent / "bench")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("regenerate-leaderboards: leaderboards/c.md: ") and "exit 3" in last
    assert "boom" in result.stderr  # the failed command's own output
    assert snapshot(fake / "leaderboards") == before


@pytest.mark.parametrize(
    ("source", "complaint"),
    [("make leaderboards", "must be a bench command"), ("bench run --dataset 'unclosed", "No closing quotation")],
)
def test_a_bad_source_stops_before_any_work(fake: Path, source: str, complaint: str) -> None:
    write_results(fake / "leaderboards", "c", source)
    result = regenerate(fake, bench=fake.parent / "bench")
    assert result.returncode == 1 and complaint in result.stderr
    assert "leaderboards/c.md" in result.stderr.strip().splitlines()[-1]
    assert (fake.parent / "log").read_text() == ""


def test_commit_refuses_uncommitted_changes_in_the_folder(fake: Path) -> None:
    git_repo(fake)
    (fake / "leaderboards" / "a.md").write_text("edited by hand\n")
    result = regenerate(fake, "--commit", bench=fake.parent / "bench")
    assert result.returncode == 1 and "uncommitted changes" in result.stderr and "leaderboards/a.md" in result.stderr
    assert (fake.parent / "log").read_text() == ""


# --- the script, with the real bench, in a git repository -------------------------------------------------


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=repo, env=environment(repo.parent), capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def git_repo(path: Path) -> None:
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test")
    git(path, "config", "user.email", "test@example.com")
    (path / ".gitignore").write_text("mlflow.db\nmlartifacts/\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, subprocess.CompletedProcess[str]]:
    """A repository whose results file only names its source (a new "config"), after one --commit run."""
    repo = tmp_path_factory.mktemp("regenerated") / "repo"
    (repo / "leaderboards").mkdir(parents=True)
    write_results(repo / "leaderboards", "tiny", TINY)
    git_repo(repo)
    before = git(repo, "rev-parse", "HEAD")
    return repo, before, regenerate(repo, "--commit")


def copy_of(repo: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    return copy


@pytest.mark.slow
def test_a_changed_config_gives_exactly_one_commit_of_leaderboards(regenerated) -> None:
    repo, before, result = regenerated
    assert result.returncode == 0, result.stdout + result.stderr
    assert git(repo, "rev-list", f"{before}..HEAD").splitlines() == [git(repo, "rev-parse", "HEAD")]
    assert COMMIT_MESSAGE in git(repo, "log", "-1", "--format=%B")
    files = git(repo, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert all(f.startswith("leaderboards/") for f in files), files
    assert {"leaderboards/tiny.md", "leaderboards/tiny.json"} <= set(files)
    assert git(repo, "status", "--porcelain") == ""
    assert json.loads((repo / "leaderboards" / "tiny.json").read_text())["source"] == TINY


@pytest.mark.slow
def test_nothing_changed_makes_no_commit(regenerated, tmp_path: Path) -> None:
    repo = copy_of(regenerated[0], tmp_path)
    head = git(repo, "rev-parse", "HEAD")
    result = regenerate(repo, "--commit")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "leaderboards unchanged" in result.stdout
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain") == ""


@pytest.mark.slow
def test_a_broken_config_commits_nothing_and_changes_nothing(regenerated, tmp_path: Path) -> None:
    repo = copy_of(regenerated[0], tmp_path)
    results = repo / "leaderboards" / "tiny.json"
    data = json.loads(results.read_text())
    data["source"] = TINY.replace("--model coxph", "--model nosuchmodel")
    results.write_text(json.dumps(data, indent=2) + "\n")
    git(repo, "commit", "-q", "-am", "break the config")
    head = git(repo, "rev-parse", "HEAD")
    result = regenerate(repo, "--commit")
    assert result.returncode == 1
    assert "nosuchmodel" in result.stderr  # bench's own message
    assert "leaderboards/tiny.md" in result.stderr.strip().splitlines()[-1]
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain", "--", "leaderboards") == ""
