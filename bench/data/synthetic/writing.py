"""Writing a cohort: rendering every patient to NIfTI, the tables and manifest, and the atomic swap into place."""

from __future__ import annotations

import functools
import gzip
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import SimpleITK as sitk
import yaml

from bench.data.synthetic.canvas import LABELS
from bench.data.synthetic.patients import sample_patients
from bench.data.synthetic.presets import (
    CLINICAL_COLUMNS,
    ENDPOINT,
    HORIZONS,
    TAU,
    TRUTH_COLUMNS,
    Preset,
    _preset,
    dataset_name,
)
from bench.data.synthetic.render import render_patient
from bench.errors import DataError

_FORMAT = 1
_GENERATOR_VERSION = 1  # bump when the same (preset, seed) would give different files
# A rescan preset's two scans of each patient (folders under images/<patient>/, sample ids <patient>_<scan>):
# the first is what the generator writes for the patient without rescan, the second its rescan.
_RESCAN_PAIR = ("scan1", "scan2")


def generate(
    preset: str | Preset,
    seed: int,
    out_dir: str | os.PathLike,
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 1,
) -> Path:
    """Write the cohort (images, ``patients.csv``, ``truth.csv``) under ``out_dir``; the path of its manifest.

    The files are written into a temporary sibling folder that is renamed into place at
    the end, so an interrupted run leaves nothing behind. The same preset and seed give
    the same bytes in every file, whatever ``workers`` (processes rendering patients).
    """
    preset = _preset(preset)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"output folder {str(out_dir)!r} is a file; choose another folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(
            f"output folder {str(out_dir)!r} is not empty; choose another folder or pass overwrite=True to replace it"
        )
    from tqdm.auto import tqdm

    patients = sample_patients(preset, seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}-{os.urandom(4).hex()}")
    staging.mkdir()
    try:
        rows = patients.to_dict("records")
        write = functools.partial(_write_patient, preset=preset, seed=seed, root=staging)
        with tqdm(total=len(rows), desc=dataset_name(preset), unit="patient", disable=not progress) as bar:
            if workers > 1:
                with ProcessPoolExecutor(workers) as pool:
                    try:
                        for _ in pool.map(write, rows):
                            bar.update()
                    except BaseException:
                        # Stop the queue and let running workers finish, so none writes after the clean-up.
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
            else:
                for row in rows:
                    write(row)
                    bar.update()
        _write_tables(patients, preset, seed, staging)
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir / "manifest.yaml"


def _scans(preset: Preset) -> tuple[str | None, ...]:
    """The scans of each patient: one, in the patient's folder, or a test-retest pair in folders of their own."""
    return _RESCAN_PAIR if preset.rescan else (None,)


def _images(patient_id: str, scan: str | None = None) -> dict[str, str]:
    folder = f"images/{patient_id}" if scan is None else f"images/{patient_id}/{scan}"
    return {what: f"{folder}/{what}.nii.gz" for what in ("pet", "ct", "labels")}


def _write_patient(row: dict, preset: Preset, seed: int, root: Path) -> None:
    pid = str(row["patient_id"])
    _write_scan(render_patient(row, preset, seed), _images(pid, _scans(preset)[0]), root)
    if preset.rescan:
        _write_scan(render_patient(row, preset, seed, rescan=True), _images(pid, _RESCAN_PAIR[1]), root)


def _write_scan(images: tuple[sitk.Image, sitk.Image, sitk.Image], paths: dict[str, str], root: Path) -> None:
    (root / paths["pet"]).parent.mkdir(parents=True, exist_ok=True)
    for image, what in zip(images, ("pet", "ct", "labels")):
        _write_nifti(image, root / paths[what])


def _write_nifti(image: sitk.Image, path: Path) -> None:
    """NIfTI, gzipped here with a zero timestamp so that the bytes depend on the image alone."""
    raw = path.with_name(path.name[: -len(".gz")])
    sitk.WriteImage(image, str(raw), useCompression=False)
    path.write_bytes(gzip.compress(raw.read_bytes(), compresslevel=3, mtime=0))
    raw.unlink()


def _write_tables(patients: pd.DataFrame, preset: Preset, seed: int, root: Path) -> None:
    scans = _scans(preset)
    studies = patients.loc[patients.index.repeat(len(scans))].reset_index(drop=True)  # one row per scan
    scan_of = [scan for _ in range(len(patients)) for scan in scans]
    images = [_images(pid, scan) for pid, scan in zip(studies["patient_id"], scan_of)]
    table = pd.DataFrame(
        {
            "patient_id": studies["patient_id"],
            "pet": [p["pet"] for p in images],
            "ct": [p["ct"] for p in images],
            "time": studies["time"],
            "event": studies["event"],
        }
    )
    if preset.rescan:
        table.insert(1, "sample_id", [f"{pid}_{scan}" for pid, scan in zip(studies["patient_id"], scan_of)])
    for col in CLINICAL_COLUMNS:
        table[col] = studies[col]
    table["ldh"] = table["ldh"].round().astype("Int64")  # whole U/L; missing stays empty
    table.to_csv(root / "patients.csv", index=False)

    # One row per patient (the manifest reader keys the truth by patient); ``labels`` is the first scan's anatomy.
    truth = patients[["patient_id", *TRUTH_COLUMNS]].copy()
    for col in ("lp", "lp_clinical", "lp_imaging"):
        truth[col] = truth[col].round(6)
    truth["labels"] = [_images(pid, scans[0])["labels"] for pid in patients["patient_id"]]
    if preset.rescan:
        truth[f"labels_{_RESCAN_PAIR[1]}"] = [_images(pid, _RESCAN_PAIR[1])["labels"] for pid in patients["patient_id"]]
    truth.to_csv(root / "truth.csv", index=False)

    manifest = {
        "format": _FORMAT,
        "name": dataset_name(preset),
        "description": f"Synthetic multiple-myeloma PET/CT cohort (preset {preset.name}, seed {seed})",
        "endpoint": ENDPOINT,
        "table": "patients.csv",
        "time_unit": "days",
        "horizons": list(HORIZONS),
        "tau": TAU,
        "pet_units": "suv",
        "columns": CLINICAL_COLUMNS,
        "truth": "truth.csv",
        "labels": LABELS,
        "synthetic": {"preset": preset.name, "seed": int(seed), "generator_version": _GENERATOR_VERSION},
    }
    anatomy = "images/<patient>/labels.nii.gz is"
    if preset.rescan:
        manifest["synthetic"]["rescan"] = True
        anatomy = "images/<patient>/<scan>/labels.nii.gz (truth.csv: labels, labels_scan2) is"
    header = (
        "# Written by bench.data.synthetic. truth.csv holds the true risk (tests and the oracle row only; "
        "never a feature);\n"
        f"# {anatomy} the anatomy on the PET grid with the label values listed under 'labels'.\n"
    )
    text = yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None, width=120)
    (root / "manifest.yaml").write_text(header + text)


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    if out_dir.is_dir() and any(out_dir.iterdir()):  # overwrite: a complete cohort stays in place until the swap
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{os.urandom(4).hex()}")
        os.replace(out_dir, old)
        os.replace(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if out_dir.is_dir():
            out_dir.rmdir()
        os.replace(staging, out_dir)
