"""Hostile inputs through the real CLI, one declarative case each (``tests/bad_inputs/cases.yaml``).

Every case damages a copy of one small cohort (or passes bad arguments) and runs ``bench`` in a
process and a folder of its own. It must exit with the declared code and, when it fails, print
exactly one line on stderr that names what is at fault, and leave nothing behind: no feature cached
for what failed, no FINISHED MLflow run, no results, leaderboard or JSON file, no temporary file.
The same bad input given to ``bench data check`` and to ``bench run`` gives the same exit code.

A session fixture builds the cohort once and runs every case a few at a time; each test only reads
its case's outcome.

How a case's process starts: forked from a server that has imported bench, mlflow, pandas, SimpleITK...
once (``bench.testing.fork_cli``), since those imports are most of what a failing invocation costs. The
child is still a fresh OS process running ``python -m bench``'s ``__main__`` in the case's folder, with the
case's environment, stdout and stderr of its own and its real exit status; nothing a case computes is ever
seen by another (the server only imports). A case runs in a plain ``python -m bench`` subprocess instead when
  - its command uses torch (``SUBPROCESS``: resnet3d, medsam2): the server never imports torch (its thread
    pools do not survive a fork), so these would gain little (importing torch is most of their cost) for
    starting torch's own OpenMP runtime in a process forked from one with other threading runtimes loaded;
  - its environment differs from the server's in a variable other than ``BENCH_*`` (``fork_cli`` decides:
    a ``PYTHON*``, locale or library variable may have been read at start-up or import);
  - or the server cannot serve (not Linux; its imports printed something or started a thread).
A case that tests ``python -m bench`` itself or a plugin's import at start-up belongs with the subprocesses too.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from bench.testing import ForkServer, fork_cli

from data_paths import STS_DICOM as DICOM

REPO = Path(__file__).resolve().parents[1]
CASES_FILE = Path(__file__).parent / "bad_inputs" / "cases.yaml"
COHORT = "bad_inputs"  # the manifest's name, hence splits/bad_inputs/cv5.json
PATIENTS = ("MM0001", "MM0002", "MM0003", "MM0005")  # 2 events and 2 censored: enough for a 2-fold split
MASK = "mask_bone"  # a supplied ROI (cortical bone and marrow): no mask is ever computed
WORKERS = 3  # cases at once: most wait on files and imports, not on the CPU
MARKER = "PWNED"  # what a YAML tag or a pickle that executes code would create in the case folder
OUTPUTS = ("results.json", "out.json", "board.md", "board.json", "input.md", "leaderboards")
CHECK_SUMMARY = re.compile(r"^bench: \d+ problem\(s\) in ")  # `data check` lists its problems on stdout

_RUN = {
    "--dataset": ["{manifest}"],
    "--extractor": ["clinical"],
    "--model": ["coxph:alpha=1"],
    "--bootstrap": ["0"],
    "--results": ["{case}/results.json"],
    "--output-json": ["{case}/out.json"],
    "--tracking-uri": ["{tracking}"],
    "--quiet": [],
}
TEMPLATES: dict[str, tuple[list[str], dict[str, list[str]]]] = {
    "check": (["data", "check", "{manifest}"], {"--quiet": []}),
    "run": (["run"], _RUN),
    "run-radiomics": (["run"], {**_RUN, "--extractor": ["radiomics:roi=bone,feature_classes=firstorder"]}),
    "run-resnet3d": (["run"], {**_RUN, "--extractor": ["resnet3d:roi=bone,voxel_mm=16"]}),
    "run-medsam2": (["run"], {**_RUN, "--extractor": ["medsam2_memory:roi=bone,max_slices=2"]}),
    "grid": (
        ["grid"],
        {
            "--config": ["{case}/grid.yaml"],
            "--leaderboard": ["{case}/board.md"],
            "--tracking-uri": ["{tracking}"],
            "--quiet": [],
        },
    ),
    "splits-make": (["splits", "make"], {"--dataset": ["{manifest}"], "--name": ["fresh"]}),
    "splits-verify": (["splits", "verify"], {"--dataset": ["{manifest}"]}),
    "splits-import": (["splits", "import", "{case}/split.csv"], {"--dataset": ["{manifest}"], "--name": ["fresh"]}),
    "leaderboard": (["leaderboard"], {"--from": ["{case}/input.json"]}),
    "cache-clear": (["cache", "clear"], {}),
}
HEAVY = ("run-radiomics", "run-resnet3d", "run-medsam2")  # started first, so the pool ends together
SUBPROCESS = ("run-resnet3d", "run-medsam2")  # torch: never forked (see the module's docstring)

# ------------------------------------------------------------------------------------------ the corpus

FIELDS = {"name", "commands", "options", "damage", "env", "exit", "error", "not_error", "cached", "needs"}


@dataclass
class Case:
    id: str
    command: str
    exit: int
    error: str = ""
    not_error: str = ""
    options: dict = field(default_factory=dict)
    damage: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    cached: int = 0  # feature-cache entries allowed after a failure (patients extracted before the bad one)
    needs: str = ""

    @property
    def folder_name(self) -> str:
        return self.id.replace("/", "-")

    @property
    def skip(self) -> str:
        assert self.needs in ("", "non-root"), f"{self.id}: unknown needs {self.needs!r} (choices: non-root)"
        if self.needs == "non-root" and os.geteuid() == 0:
            return "chmod does not stop root from writing"
        return ""


def load_cases() -> list[Case]:
    entries = yaml.safe_load(CASES_FILE.read_text())
    cases = []
    for entry in entries:
        unknown = set(entry) - FIELDS
        assert not unknown, f"{CASES_FILE}: case {entry.get('name')!r} has unknown fields {sorted(unknown)}"
        commands = entry["commands"]
        assert all(c in TEMPLATES for c in commands), entry["name"]
        ops = [op if isinstance(op, str) else next(iter(op)) for op in entry.get("damage", [])]
        assert all(hasattr(Damage, "op_" + op) for op in ops), f"{entry['name']}: unknown damage in {ops}"
        assert entry["exit"] == 0 or entry.get("error"), f"{entry['name']}: a failure must say what it names"
        for command in commands:
            case_id = entry["name"] if len(commands) == 1 else f"{entry['name']}/{command}"
            body = {k: v for k, v in entry.items() if k not in ("name", "commands")}
            cases.append(Case(id=case_id, command=command, **body))
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case names must be unique"
    return cases


# ------------------------------------------------------------------------------------------ the cohort


@pytest.fixture(scope="session")
def bad_input_base(synthetic_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-patient manifest (absolute image paths, a supplied bone mask) and a split folder with its 2-fold split."""
    source = synthetic_data / "synthetic_mm-tiny-seed0"
    root = tmp_path_factory.mktemp("bad-inputs-base")
    header = yaml.safe_load((source / "manifest.yaml").read_text())
    bone = [header["labels"]["cortical_bone"], header["labels"]["marrow"]]
    with (source / header["table"]).open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["patient_id"] in PATIENTS]
    (root / "masks").mkdir()
    for row in rows:
        labels = sitk.ReadImage(str(source / "images" / row["patient_id"] / "labels.nii.gz"))  # on the PET grid
        mask = sitk.GetImageFromArray(np.isin(sitk.GetArrayFromImage(labels), bone).astype(np.uint8))
        mask.CopyInformation(labels)
        row.update(pet=str(source / row["pet"]), ct=str(source / row["ct"]))
        row[MASK] = str(root / "masks" / f"{row['patient_id']}.nii.gz")
        sitk.WriteImage(mask, row[MASK])
    with (root / "patients.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    keep = ("format", "time_unit", "horizons", "tau", "pet_units", "columns")
    manifest = {"name": COHORT, "table": "patients.csv", **{k: header[k] for k in keep if k in header}}
    (root / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    shutil.copytree(REPO / "splits", root / "splits", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    made = subprocess.run(
        [sys.executable, "-m", "bench", "splits", "make", "--dataset", str(root / "manifest.yaml"), "--folds", "2"],
        check=False,
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
        env={**os.environ, "BENCH_SPLITS_DIR": str(root / "splits"), "BENCH_CACHE_DIR": str(root / "cache")},
    )
    assert made.returncode == 0, made.stderr
    return root


# ------------------------------------------------------------------------------------------ damage


class Damage:
    """A case's copy of the cohort, damaged operation by operation, then written to ``{case}/cohort``."""

    def __init__(self, base: Path, folder: Path, subs: dict[str, str]):
        self.base, self.folder, self.subs = base, folder, subs
        self.cohort = folder / "cohort"
        self.manifest: dict = yaml.safe_load((base / "manifest.yaml").read_text())
        self.manifest_text: str | None = None
        with (base / "patients.csv").open(newline="") as handle:
            self.header, *self.rows = list(csv.reader(handle))
        self.appended: list[str] = []
        self.encoding = "utf-8"

    def apply(self, op: str | dict) -> None:
        name, params = (op, None) if isinstance(op, str) else next(iter(op.items()))
        getattr(self, "op_" + name)(params)

    def write(self) -> None:
        self.cohort.mkdir(parents=True, exist_ok=True)
        text = self.manifest_text if self.manifest_text is not None else yaml.safe_dump(self.manifest, sort_keys=False)
        (self.cohort / "manifest.yaml").write_text(text)
        with (self.cohort / "patients.csv").open("w", newline="", encoding=self.encoding) as handle:
            csv.writer(handle, lineterminator="\n").writerows([self.header, *self.rows])
            handle.writelines(line + "\n" for line in self.appended)

    # -- helpers

    def sub(self, text: str) -> str:
        return substitute(text, self.subs)

    def _rows(self, patient: str) -> list[list[str]]:
        rows = self.rows if patient == "all" else [r for r in self.rows if r[0] == patient]
        assert rows, f"no patient {patient!r} in the cohort"
        return rows

    def cell(self, patient: str, column: str) -> str:
        return self._rows(patient)[0][self.header.index(column)]

    def set_cell(self, patient: str, column: str, value: str) -> None:
        for row in self._rows(patient):
            row[self.header.index(column)] = value

    def damaged(self, patient: str, column: str, suffix: str = ".nii.gz") -> Path:
        """Where the damaged copy of a patient's file goes; the table points at it."""
        path = self.cohort / "damaged" / f"{patient}-{column}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.set_cell(patient, column, str(path))
        return path

    def image(self, patient: str, column: str) -> sitk.Image:
        return sitk.ReadImage(self.cell(patient, column))

    # -- the manifest

    def op_manifest_set(self, values: dict) -> None:
        self.manifest.update(values)

    def op_manifest_text(self, text: str) -> None:
        self.manifest_text = self.sub(text)

    # -- the table

    def op_csv_set(self, p: dict) -> None:
        self.set_cell(p["patient"], p["column"], str(p["value"]))

    def op_csv_keep_rows(self, patients: list[str]) -> None:
        self.rows = [r for r in self.rows if r[0] in patients]

    def op_csv_keep_lines(self, lines: int) -> None:
        self.rows = self.rows[: lines - 1]

    def op_csv_append_line(self, line: str) -> None:
        self.appended.append(self.sub(line))

    def op_csv_encoding(self, encoding: str) -> None:
        self.encoding = encoding

    # -- images and masks

    def op_delete_image(self, p: dict) -> None:
        self.damaged(p["patient"], p["column"])  # pointed at, never written: the file was deleted

    def op_truncate_image(self, p: dict) -> None:
        data = Path(self.cell(p["patient"], p["column"])).read_bytes()
        self.damaged(p["patient"], p["column"]).write_bytes(data[: len(data) // 2])

    def op_text_image(self, p: dict) -> None:
        self.damaged(p["patient"], p["column"]).write_text(p["text"])

    def op_image_2d(self, p: dict) -> None:
        image = self.image(p["patient"], p["column"])
        sitk.WriteImage(image[:, :, image.GetSize()[2] // 2], str(self.damaged(p["patient"], p["column"])))

    def op_shift_image(self, p: dict) -> None:
        image = self.image(p["patient"], p["column"])
        image.SetOrigin([o + d for o, d in zip(image.GetOrigin(), p["mm"])])
        sitk.WriteImage(image, str(self.damaged(p["patient"], p["column"])))

    def op_mask(self, p: dict) -> None:
        """The supplied mask made empty, all ones, one voxel (valid, but too small for any feature) or moved 5 m."""
        for row in self._rows(p["patient"]):
            mask = sitk.ReadImage(self.cell(row[0], MASK))
            if p["kind"] == "shifted":  # the same size and spacing, nowhere near the PET
                mask.SetOrigin([o + d for o, d in zip(mask.GetOrigin(), (0, 0, 5000))])
            else:
                voxels = sitk.GetArrayFromImage(mask)
                values = np.ones_like(voxels) if p["kind"] == "ones" else np.zeros_like(voxels)
                if p["kind"] == "one_voxel":
                    values[tuple(np.argwhere(voxels)[0])] = 1
                assert p["kind"] in ("empty", "ones", "one_voxel"), f"unknown mask kind {p['kind']!r}"
                mask = sitk.GetImageFromArray(values)
                mask.CopyInformation(sitk.ReadImage(self.cell(row[0], MASK)))
            sitk.WriteImage(mask, str(self.damaged(row[0], MASK)))

    def op_dicom_two_series(self, p: dict) -> None:
        folder = self.damaged(p["patient"], p["column"], suffix="")
        folder.mkdir()
        for study in ("STS_001", "STS_002"):  # linked, never copied: tests/data stays as it is
            for f in sorted((DICOM / study / "PET").glob("*.dcm")):
                (folder / f"{study}-{f.name}").symlink_to(f)

    # -- everything else

    def op_split_edit(self, p: dict) -> None:
        path = self.folder / "splits" / COHORT / "cv5.json"
        body = json.loads(path.read_text())
        body["assignments"][0][p["patient"]] = 1 - body["assignments"][0][p["patient"]]  # moved to the other fold
        path.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")

    def op_pickle(self, p: dict) -> None:
        marker = self.folder / MARKER
        payload = {  # written by hand, so that nothing is imported or run here
            "os_system": f"cos\nsystem\n(S'touch {marker}'\ntR.".encode(),
            "custom_class": b"\x80\x02cmylab.models\nCheckpoint\nq\x00)\x81q\x01}q\x02X\x01\x00\x00\x00wK\x01sb.",
        }[p["kind"]]
        (self.folder / p["path"]).write_bytes(payload)

    def op_write_file(self, p: dict) -> None:
        path = self.folder / p["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.sub(p["text"]))

    def op_mkdir(self, path: str) -> None:
        (self.folder / path).mkdir(parents=True, exist_ok=True)

    def op_chmod(self, p: dict) -> None:
        mode = p["mode"] if isinstance(p["mode"], int) else int(p["mode"], 0)
        (self.folder / p["path"]).chmod(mode)

    def op_corrupt_cache(self, p: dict) -> None:
        """A damaged entry where each patient's features would be found (cheaper than a run that caches them)."""
        from bench.cache import FeatureCache, entry_key
        from bench.data.datasets import load_cohort
        from bench.plugins.registry import EXTRACTORS
        from bench.plugins.specs import resolve
        from feature_extractors.base import patient_records

        self.write()
        spec = resolve(EXTRACTORS, [p["extractor"]])[0]
        extractor = spec.cls(spec.config)
        options = dataclasses.asdict(extractor.config)
        cache = FeatureCache(Path(self.subs["cache"]) / "features")
        for record in patient_records(load_cohort(str(self.cohort / "manifest.yaml"))):
            path = cache.path(entry_key(extractor.name, extractor.version, options, extractor.cache_inputs(record)))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"PK\x03\x04 a zip header, then nothing")


# ------------------------------------------------------------------------------------------ running


@dataclass
class Outcome:
    folder: Path
    cache: Path
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    forked: bool

    def report(self) -> str:
        how = "forked from the server" if self.forked else "a subprocess"
        return (
            f"$ bench {shlex.join(self.argv)}\nexit {self.returncode} after {self.seconds:.1f} s ({how})\n"
            f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"
        )


def substitute(text: str, subs: dict[str, str]) -> str:
    for key, value in subs.items():
        text = text.replace("{" + key + "}", value)
    return text


def argv(command: str, options: dict, subs: dict[str, str]) -> list[str]:
    words, flags = TEMPLATES[command]
    flags = dict(flags)
    for flag, value in options.items():
        if value is None:
            flags.pop(flag, None)
        else:
            flags[flag] = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return [substitute(w, subs) for w in [*words, *(w for flag, values in flags.items() for w in (flag, *values))]]


def bench(args: list[str], folder: Path, env: dict[str, str], server: ForkServer | None) -> tuple[int, str, str]:
    """``python -m bench ARGS`` in ``folder``: forked from ``server``, or a plain subprocess when it is None."""
    try:
        if server is not None:
            done = fork_cli(args, cwd=folder, env=env, timeout=300, errors="replace", server=server)
        else:
            done = subprocess.run(
                [sys.executable, "-m", "bench", *args],
                check=False,
                capture_output=True,
                text=True,
                errors="replace",
                cwd=folder,
                env=env,
                timeout=300,
            )
    except subprocess.TimeoutExpired as exc:
        return -9, str(exc.stdout or ""), f"timed out after {exc.timeout} s"
    return done.returncode, done.stdout, done.stderr


def run_case(case: Case, base: Path, root: Path, server: ForkServer) -> Outcome:
    folder = root / case.folder_name
    folder.mkdir()
    subs = {
        "case": str(folder),
        "cohort": str(folder / "cohort"),
        "manifest": str(folder / "cohort" / "manifest.yaml"),
        "tracking": f"sqlite:///{folder / 'mlflow.db'}",
        "cache": str(folder / "cache"),
    }
    env = {**os.environ, "BENCH_CACHE_DIR": subs["cache"], "BENCH_SPLITS_DIR": str(folder / "splits")}
    env.update({k: substitute(str(v), subs) for k, v in case.env.items()})
    subs["cache"] = env["BENCH_CACHE_DIR"]
    shutil.copytree(base / "splits", folder / "splits")
    damage = Damage(base, folder, subs)
    for op in case.damage:
        damage.apply(op)
    damage.write()
    args = argv(case.command, case.options, subs)
    forked = case.command not in SUBPROCESS and not server.refuses(env)
    start = time.perf_counter()
    code, out, err = bench(args, folder, env, server if forked else None)
    return Outcome(folder, Path(subs["cache"]), args, code, out, err, time.perf_counter() - start, forked)


@pytest.fixture(scope="session")
def bad_input_server() -> Iterator[ForkServer]:
    """The fork server the cases start from; its imports run while the cohort is built."""
    server = ForkServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def bad_input_outcomes(
    bad_input_server: ForkServer,
    bad_input_base: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> dict[str, Outcome]:
    """Every selected case (all, unless -k chose some), run once; heavy ones first so that the pool ends together."""
    selected = {
        item.callspec.params["case"].id
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_bad_input" and hasattr(item, "callspec")
    }
    root = tmp_path_factory.mktemp("bad-inputs")
    todo = sorted((c for c in CASES if c.id in selected and not c.skip), key=lambda c: c.command not in HEAVY)
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {c.id: pool.submit(run_case, c, bad_input_base, root, bad_input_server) for c in todo}
        return {case_id: future.result() for case_id, future in futures.items()}


# ------------------------------------------------------------------------------------------ what is left behind


def feature_entries(cache: Path) -> list[Path]:
    folder = cache / "features"
    return sorted(p for p in folder.rglob("*.npz") if ".tmp" not in p.name) if folder.is_dir() else []


def finished_runs(folder: Path) -> list[str]:
    """Names of the FINISHED MLflow runs in every SQLite store of the case folder."""
    names = []
    for db in folder.glob("*.db"):
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
                names += [r[0] for r in connection.execute("SELECT name FROM runs WHERE status = 'FINISHED'")]
        except sqlite3.DatabaseError:  # not a store (a case's text file), or one without runs yet
            continue
    return names


def temporary_files(*folders: Path) -> list[str]:
    return sorted(str(p) for folder in folders if folder.is_dir() for p in folder.rglob("*") if ".tmp" in p.name)


CASES = load_cases()


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 45
    commands = {c.id.split("/")[0]: set() for c in CASES}
    for c in CASES:
        commands[c.id.split("/")[0]].add(c.command)
    paired = [name for name, used in commands.items() if "check" in used and len(used) > 1]
    assert len(paired) >= 4, "several bad inputs go through both `bench data check` and `bench run`"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, request: pytest.FixtureRequest) -> None:
    if case.skip:
        pytest.skip(case.skip)
    outcome: Outcome = request.getfixturevalue("bad_input_outcomes")[case.id]
    report = outcome.report()
    assert not (outcome.folder / MARKER).exists(), "the input executed code"
    assert "Traceback" not in outcome.stdout + outcome.stderr, report
    assert outcome.returncode == case.exit, report
    assert temporary_files(outcome.folder, outcome.cache) == [], report
    if case.exit == 0:
        if any("corrupt_cache" in op for op in case.damage):  # recomputed: every entry is whole again
            entries = feature_entries(outcome.cache)
            assert len(entries) == len(PATIENTS), report
            for entry in entries:
                with np.load(entry, allow_pickle=False) as data:
                    assert "values" in data.files, entry
        return
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, report
    named = outcome.stdout if CHECK_SUMMARY.match(lines[0]) else lines[0]
    assert re.search(case.error, named), f"/{case.error}/ not found in:\n{named}\n\n{report}"
    if case.not_error:
        assert not re.search(case.not_error, outcome.stdout + outcome.stderr), report
    assert len(feature_entries(outcome.cache)) <= case.cached, "features cached for what failed"
    assert finished_runs(outcome.folder) == [], "a failed invocation left a FINISHED MLflow run"
    assert [name for name in OUTPUTS if (outcome.folder / name).exists()] == [], "a failed invocation wrote results"
