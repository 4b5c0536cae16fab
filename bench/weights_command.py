"""``bench weights lock``: record a weights file's sha256 (and hub commit) in the weights lock.

Beside ``bench/commands.py`` (parsed by ``bench.cli`` like every command): it checks what it is
given, calls ``bench.plugins.weights.lock_weights`` and prints the entry it wrote.
"""

from __future__ import annotations

import argparse

from bench.errors import UsageError


def cmd_weights(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from bench.plugins.registry import EXTRACTORS
    from bench.plugins.weights import lock_weights
    from bench.plugins.weights_lock import lock_path

    source = None
    if args.extractor:
        cls = EXTRACTORS.load(args.extractor)
        if "weights" not in {f.name for f in fields(cls.Config)}:
            raise UsageError(f"extractor {args.extractor!r} has no weights; name one that has (resnet3d, "
                             "medsam2_memory, timm), or lock a file with --weights PATH alone")  # fmt: skip
        published = getattr(cls, "weights_source", None)
        if published is None and not args.weights:
            raise UsageError(f"extractor {args.extractor!r} has no published weights file of its own; give the "
                             "file to lock with --weights PATH")  # fmt: skip
        source = published() if published is not None else None
    entry = lock_weights(args.extractor or "", args.weights or "", source)
    revision = f", revision {entry.revision}" if entry.revision else ""
    print(f"locked {entry.name}: sha256 {entry.sha256}{revision} (from {entry.source}) in {lock_path()}")
    return 0
