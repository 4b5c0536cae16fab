"""Perturbations of an image and its masks (``bench.data.imaging.perturb``): what each step does, checked with
numbers computed here (volumes in mm³, centres of mass) on a ball in an anisotropic grid."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
import pytest

from bench.data.imaging.perturb import noise_level, parse_chain, perturb
from bench.errors import UsageError

SPACING = (3.0, 1.0, 1.0)  # mm, z y x


def _phantom(seed: int = 0):
    z, y, x = np.mgrid[:30, :64, :64]
    distance = np.sqrt(((z - 15) * SPACING[0]) ** 2 + (y - 32) ** 2 + (x - 30) ** 2)
    mask = distance <= 12.0  # a 12 mm ball
    rng = np.random.default_rng(seed)
    image = 100.0 * (distance <= 25) + 400.0 * mask + rng.normal(0, 5.0, mask.shape)
    return image, {"tumour": mask}


def test_growing_and_shrinking_by_millimetres_is_the_distance_in_mm() -> None:
    """Grown: every voxel within 2 mm (centre to centre, in mm) of the mask; shrunk: every mask voxel more than
    2 mm from the outside; both found here by a k-d tree over the voxel centres in mm."""
    from scipy.spatial import cKDTree

    image, masks = _phantom()
    mask = masks["tumour"]
    grown = perturb(image, masks, SPACING, parse_chain("volume:+2mm"), 0)[1]["tumour"]
    shrunk = perturb(image, masks, SPACING, parse_chain("volume:-2mm"), 0)[1]["tumour"]
    points = np.argwhere(np.ones(mask.shape, bool)) * SPACING
    inside = cKDTree(np.argwhere(mask) * SPACING).query(points)[0].reshape(mask.shape)
    outside = cKDTree(np.argwhere(~mask) * SPACING).query(points)[0].reshape(mask.shape)
    assert np.array_equal(grown, inside <= 2.0 + 1e-9)
    assert np.array_equal(shrunk, mask & (outside > 2.0 + 1e-9))
    assert grown.sum() > mask.sum() > shrunk.sum() > 0


@pytest.mark.parametrize("chain, factor", [("volume:10%", 1.10), ("volume:-20%", 0.80)])
def test_a_volume_fraction_changes_the_volume_by_exactly_that_many_voxels(chain, factor) -> None:
    image, masks = _phantom()
    out = perturb(image, masks, SPACING, parse_chain(chain), 0)[1]["tumour"]
    assert out.sum() == masks["tumour"].sum() + round((factor - 1) * masks["tumour"].sum())


def test_contour_edits_keep_the_volume_within_ten_percent_and_are_seeded() -> None:
    image, masks = _phantom()
    first = perturb(image, masks, SPACING, parse_chain("contour:20"), 5)[1]["tumour"]
    again = perturb(image, masks, SPACING, parse_chain("contour:20"), 5)[1]["tumour"]
    other = perturb(image, masks, SPACING, parse_chain("contour:20"), 6)[1]["tumour"]
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert not np.array_equal(first, masks["tumour"])
    assert abs(int(first.sum()) - int(masks["tumour"].sum())) <= 0.10 * masks["tumour"].sum()


def test_shift_moves_image_and_mask_together_by_the_length_asked() -> None:
    from scipy import ndimage

    image, masks = _phantom()
    moved_image, moved = perturb(image, masks, SPACING, parse_chain("shift:3mm"), 1)

    centre = np.array(ndimage.center_of_mass(masks["tumour"]))
    moved_centre = np.array(ndimage.center_of_mass(moved["tumour"]))
    assert np.linalg.norm((moved_centre - centre) * SPACING) == pytest.approx(3.0, abs=0.6)
    image_centre = np.array(ndimage.center_of_mass(moved_image > 300))
    assert np.linalg.norm((image_centre - moved_centre) * SPACING) < 0.6, "the image moved with its mask"


def test_rotation_about_the_roi_centre_keeps_it_and_noise_is_scaled_to_the_image() -> None:
    from scipy import ndimage

    image, masks = _phantom()
    _, rotated = perturb(image, masks, SPACING, parse_chain("rotate:10"), 0)
    centre, after = (np.array(ndimage.center_of_mass(m)) for m in (masks["tumour"], rotated["tumour"]))
    assert np.linalg.norm((after - centre) * SPACING) < 0.5, "a ball rotated about its centre stays"
    noisy, _ = perturb(image, masks, SPACING, parse_chain("noise:2"), 0)
    assert noise_level(image) == pytest.approx(5.0 * 0.8, rel=0.35)  # 5: the phantom's noise, minus its smoothing
    assert np.std(noisy - image) == pytest.approx(2 * noise_level(image), rel=0.02)


def test_inputs_are_never_modified_and_bad_steps_are_one_line() -> None:
    image, masks = _phantom()
    copy_image, copy_mask = image.copy(), masks["tumour"].copy()
    perturb(image, masks, SPACING, parse_chain("volume:+2mm,contour:3,shift:1.5mm,rotate:5,noise:0.1"), 0)
    assert np.array_equal(image, copy_image) and np.array_equal(masks["tumour"], copy_mask)
    with pytest.raises(UsageError, match="perturbation 'volume:2': volume takes mm or vox or %"):
        parse_chain("volume:2")
    with pytest.raises(UsageError, match="perturbation 'blur:2' is not one of"):
        parse_chain("blur:2")
    with pytest.raises(UsageError, match="shift takes mm"):
        parse_chain("shift:2%")
    with pytest.raises(UsageError, match="\\+- only for volume"):
        parse_chain("shift:+-2mm")
    assert [str(s) for s in parse_chain("volume:+2mm, volume:-5%, contour:4")] == ["volume:+2mm", "volume:-5%",
                                                                                  "contour:4"]  # fmt: skip


def test_one_voxel_either_way_grows_or_shrinks_by_one_face_connected_layer() -> None:
    image, masks = _phantom()
    mask = masks["tumour"]
    grown = ndimage.binary_dilation(mask)  # the 6-connected structuring element: one layer of face neighbours
    shrunk = ndimage.binary_erosion(mask)
    seen = set()
    for seed in range(12):
        _, out = perturb(image, masks, SPACING, parse_chain("volume:+-1vox"), seed)
        assert np.array_equal(out["tumour"], grown) or np.array_equal(out["tumour"], shrunk)
        seen.add(bool(out["tumour"].sum() > mask.sum()))
        _, again = perturb(image, masks, SPACING, parse_chain("volume:±1vox"), seed)
        assert np.array_equal(again["tumour"], out["tumour"]), "the same seed draws the same sign"
    assert seen == {True, False}, "both signs are drawn over 12 seeds"
    assert str(parse_chain("volume:+-1vox")[0]) == "volume:+-1vox"
