"""The leaderboards workflows (.github/workflows/) and scripts/regenerate-leaderboards.

The workflows are linted with actionlint and read back as YAML: what each job runs, and the rules that keep a
pull request's code away from a token that can write (pinned actions, no token left in .git/config, no write
permission where pull-request code runs, a commenter that checks out nothing). Each rule is a function that is
also shown a bad snippet, so a rule that stopped catching anything would fail. The commenter's script runs
under node against a fake GitHub. The regeneration script is run with a fake `bench` (fast: what it runs, in
which order, and that a failure puts the folder back) and with the real one on a tiny GBSG2 results file
inside a throwaway git repository (what it commits).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
WORKFLOW = WORKFLOWS / "leaderboards.yml"
COMMENTER = WORKFLOWS / "leaderboards-comment.yml"
ARTIFACT = "leaderboards-diff"
SCRIPT = REPO / "scripts" / "regenerate-leaderboards"
VENV_BIN = Path(sys.executable).parent
BENCH = VENV_BIN / "bench"
FEATURE_CACHE = "~/.cache/prognosis-bench/cache"
COMMIT_MESSAGE = "Regenerate leaderboards [skip ci]"

# Cheap enough for a test (about ten seconds): one clinical Cox row on a built-in tabular dataset.
TINY = "bench run --dataset veterans --extractor clinical --model coxph --bootstrap 20 --seed 0 --results leaderboards/tiny.json"

# The commits `uses:` may pin, and their releases: each read from the action's own repository (the commit the
# release tag points to, 2026-12-07). Add a release here, checked at its source, before pinning it.
RELEASES = {
    ("actions/checkout", "d23441a48e516b6c34aea4fa41551a30e30af803"): "v6.1.0",
    ("actions/checkout", "3d3c42e5aac5ba805825da76410c181273ba90b1"): "v7.0.1",
    ("actions/setup-python", "ece7cb06caefa5fff74198d8649806c4678c61a1"): "v6.3.0",
    ("actions/setup-python", "5fda3b95a4ea91299a34e894583c3862153e4b97"): "v7.0.0",
    ("actions/cache", "0057852bfaa89a56745cba8c7296529d2fc39830"): "v4.3.0",
    ("actions/cache", "27d5ce7f107fe9357f9df03efb73ab90386fccae"): "v5.0.5",
    ("actions/github-script", "f28e40c7f34bde8b3046d885e986cb6290c5673b"): "v7.1.0",
    ("actions/github-script", "ed597411d8f924073f98dfc5c65a23a2325f34cd"): "v8.0.0",
    ("actions/upload-artifact", "b7c566a772e6b6bfb58ed0dc250532a479d7789f"): "v6.0.0",
    ("actions/upload-artifact", "bbbca2ddaa5d8feaa63e36b76fdaad77386f024f"): "v7.0.0",
    ("actions/download-artifact", "37930b1c2abaa49bbe596cd826c3c89aef350131"): "v7.0.0",
    ("actions/download-artifact", "3e5f45b2cfb9172054b4087a40e8e0b5a5461e7c"): "v8.0.1",
}
# What the pages are computed from: a change to any of it must regenerate them.
LEADERBOARD_INPUTS = {
    "configs", "feature_extractors", "survival_models", "bench",
    "splits", "requirements/lock.txt", "pyproject.toml", "leaderboards/*.json",
    "tests/data/ibsi_sts",  # the images leaderboards/ibsi_sts.robustness.md is computed from
}  # fmt: skip


# --- reading workflows ------------------------------------------------------------------------------------


def actionlint() -> str:
    found = shutil.which("actionlint", path=str(VENV_BIN)) or shutil.which("actionlint")
    if found is None:
        pytest.fail("no actionlint: it comes with the test extra (pip install -e '.[test]')")
    return found


def lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint(), "-oneline", "-no-color", *map(str, paths)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def load(text: str) -> dict:
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def workflow() -> dict:
    return load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def commenter() -> dict:
    return load(COMMENTER.read_text())


def triggers(workflow: dict) -> set[str]:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    return {on} if isinstance(on, str) else set(on)


def runs_of(job: dict) -> list[str]:
    """The job's `run:` commands, in order."""
    return [step["run"] for step in job["steps"] if "run" in step]


def steps_using(job: dict, action: str) -> list[dict]:
    """The job's steps that use `action` (any version)."""
    return [step for step in job.get("steps", []) if step.get("uses", "").startswith(f"{action}@")]


def step_using(job: dict, action: str) -> dict:
    """The job's one step that uses `action` (any version)."""
    [step] = steps_using(job, action)
    return step


def permissions_of(workflow: dict, job: dict) -> dict[str, str]:
    """The job's token permissions; unset anywhere, the repository's default, which may be write-all."""
    permissions = job.get("permissions", workflow.get("permissions", "write-all"))
    if isinstance(permissions, str):  # read-all, write-all
        return dict.fromkeys(("actions", "contents", "issues", "pull-requests"), permissions.removesuffix("-all"))
    return permissions


# --- GitHub's expressions, enough of them for `if:` -------------------------------------------------------

UNKNOWN = object()  # a value that depends on a context the caller did not give
TOKEN = re.compile(r"\s*(?:'((?:[^']|'')*)'|(\d+(?:\.\d+)?)|(&&|\|\||==|!=|[!(),])|([A-Za-z_][\w.-]*))")


def truth(value: object) -> object:
    return value if value is UNKNOWN else bool(value)  # false, 0, '' and null are falsy


def evaluate(expression: str | bool, known: Mapping[str, object]) -> object:
    """A job's `if:` given some context values (`github.event_name`, ...): True, False or UNKNOWN.

    Literals, context paths, `!`, `&&`, `||`, `==`, `!=` (strings case-insensitively, as GitHub compares them)
    and parentheses; a function call (success(), cancelled(), contains(), ...) is UNKNOWN.
    """
    if isinstance(expression, bool):
        return expression
    text = expression.strip().removeprefix("${{").removesuffix("}}")
    tokens: list[tuple[str, object]] = []
    position = 0
    while text[position:].strip():
        match = TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"cannot read {text[position:]!r} in {expression!r}")
        string, number, operator, name = match.groups()
        if string is not None:
            tokens.append(("value", string.replace("''", "'")))
        elif number is not None:
            tokens.append(("value", float(number)))
        elif operator is not None:
            tokens.append((operator, None))
        else:
            literals = {"true": True, "false": False, "null": None}
            tokens.append(("value", literals[name]) if name in literals else ("name", name))
        position = match.end()
    tokens.append(("end", None))

    def take(kind: str | None = None) -> tuple[str, object]:
        token = tokens.pop(0)
        if kind is not None and token[0] != kind:
            raise ValueError(f"expected {kind!r}, got {token[0]!r} in {expression!r}")
        return token

    def either() -> object:
        left = both()
        while tokens[0][0] == "||":
            take()
            values = {truth(left), truth(both())}
            left = True if True in values else UNKNOWN if UNKNOWN in values else False
        return left

    def both() -> object:
        left = compare()
        while tokens[0][0] == "&&":
            take()
            values = {truth(left), truth(compare())}
            left = False if False in values else UNKNOWN if UNKNOWN in values else True
        return left

    def compare() -> object:
        left = unary()
        if tokens[0][0] in ("==", "!="):
            negate = take()[0] == "!="
            right = unary()
            if UNKNOWN in (left, right):
                return UNKNOWN
            fold = [v.casefold() if isinstance(v, str) else v for v in (left, right)]
            return (fold[0] == fold[1]) != negate
        return left

    def unary() -> object:
        if tokens[0][0] == "!":
            take()
            value = truth(unary())
            return value if value is UNKNOWN else not value
        kind, value = take()
        if kind == "(":
            value = either()
            take(")")
            return value
        if kind == "name" and tokens[0][0] == "(":  # a function call
            take()
            while tokens[0][0] != ")":
                either()
                if tokens[0][0] == ",":
                    take()
            take(")")
            return UNKNOWN
        if kind == "name":
            return known.get(str(value), UNKNOWN)
        if kind == "value":
            return value
        raise ValueError(f"unexpected {kind!r} in {expression!r}")

    result = either()
    take("end")
    return truth(result)


@pytest.mark.parametrize(
    ("expression", "known", "expected"),
    [
        ("github.event_name == 'push'", {"github.event_name": "push"}, True),
        ("github.event_name == 'PUSH'", {"github.event_name": "push"}, True),
        ("${{ github.event_name != 'push' }}", {"github.event_name": "push"}, False),
        ("!cancelled() && github.event_name == 'push'", {"github.event_name": "schedule"}, False),
        ("!cancelled() && github.event_name == 'push'", {"github.event_name": "push"}, UNKNOWN),
        ("always() || github.ref == 'x'", {}, UNKNOWN),
        ("github.ref == 'x' || !(github.event_name == 'a' && 'it''s' != '')", {"github.event_name": "a"}, UNKNOWN),
        ("(github.event_name == 'a' || github.event_name == 'b') && true", {"github.event_name": "b"}, True),
        ("contains(fromJSON('[1, 2]'), github.event_name)", {"github.event_name": "b"}, UNKNOWN),
        (False, {}, False),
    ],
)
def test_expressions_are_read_as_github_reads_them(
    expression: str | bool, known: dict[str, str], expected: object
) -> None:
    assert evaluate(expression, known) is expected


# --- the rules, each shown a snippet it must catch ---------------------------------------------------------

USES = re.compile(r"^[\s-]*uses:\s*(?P<uses>.*?)\s*$", re.MULTILINE)
PIN = re.compile(r"(?P<action>[\w.-]+/[\w.-]+)(?:/[\w./-]+)?@(?P<sha>[0-9a-f]{40}) # (?P<release>v\d+(?:\.\d+)*)")


def pin_problems(text: str) -> list[str]:
    """What is wrong with the `uses:` lines of workflows: each must name a listed release by its full commit,
    with the release in a comment (`uses: actions/checkout@<sha> # v7.0.1`), one release per action."""
    problems, chosen = [], {}
    for uses in USES.findall(text):
        pin = PIN.fullmatch(uses)
        if pin is None:
            problems.append(f"not pinned to a commit with '# vX' after it: {uses}")
            continue
        release = RELEASES.get((pin["action"], pin["sha"]))
        if release is None:
            problems.append(f"not a listed release's commit: {uses}")
        elif release != pin["release"]:
            problems.append(f"{pin['sha']} is {pin['action']} {release}, not {pin['release']}: {uses}")
        elif chosen.setdefault(pin["action"], release) != release:
            problems.append(f"{pin['action']} pinned to two releases, {chosen[pin['action']]} and {release}: {uses}")
    return problems


def leaky_checkouts(workflow: dict) -> list[str]:
    """Checkouts that leave the token in .git/config (persist-credentials) in a job that pushes nothing."""
    return [
        name
        for name, job in workflow["jobs"].items()
        if permissions_of(workflow, job).get("contents") != "write"
        for step in steps_using(job, "actions/checkout")
        if step.get("with", {}).get("persist-credentials") is not False
    ]  # fmt: skip


PR_EVENTS = {"pull_request", "pull_request_target"}
RUNS_CHECKOUT = re.compile(r"(?<![\w./-])(?:(?:make|bench)\b|\.venv/|(?:\./)?(?:scripts|\.ci)/)")


def write_token_on_pr_code(workflow: dict) -> list[str]:
    """Jobs that can run for a pull request with a token that can write, and run code from their checkout."""
    found = []
    for event in sorted(PR_EVENTS & triggers(workflow)):
        for name, job in workflow["jobs"].items():
            if "write" not in permissions_of(workflow, job).values():
                continue
            if evaluate(job.get("if", True), {"github.event_name": event}) is False:
                continue
            code = [run for run in runs_of(job) if RUNS_CHECKOUT.search(run)]
            code += [step["uses"] for step in job["steps"] if step.get("uses", "").startswith("./")]
            if steps_using(job, "actions/checkout") and code:
                found.append(f"{name} on {event}: {code[0]}")
    return found


def checkouts_of_other_code(workflow: dict) -> list[str]:
    """Checkouts of anything but the workflow's own commit (for workflow_run: the default branch)."""
    return [
        f"{name}: {step['with']}"
        for name, job in workflow["jobs"].items()
        for step in steps_using(job, "actions/checkout")
        if {"ref", "repository"} & set(step.get("with", {}))
    ]  # fmt: skip


def interpolated_scripts(workflow: dict) -> list[str]:
    """Shell and github-script code with ${{ }} in it: a value that becomes code. Values go in through env."""
    return [
        f"{name}: {code.strip().splitlines()[0]}"
        for name, job in workflow["jobs"].items()
        for step in job.get("steps", [])
        for code in (step.get("run", ""), step.get("with", {}).get("script", ""))
        if "${{" in code
    ]  # fmt: skip


COMMENT_WRITE = {"contents": "read", "pull-requests": "write"}


def bad(
    events: tuple[str, ...] = ("pull_request",),
    condition: str | bool = True,
    permissions: dict[str, str] | None = COMMENT_WRITE,
    checkout: dict | None = None,
    run: str = "make install",
) -> dict:
    """The old comment job, or a variation of it, as YAML reads it (permissions None: unset everywhere)."""
    steps = [{"uses": "actions/checkout@v5", "with": checkout or {}}, {"run": run}]
    job = {"if": condition, "runs-on": "ubuntu-latest", "steps": steps}
    workflow = {True: list(events), "jobs": {"comment": job}}
    if permissions is not None:
        job["permissions"], workflow["permissions"] = permissions, {}
    return workflow


CHECKOUT = "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1"


def test_every_action_is_pinned_to_a_listed_release() -> None:
    texts = [path.read_text() for path in sorted(WORKFLOWS.glob("*.yml"))]
    assert pin_problems("\n".join(texts)) == []
    # Every `uses:` YAML sees is one the line pattern saw.
    steps = [s for text in texts for job in load(text)["jobs"].values() for s in job["steps"] if "uses" in s]
    assert len(steps) == sum(len(USES.findall(text)) for text in texts) > 0


@pytest.mark.parametrize(
    ("uses", "complaint"),
    [
        ("actions/checkout@v5", "not pinned"),
        ("actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1", "not pinned"),
        ("actions/checkout@3d3c42e5 # v7.0.1", "not pinned"),
        ("actions/checkout@0123456789abcdef0123456789abcdef01234567 # v7.0.1", "not a listed release"),
        ("actions/checkout@d23441a48e516b6c34aea4fa41551a30e30af803 # v7.0.1", "is actions/checkout v6.1.0"),
        ("actions/cache/restore@d23441a48e516b6c34aea4fa41551a30e30af803 # v6.1.0", "not a listed release"),
        ("actions/checkout@d23441a48e516b6c34aea4fa41551a30e30af803 # v6.1.0", "two releases"),
    ],
)
def test_pin_problems_catches(uses: str, complaint: str) -> None:
    text = f"    steps:\n      - uses: {CHECKOUT}\n      - uses: {uses}\n"
    [problem] = pin_problems(text)
    assert complaint in problem and uses in problem


def test_no_token_is_left_in_git_config_where_nothing_is_pushed(workflow: dict, commenter: dict) -> None:
    assert leaky_checkouts(workflow) == leaky_checkouts(commenter) == []
    # Only the regenerate job keeps it, to push.
    jobs = workflow["jobs"]
    [pushes] = [name for name, job in jobs.items() if any(run.startswith("git push") for run in runs_of(job))]
    assert pushes == "regenerate" and workflow["jobs"][pushes]["permissions"] == {"contents": "write"}
    assert leaky_checkouts(bad()) == ["comment"]
    assert leaky_checkouts(bad(checkout={"persist-credentials": True})) == ["comment"]
    assert leaky_checkouts(bad(checkout={"persist-credentials": False})) == []
    assert leaky_checkouts(bad(permissions={"contents": "write"})) == []


def test_no_write_token_where_pull_request_code_runs(workflow: dict, commenter: dict) -> None:
    assert write_token_on_pr_code(workflow) == write_token_on_pr_code(commenter) == []
    assert write_token_on_pr_code(bad()) == ["comment on pull_request: make install"]
    found = write_token_on_pr_code(bad(events=("push", "pull_request_target")))
    assert found == ["comment on pull_request_target: make install"]
    assert write_token_on_pr_code(bad(permissions={"issues": "write"}, run="bash .ci/run")) != []
    assert write_token_on_pr_code(bad(run=".venv/bin/bench leaderboard --check-all")) != []
    assert write_token_on_pr_code(bad(condition="github.event_name != 'push'")) != []
    assert write_token_on_pr_code(bad(permissions=None)) != []  # the repository's default may be write-all
    # The same job with a read-only token, kept off pull requests, or running nothing of the checkout, is fine.
    assert write_token_on_pr_code(bad(permissions={}, run="scripts/regenerate-leaderboards")) == []
    assert write_token_on_pr_code(bad(condition="github.event_name == 'push'")) == []
    assert write_token_on_pr_code(bad(events=("push",))) == []
    assert write_token_on_pr_code(bad(run="git diff > pages.diff")) == []


def test_no_expression_is_pasted_into_code(workflow: dict, commenter: dict) -> None:
    assert interpolated_scripts(workflow) == interpolated_scripts(commenter) == []
    assert interpolated_scripts(bad(run="echo ${{ github.event.workflow_run.head_branch }}")) != []


def test_the_commenter_runs_nothing_of_the_pull_request(workflow: dict, commenter: dict) -> None:
    assert triggers(commenter) == {"workflow_run"}
    on = commenter.get("on", commenter.get(True))
    assert on["workflow_run"] == {"workflows": [workflow["name"]], "types": ["completed"]}
    assert commenter["permissions"] == {}
    [job] = commenter["jobs"].values()
    assert job["permissions"] == {"actions": "read", "pull-requests": "write"}
    # It checks out nothing (had it a checkout, only the default branch's).
    assert steps_using(job, "actions/checkout") == [] and checkouts_of_other_code(commenter) == []
    assert checkouts_of_other_code(bad(checkout={"ref": "${{ github.event.workflow_run.head_sha }}"})) != []
    fork = "${{ github.event.workflow_run.head_repository.full_name }}"
    assert checkouts_of_other_code(bad(checkout={"repository": fork})) != []
    # Pull requests' runs only, and only those that got to upload the artifact.
    run = "github.event.workflow_run."
    for event, conclusion, expected in [
        ("pull_request", "success", True),
        ("pull_request", "failure", True),
        ("push", "success", False),
        ("pull_request", "cancelled", False),
        ("pull_request", "action_required", False),
    ]:
        assert evaluate(job["if"], {f"{run}event": event, f"{run}conclusion": conclusion}) is expected
    # The artifact the diff job uploads, from the run that completed.
    download = step_using(job, "actions/download-artifact")["with"]
    assert download["name"] == ARTIFACT
    assert download["run-id"] == "${{ github.event.workflow_run.id }}"
    assert download["github-token"] == "${{ github.token }}"
    assert step_using(job, "actions/github-script")["env"]["ARTIFACT"] == download["path"]


def test_actionlint_finds_nothing() -> None:
    paths = sorted(WORKFLOWS.glob("*.yml"))
    assert paths == [COMMENTER, WORKFLOW]
    result = lint(*paths)
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


# --- the leaderboards workflow's jobs ---------------------------------------------------------------------


def test_triggers(workflow: dict) -> None:
    assert triggers(workflow) == {"pull_request", "push", "workflow_dispatch", "schedule"}
    on = workflow.get("on", workflow.get(True))
    assert on["push"]["branches"] == ["**"]
    [schedule] = on["schedule"]
    _minute, _hour, day_of_month, month, day_of_week = schedule["cron"].split()
    assert (day_of_month, month) == ("*", "*") and day_of_week.isdigit(), "weekly: one day of the week"


def test_least_permissions_and_one_regeneration_at_a_time(workflow: dict) -> None:
    assert workflow["permissions"] == {}
    assert workflow["concurrency"] == {"group": "leaderboards-${{ github.ref }}", "cancel-in-progress": False}
    jobs = workflow["jobs"]
    assert {name: job["permissions"] for name, job in jobs.items()} == {
        "test": {"contents": "read"},
        "regenerate": {"contents": "write"},
        "diff": {"contents": "read"},
    }
    assert jobs["regenerate"]["concurrency"]["cancel-in-progress"] is False


LOCK = "requirements/lock.txt"


def test_python_and_its_pip_cache_come_from_the_lock(workflow: dict) -> None:
    for name, job in workflow["jobs"].items():
        python = step_using(job, "actions/setup-python")["with"]
        assert python == {"python-version": "3.11", "cache": "pip", "cache-dependency-path": LOCK}, name
    assert (REPO / LOCK).is_file()


def test_test_job_runs_ci(workflow: dict) -> None:
    job = workflow["jobs"]["test"]
    for event, expected in [("pull_request", True), ("push", True), ("schedule", False), ("workflow_dispatch", False)]:
        assert evaluate(job["if"], {"github.event_name": event}) is expected
    runs = runs_of(job)
    assert runs[-1] == "bash .ci/run"
    assert "apt-get install -y chromium" in runs[-2] and "sudo" in runs[-2]  # .ci/run installs it only as root
    assert (REPO / ".ci" / "run").is_file()


def test_regenerate_runs_on_the_default_branch_only(workflow: dict) -> None:
    job = workflow["jobs"]["regenerate"]
    assert job["needs"] == "test"

    def runs(event: str, branch: str = "main", test: str = "success") -> object:
        known = {"github.event_name": event, "github.ref_name": branch, "needs.test.result": test}
        return evaluate(job["if"], known | {"github.event.repository.default_branch": "main"})

    assert runs("push") is runs("workflow_dispatch", test="skipped") is UNKNOWN  # as !cancelled() is
    assert runs("schedule", test="skipped") is UNKNOWN
    assert runs("pull_request") is runs("pull_request_target") is False
    assert runs("push", branch="feature") is runs("workflow_dispatch", branch="feature") is False
    assert runs("push", test="failure") is False


def test_regenerate_job(workflow: dict) -> None:
    job = workflow["jobs"]["regenerate"]
    assert step_using(job, "actions/checkout")["with"] == {"fetch-depth": 0, "persist-credentials": True}
    cache = step_using(job, "actions/cache")
    assert cache["with"]["path"] == FEATURE_CACHE
    for hashed in ("feature_extractors/**", "configs/**", "bench/data/**", "pyproject.toml", "requirements/lock.txt"):
        assert hashed in cache["with"]["key"]
    assert cache["with"]["restore-keys"].strip() == "${{ runner.os }}-features-"
    work = [step["run"] for step in job["steps"] if "run" in step and step.get("id") != "decide"]
    assert "make install" in work
    assert any(run.splitlines()[-1] == "scripts/regenerate-leaderboards --commit" for run in work)
    assert any(run.startswith("git push") for run in work)
    assert f'COMMIT_MESSAGE="{COMMIT_MESSAGE}"' in SCRIPT.read_text()


def test_diff_job_regenerates_with_a_read_only_token_and_uploads_the_diff(workflow: dict) -> None:
    job = workflow["jobs"]["diff"]
    assert evaluate(job["if"], {"github.event_name": "pull_request"}) is True
    assert evaluate(job["if"], {"github.event_name": "push"}) is False
    # The merge commit and its first parent (the base branch), for "decide"; no token left behind.
    assert step_using(job, "actions/checkout")["with"] == {"fetch-depth": 2, "persist-credentials": False}
    assert "save" not in str(steps_using(job, "actions/cache/restore")) and not steps_using(job, "actions/cache")
    runs = runs_of(job)
    assert "make install" in runs
    [regenerate] = [run for run in runs if "scripts/regenerate-leaderboards" in run]
    assert regenerate.splitlines()[0] == "scripts/regenerate-leaderboards"  # never --commit on a pull request
    assert "git diff -- 'leaderboards/*.md' > \"$RUNNER_TEMP/leaderboards-diff/leaderboards.diff\"" in regenerate
    [record] = [step for step in job["steps"] if "pr-number" in step.get("run", "")]
    assert record["env"]["PR_NUMBER"] == "${{ github.event.pull_request.number }}"
    assert record["env"]["REGENERATED"] == "${{ steps.decide.outputs.regenerate }}"
    upload = step_using(job, "actions/upload-artifact")
    assert upload["if"] == record["if"] == "${{ !cancelled() }}"  # also when the regeneration failed
    assert upload["with"]["name"] == ARTIFACT and upload["with"]["path"] == "${{ runner.temp }}/leaderboards-diff/"


def decide_steps(workflow: dict) -> dict[str, dict]:
    jobs = workflow["jobs"]
    return {name: step for name, job in jobs.items() for step in job["steps"] if step.get("id") == "decide"}


def test_what_the_pages_are_computed_from(workflow: dict) -> None:
    inputs = workflow["env"]["LEADERBOARD_INPUTS"].split()
    assert set(inputs) == LEADERBOARD_INPUTS and len(inputs) == len(LEADERBOARD_INPUTS)
    for pathspec in inputs:
        assert list(REPO.glob(pathspec)), f"{pathspec} matches nothing in the repository"
    decide = decide_steps(workflow)
    assert set(decide) == {"regenerate", "diff"}
    assert decide["regenerate"]["run"] == decide["diff"]["run"] and '"$LEADERBOARD_INPUTS"' in decide["diff"]["run"]
    assert decide["diff"]["env"] == {"BASE": "HEAD^1"}  # the base branch, the merge commit's first parent
    assert decide["regenerate"]["env"] == {"BASE": "${{ github.event_name == 'push' && github.event.before || '' }}"}
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            if name in decide and step is not decide[name] and step is not job["steps"][0]:
                assert step["if"] in ("steps.decide.outputs.regenerate == 'true'", "${{ !cancelled() }}"), step


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with one commit per kind of change, each on top of the first."""
    repo = tmp_path_factory.mktemp("history") / "repo"
    for path in ("README.md", "leaderboards/a.md", "leaderboards/a.json", "splits/s/x", "requirements/lock.txt"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("one\n")
    git_repo(repo)
    return repo


@pytest.mark.parametrize(
    ("changed", "regenerate"),
    [
        ("README.md", "false"),
        ("leaderboards/a.md", "false"),  # a page itself: only its results file says how it is made
        ("leaderboards/a.json", "true"),
        ("splits/s/x", "true"),
        ("requirements/lock.txt", "true"),
        ("configs/new.yaml", "true"),
        (None, "true"),  # no usable base (a dispatch, a schedule, a new branch)
    ],
)
def test_decide_regenerates_when_an_input_changed(
    workflow: dict, history: Path, tmp_path: Path, changed: str | None, regenerate: str
) -> None:
    repo = copy_of(history, tmp_path)
    base = git(repo, "rev-parse", "HEAD")
    if changed is not None:
        (repo / changed).parent.mkdir(parents=True, exist_ok=True)
        (repo / changed).write_text("two\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"change {changed}")
    output = tmp_path / "output"
    env = environment(tmp_path) | {
        "LEADERBOARD_INPUTS": workflow["env"]["LEADERBOARD_INPUTS"],
        "BASE": base if changed is not None else "",
        "GITHUB_OUTPUT": str(output),
    }
    script = decide_steps(workflow)["diff"]["run"]
    subprocess.run(["bash", "-e", "-c", script], cwd=repo, env=env, capture_output=True, check=True, timeout=30)
    assert output.read_text() == f"regenerate={regenerate}\n"


def test_steps_call_the_repository_not_inline_logic(workflow: dict, commenter: dict) -> None:
    for name, job in (workflow["jobs"] | commenter["jobs"]).items():
        for run in runs_of(job):
            assert len(run.strip().splitlines()) <= 5, f"{name}: a long inline step belongs in a script:\n{run}"


# --- the commenter's script, under node, against a fake GitHub --------------------------------------------

FAKE_GITHUB = r"""
// argv: the github-script body, the scenario (JSON). Prints what the script asked of GitHub, as JSON.
const fs = require("fs");
const scenario = JSON.parse(process.argv[3]);
const calls = [];
const github = {
  paginate: async (method, params) => method(params),
  rest: {
    pulls: { get: async (p) => (calls.push(["get", p.pull_number]), { data: { head: { sha: scenario.head } } }) },
    issues: {
      listComments: async () => scenario.comments,
      updateComment: async (p) => calls.push(["update", p.comment_id, p.body]),
      createComment: async (p) => calls.push(["create", p.issue_number, p.body]),
    },
  },
};
const core = { setFailed: (m) => calls.push(["failed", m]), notice: (m) => calls.push(["notice", m]) };
const context = {
  repo: { owner: "owner", repo: "repo" },
  payload: { workflow_run: { head_sha: "c0ffee", html_url: "https://example.invalid/run/1" } },
};
const AsyncFunction = (async () => {}).constructor;
new AsyncFunction("require", "github", "context", "core", fs.readFileSync(process.argv[2], "utf8"))(
  require, github, context, core,
).then(() => console.log(JSON.stringify(calls)));
"""
MARKER = "<!-- prognosis-bench-leaderboard-diff -->"


def comment(
    commenter: dict, tmp_path: Path, files: dict[str, str], head: str = "c0ffee", comments: tuple = ()
) -> list:
    """What the commenter's script does with an artifact holding `files`."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node to run the commenter's script (GitHub's runners have one)")
    artifact = tmp_path / "artifact"
    artifact.mkdir(parents=True)
    for name, text in files.items():
        (artifact / name).write_text(text)
    [job] = commenter["jobs"].values()
    (tmp_path / "script.js").write_text(step_using(job, "actions/github-script")["with"]["script"])
    (tmp_path / "fake.js").write_text(FAKE_GITHUB)
    scenario = json.dumps({"head": head, "comments": list(comments)})
    result = subprocess.run(
        [node, str(tmp_path / "fake.js"), str(tmp_path / "script.js"), scenario],
        env=dict(os.environ, ARTIFACT=str(artifact)), capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


def test_comment_quotes_the_diff_in_a_fence_it_cannot_close(commenter: dict, tmp_path: Path) -> None:
    diff = "-| a | 0.70 |\n+| a | 0.71 |\n+```\n+@someone ![x](https://example.invalid/x.png)\n"
    files = {"pr-number": "12\n", "regenerated": "true\n", "leaderboards.diff": diff}
    [get, (kind, number, body)] = comment(commenter, tmp_path, files)
    assert get == ["get", 12] and (kind, number) == ("create", 12)
    assert body.startswith(MARKER) and f"````diff\n{diff}\n````" in body


def test_comment_updates_its_own_comment_only(commenter: dict, tmp_path: Path) -> None:
    comments = [
        {"id": 1, "user": {"login": "mallory"}, "body": f"{MARKER} mine"},
        {"id": 2, "user": {"login": "github-actions[bot]"}, "body": f"{MARKER} old"},
    ]
    files = {"pr-number": "12", "regenerated": "true", "leaderboards.diff": ""}
    [_get, (kind, comment_id, body)] = comment(commenter, tmp_path, files, comments=tuple(comments))
    assert (kind, comment_id) == ("update", 2) and "changes nothing" in body


@pytest.mark.parametrize(
    ("files", "head", "expected"),
    [
        ({"pr-number": "12; rm -rf /", "regenerated": "true"}, "c0ffee", "failed"),  # never a number, never run
        ({"pr-number": "0012", "regenerated": "true"}, "c0ffee", "failed"),
        ({"regenerated": "true"}, "c0ffee", "failed"),
        ({"pr-number": "12", "regenerated": "true", "leaderboards.diff": ""}, "beef", "notice"),  # not this PR's run
        ({"pr-number": "12", "regenerated": "false"}, "c0ffee", None),  # nothing to say, no comment to update
    ],
)
def test_comment_refuses_what_it_cannot_trust(
    commenter: dict, tmp_path: Path, files: dict[str, str], head: str, expected: str | None
) -> None:
    calls = comment(commenter, tmp_path, files, head=head)
    assert not any(call[0] in ("create", "update") for call in calls)
    assert [call[0] for call in calls if call[0] != "get"] == ([expected] if expected else [])


def test_comment_says_when_regeneration_failed_and_cuts_a_long_diff(commenter: dict, tmp_path: Path) -> None:
    [_get, (_, _, body)] = comment(commenter, tmp_path / "a", {"pr-number": "7", "regenerated": "true"})
    assert "failed" in body and "https://example.invalid/run/1" in body
    files = {"pr-number": "7", "regenerated": "true", "leaderboards.diff": "+x\n" * 30000}
    [_get, (_, _, body)] = comment(commenter, tmp_path / "b", files)
    assert len(body) < 65536 and body.endswith("(diff cut at 60000 bytes)")


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
