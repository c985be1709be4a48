"""The folder layout of an evaluation set, as ``rankclip eval`` reads it (clip_benchmark's ``wds`` layout).

Every writer of evaluation sets (the converters of ``rankclip.evalsets``, the demo's shapes, emoji and
Fashion-MNIST sets) and the reader (``rankclip.eval.datasets``) take the file names from here::

    dataset_type.txt                        classification | retrieval
    classnames.txt                          one class name per line (classification)
    zeroshot_classification_templates.txt   prompts, {c} = class name (classification)
    class_subset.txt                        optional: the class indices zero-shot logits are restricted to
    <split>/0.tar ... <split>/nshards.txt   webdataset shards: jpg|png + cls (label) or txt (captions)

Plain Python (the workflow names a set's ``dataset_type.txt`` as its rule's output while parsing).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rankclip.atomic import write_atomic_text

__all__ = [
    "CLASSNAMES_FILE",
    "CLASS_SUBSET_FILE",
    "DATASET_TYPES",
    "DATASET_TYPE_FILE",
    "LAYOUT_FILES",
    "NSHARDS_FILE",
    "SHARD_NAME",
    "TEMPLATES_FILE",
    "lines",
    "write_layout",
    "write_shard_count",
]

DATASET_TYPE_FILE = "dataset_type.txt"
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"
CLASS_SUBSET_FILE = "class_subset.txt"
NSHARDS_FILE = "nshards.txt"
SHARD_NAME = "{index}.tar"  # a split's shards: 0.tar, 1.tar, ...
LAYOUT_FILES = (DATASET_TYPE_FILE, CLASSNAMES_FILE, TEMPLATES_FILE, CLASS_SUBSET_FILE)
DATASET_TYPES = ("classification", "retrieval")


def lines(items: Iterable) -> str:
    """One item per line, each ending in a newline."""
    return "".join(f"{item}\n" for item in items)


def write_layout(
    out: Path,
    dataset_type: str,
    *,
    classnames: Iterable[str] | None = None,
    templates: Iterable[str] | None = None,
    class_subset: Iterable[int] | None = None,
) -> None:
    """The small text files of the layout, ``dataset_type.txt`` last (the shards: ``write_shard_count``)."""
    if dataset_type not in DATASET_TYPES:
        raise ValueError(f"dataset_type must be one of {DATASET_TYPES}, got {dataset_type!r}")
    out = Path(out)
    if classnames is not None:
        names = [str(name).strip() for name in classnames]
        if not names or any(not n or "\n" in n for n in names):
            raise ValueError("class names must be non-empty single lines")
        write_atomic_text(out / CLASSNAMES_FILE, lines(names))
    if templates is not None:
        templates = list(templates)
        if not templates or any("{c}" not in t for t in templates):
            raise ValueError(f"every template must contain '{{c}}': {templates}")
        write_atomic_text(out / TEMPLATES_FILE, lines(templates))
    if class_subset is not None:
        write_atomic_text(out / CLASS_SUBSET_FILE, lines(int(i) for i in class_subset))
    write_atomic_text(out / DATASET_TYPE_FILE, f"{dataset_type}\n")


def write_shard_count(split_dir: Path, count: int) -> None:
    """``<split>/nshards.txt``: how many shards (``0.tar`` ... ``{count - 1}.tar``) the split has."""
    write_atomic_text(Path(split_dir) / NSHARDS_FILE, f"{count}\n")
