"""Where tests find real data: ``tests/data`` in the repository (sources and licences in its README).

The one owner of these locations: test files import them from here instead of building paths of their own.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
SHA256SUMS = DATA / "SHA256SUMS"  # every file under DATA but the README and this list: "<sha256>  <relative path>"

STS = DATA / "ibsi_sts"  # IBSI soft-tissue sarcoma: PET (SUV), and CT for four patients
STS_NIFTI = STS / "nifti"  # STS_0NN/{PET,CT}_{image,mask}.nii.gz
STS_MANIFEST = STS / "manifest.yaml"  # all 51 PET studies with their tumour masks, no outcomes
STS_DICOM = STS / "dicom"  # STS_0NN/PET/*.dcm
STS_WITH_CT = ("STS_008", "STS_019", "STS_025", "STS_042")  # the four patients of the set that have a CT
TOTALSEG = DATA / "totalseg_example"  # TotalSegmentator's abdominal CT, its segmentation, and a DICOM CT series
DEEPSURV = DATA / "deepsurv_2018"  # the DeepSurv paper's four HDF5 cohorts; $BENCH_DATA_DIR=DATA finds them


def listed_files() -> dict[str, str]:
    """Relative path -> sha256, as ``SHA256SUMS`` lists them."""
    listed = {}
    for line in SHA256SUMS.read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        listed[path.lstrip("*")] = digest  # '*' marks binary mode in sha256sum's format
    return listed
