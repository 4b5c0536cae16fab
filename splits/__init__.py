"""Frozen patient-level splits: the code here, the split files in ``<dataset>/<name>.json``."""

from splits.frozen import Fold, Split, import_split, load_split, make_split, save_split, splits_dir

__all__ = ["Fold", "Split", "import_split", "load_split", "make_split", "save_split", "splits_dir"]
