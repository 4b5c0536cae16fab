"""The real test data in ``tests/data``: every file ``SHA256SUMS`` lists is there, unchanged, and nothing else is."""

from __future__ import annotations

import hashlib

from data_paths import DATA, SHA256SUMS, listed_files

UNLISTED = {"README.md", SHA256SUMS.name}  # the folder's description and the list itself


def test_every_listed_file_exists_with_its_sha256() -> None:
    listed = listed_files()
    assert len(listed) > 100, f"{SHA256SUMS} lists only {len(listed)} files"
    missing = sorted(path for path in listed if not (DATA / path).is_file())
    assert not missing, f"listed in {SHA256SUMS} but missing from {DATA}: {missing}"
    changed = sorted(path for path, digest in listed.items()
                     if hashlib.sha256((DATA / path).read_bytes()).hexdigest() != digest)  # fmt: skip
    assert not changed, f"content differs from the sha256 in {SHA256SUMS}: {changed}"


def test_every_file_is_listed() -> None:
    present = {path.relative_to(DATA).as_posix() for path in DATA.rglob("*") if path.is_file()} - UNLISTED
    unlisted = sorted(present - set(listed_files()))
    assert not unlisted, f"in {DATA} but not in {SHA256SUMS} (see the README to add a file): {unlisted}"
