"""The spine ROI runs from the top of the cervical spine to the sacrum and stops at the skull base.

Ground truth comes from the synthetic generator, not from the mask code:
``spine_truth`` paints the generator's vertebral column (C2 to L5 and the sacrum)
alone on the CT grid and gives the height of its skull base, at and above which
lie the skull and the brain. The demo preset's CT runs from the thighs to the top
of the head; the tiny preset's from the thighs to the chest. Patients are
rendered in memory, never written.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk

from bench.data.imaging import grid as grids
from bench.data.imaging.masks import dilate_mask, skeleton_mask, spine_dilated_mask, spine_mask
from bench.data.synthetic import LABELS, render_patient, sample_patients, spine_truth

N_PATIENTS = 10


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).astype(bool)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def physical_z(image: sitk.Image) -> np.ndarray:
    """The LPS z (mm) of every voxel centre, in numpy order, for any direction cosines."""
    shape = sitk.GetArrayViewFromImage(image).shape
    index = np.indices(shape, dtype=float)[::-1]  # index[a]: the index along sitk axis a
    row = np.array(image.GetDirection()).reshape(3, 3)[2] * np.array(image.GetSpacing())
    return image.GetOrigin()[2] + sum(row[a] * index[a] for a in range(3))


def slices_with(mask: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The z of the slices (numpy axis 0 along z) that hold some of the mask."""
    return z[mask.any(axis=(1, 2)), 0, 0]


@pytest.fixture(scope="module")
def demo() -> list[dict]:
    """The first patients of the demo preset (seed 0) with their masks, truth and PET."""
    rows = sample_patients("demo", 0)
    out = []
    start = time.perf_counter()
    for _, row in rows.head(N_PATIENTS).iterrows():
        pet, ct, labels = render_patient(row, "demo", 0)
        truth, skull_base = spine_truth(row, "demo")
        skeleton = skeleton_mask(ct)
        spine = spine_mask(ct, skeleton)
        dilated = spine_dilated_mask(ct, skeleton)
        out.append({
            "id": row["patient_id"], "ct": ct, "pet": pet, "labels": labels, "skull_base": skull_base,
            "truth": array(truth), "spine": spine, "dilated": dilated, "z": physical_z(ct), "pet_z": physical_z(pet),
        })  # fmt: skip
    print(f"\n{N_PATIENTS} demo patients rendered with their masks in {time.perf_counter() - start:.1f} s")
    assert len(out) == N_PATIENTS, "the tests loop over these patients: none would check nothing"
    return out


def test_nothing_of_the_spine_rois_at_or_above_the_skull_base(demo):
    """No skull or brain: on the CT grid, and on the PET grid the masks are brought onto (nearest neighbour)."""
    found = {}
    for p in demo:
        head, pet_head = p["z"] >= p["skull_base"], p["pet_z"] >= p["skull_base"]
        found[p["id"]] = [
            np.count_nonzero(array(p["spine"]) & head),
            np.count_nonzero(array(p["dilated"]) & head),
            np.count_nonzero(array(grids.resample_to(p["dilated"], p["pet"], "nearest")) & pet_head),
        ]
    message = "voxels at or above the skull base (spine, spine_dilated, spine_dilated on PET): " + str(found)
    print(message)
    assert all(counts == [0, 0, 0] for counts in found.values()), message


def test_spine_reaches_from_the_sacrum_to_just_below_the_skull_base(demo):
    """Not cut short: the spine's top slice is the column's last slice below the skull base, its bottom the sacrum's."""
    for p in demo:
        spine, z = array(p["spine"]), p["z"]
        column = slices_with(p["truth"] & (z < p["skull_base"]), z)
        ends = slices_with(spine, z)
        message = f"{p['id']}: spine from z {ends.min()} to {ends.max()}, column from {column.min()} to {column.max()}"
        assert ends.max() == column.max(), message
        assert ends.min() <= column.min(), message


def test_spine_matches_the_generators_vertebral_column(demo):
    scores = {p["id"]: round(dice(array(p["spine"]), p["truth"]), 3) for p in demo}
    print(f"spine Dice against the generator's column: {scores}")
    assert min(scores.values()) >= 0.80, scores


def test_suvmax_of_the_dilated_spine_is_not_brain(demo):
    """On FDG PET the brain is the hottest organ: the ROI's hottest voxel must not be one."""
    names = {value: name for name, value in LABELS.items()}
    where = {}
    for p in demo:
        inside = array(grids.resample_to(p["dilated"], p["pet"], "nearest"))
        suv = np.where(inside, sitk.GetArrayFromImage(p["pet"]), -np.inf)
        at = np.unravel_index(np.argmax(suv), suv.shape)
        where[p["id"]] = (round(float(suv[at]), 2), names.get(int(sitk.GetArrayViewFromImage(p["labels"])[at]), "air"))
    print(f"SUVmax in spine_dilated and the label at it: {where}")
    assert all(label != "brain" for _, label in where.values()), where


@pytest.mark.parametrize(
    "orient",
    [
        pytest.param((lambda im: sitk.Flip(im, [False, False, True]), lambda im: sitk.Flip(im, [False, False, True])),
                     id="head_first"),
        pytest.param((lambda im: sitk.Flip(sitk.PermuteAxes(im, [1, 2, 0]), [True, False, True]),
                      lambda im: sitk.PermuteAxes(sitk.Flip(im, [True, False, True]), [2, 0, 1])),
                     id="permuted_and_flipped"),
    ],
)  # fmt: skip
def test_head_ct_in_another_orientation_gives_the_same_rois(demo, orient):
    """The direction cosines say where the head is: the same body stored another way gives the same voxels."""
    forward, back = orient
    p = demo[0]
    ct = forward(p["ct"])
    assert not np.allclose(ct.GetDirection(), p["ct"].GetDirection())
    skeleton = skeleton_mask(ct)
    spine, dilated = spine_mask(ct, skeleton), spine_dilated_mask(ct, skeleton)
    assert np.count_nonzero(array(dilated) & (physical_z(ct) >= p["skull_base"])) == 0
    assert np.array_equal(array(back(spine)), array(p["spine"]))
    assert np.array_equal(array(back(dilated)), array(p["dilated"]))


def test_ct_cut_through_the_head_still_stops_at_the_skull_base(demo):
    """A CT from the middle of the head down (the skull base to mid-thigh of many PET/CT protocols)."""
    p = demo[0]
    z = p["z"][:, 0, 0]
    top = int(np.searchsorted(z, p["skull_base"] + 30.0))  # three centimetres of the cranium
    ct = p["ct"][:, :, :top]
    head = physical_z(ct) >= p["skull_base"]
    skeleton = skeleton_mask(ct)
    assert np.count_nonzero(array(spine_mask(ct, skeleton)) & head) == 0
    assert np.count_nonzero(array(spine_dilated_mask(ct, skeleton)) & head) == 0


def test_ct_from_the_neck_down_is_not_cut(demo):
    """Without a cranium in the CT nothing is cut: the spine reaches its top slice and the margin is whole."""
    p = demo[0]
    z = p["z"][:, 0, 0]
    top = int(np.searchsorted(z, p["skull_base"] - 20.0))  # ends in the cervical spine
    ct = p["ct"][:, :, :top]
    skeleton = skeleton_mask(ct)
    spine = spine_mask(ct, skeleton)
    assert array(spine)[-1].any(), "the spine does not reach the CT's top slice"
    assert np.array_equal(array(spine), array(p["spine"])[:top])
    assert np.array_equal(array(spine_dilated_mask(ct, skeleton)), array(dilate_mask(spine, 10.0)))


def test_torso_ct_from_the_thighs_up_is_not_cut():
    """The tiny preset: thighs to chest at 4 x 4 x 8 mm, no head."""
    row = sample_patients("tiny", 0).iloc[0]
    _, ct, _ = render_patient(row, "tiny", 0)
    truth, _ = spine_truth(row, "tiny")
    skeleton = skeleton_mask(ct)
    spine = spine_mask(ct, skeleton)
    z = physical_z(ct)
    score = dice(array(spine), array(truth))
    message = f"tiny {row['patient_id']}: spine Dice {score:.3f}"
    print(message)
    assert score >= 0.75, message
    assert slices_with(array(spine), z).max() == slices_with(array(truth), z).max(), "the column is cut short"
    assert np.array_equal(array(spine_dilated_mask(ct, skeleton)), array(dilate_mask(spine, 10.0)))


# --- rings of bone: a pelvic inlet is not a skull ------------------------------------------------------


def ring_phantom(head: bool) -> tuple[sitk.Image, float]:
    """A trunk (2 x 2 x 4 mm voxels) with a vertebral column and, round the pelvic cavity, a closed ring of bone.

    The ring encloses 8500 mm2 of soft tissue, as large as a brain's cross-section
    low in the skull, but in a trunk of 52000 mm2. With ``head``, a skull (a
    shell round 15000 mm2 of brain, in a head of 21000 mm2) sits on top of the
    column. Returns the CT and the height of the lowest slice of skull.
    """
    z, y, x = np.ogrid[-20.0:541.0:4.0, -120.0:121.0:2.0, -160.0:161.0:2.0]
    hu = np.full((z.size, y.size, x.size), -1000.0)
    hu[((x / 150) ** 2 + (y / 110) ** 2 <= 1) & (z <= 400)] = 40.0
    within = z % 32
    r = np.hypot(x, y - 60)
    vertebra = (within < 24) & (z <= 400) & (r <= 18)
    hu[vertebra] = 800.0
    hu[vertebra & (r <= 16) & (within >= 2) & (within < 22)] = 200.0
    q = (x / 65) ** 2 + ((y + 20) / 50) ** 2
    pelvis = (z >= 100) & (z <= 140)
    hu[pelvis & (q <= 1)] = 800.0
    hu[pelvis & ((x / 60) ** 2 + ((y + 20) / 45) ** 2 <= 1)] = 20.0  # bladder and bowel
    skull_base = 420.0
    if head:
        q = (x / 75) ** 2 + ((y - 10) / 90) ** 2
        hu[(z > 400) & (q <= 1)] = 40.0
        hu[(z >= skull_base) & (q <= 0.93**2)] = 800.0
        hu[(z >= skull_base) & (q <= 0.85**2)] = 35.0  # brain
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.SetSpacing((2.0, 2.0, 4.0))
    image.SetOrigin((-160.0, -120.0, -20.0))
    return image, skull_base


@pytest.mark.parametrize("head", [False, True], ids=["trunk", "trunk_and_head"])
def test_a_ring_round_the_pelvic_cavity_is_not_a_skull(head):
    ct, skull_base = ring_phantom(head)
    spine = array(spine_mask(ct))
    z = physical_z(ct)
    ends = slices_with(spine, z)
    message = f"spine from z {ends.min()} to {ends.max()}"
    assert ends.min() <= 0.0, message  # the column below the pelvic ring is kept ...
    assert ends.max() >= 380.0, message  # ... and above it, up to the top vertebra (380 to 400 mm)
    assert np.count_nonzero(spine & (z >= skull_base)) == 0, message
