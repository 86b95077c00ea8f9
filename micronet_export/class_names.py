"""The class names a model was trained with, and how the labels of a data set map onto them.

Names come from an artifact's metadata (``micronet.labels``), a checkpoint's card (``classes``),
a names file the user gives (``--labels names.txt``) or, for a 1000-class model, ImageNet-1k
(``labels/imagenet-1k-classes.tsv``: WordNet id and synonyms). Labels (folder names or CSV
values) map to class indices by these rules, every label on its own:

- a label equal to a class name, ignoring case, spaces, underscores and punctuation
  (``Trouser``, ``t-shirt top``, ``n01440764``) is that class;
- an integer label (``8``) is that index, as given;
- ``N_name`` (``1_Trouser``) is index N; when ``name`` is another class's name, that is an error.

When no label is identified by these rules, the labels are ranked by sorted name
(torchvision's ImageFolder rule); the one-line ``rule`` says so, and says which rule was used in
every other case too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from micronet_export.errors import UserError

IMAGENET_TSV = Path(__file__).resolve().parent / "labels" / "imagenet-1k-classes.tsv"
IMAGENET_CLASSES = 1000
_NUMBERED = re.compile(r"^(\d+)[_\-. ]+(.+)$")
_SHOWN = 3


def normalise(name: str) -> str:
    """``T-shirt_top``, ``t-shirt top`` and ``TShirtTop`` are one name."""
    return "".join(ch for ch in name.casefold() if ch.isalnum())


@dataclass(frozen=True)
class ClassNames:
    names: tuple[str, ...]  # index order
    source: str  # said in the mapping rule: where the names come from
    aliases: tuple[tuple[str, ...], ...] = ()  # more names per index (ImageNet: WordNet id, synonyms)

    def indices_by_name(self) -> dict[str, list[int]]:
        table: dict[str, list[int]] = {}
        for index, name in enumerate(self.names):
            extra = self.aliases[index] if self.aliases else ()
            for key in {normalise(n) for n in (name, *extra)} - {""}:
                table.setdefault(key, []).append(index)
        return table


@lru_cache(maxsize=1)
def imagenet_names() -> ClassNames:
    rows = [line.split("\t") for line in IMAGENET_TSV.read_text().splitlines()[1:] if line.strip()]
    names = tuple(row[2].split(",")[0].strip() for row in rows)
    aliases = tuple((row[1], row[2], *(s.strip() for s in row[2].split(","))) for row in rows)
    return ClassNames(names, "ImageNet-1k (1000-class model)", aliases)


def from_metadata(labels_value: str | None, source: str) -> ClassNames | None:
    """Names recorded in an artifact's ``micronet.labels``: a JSON list, or ImageNet-1k."""
    if not labels_value:
        return None
    if labels_value.startswith("imagenet-1k"):
        return imagenet_names()
    try:
        names = json.loads(labels_value)
    except ValueError:
        return None  # "10 classes (no label file)"
    return ClassNames(tuple(str(n) for n in names), source) if isinstance(names, list) and names else None


def from_file(path: Path) -> ClassNames:
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise UserError(f"labels file {path} is empty")
    return ClassNames(names, f"{path} (--labels)")


@dataclass
class LabelMapping:
    indices: np.ndarray  # class index per label, int64
    rule: str  # one line: which rule mapped the labels


@dataclass
class _Resolved:
    index: int | None
    how: str | None  # "name" | "number"


def _resolve(label: str, table: dict[str, list[int]], names: ClassNames | None, kind: str) -> _Resolved:
    hits = table.get(normalise(label), [])
    if len(hits) > 1:
        raise UserError(f"{kind} {label!r} names {len(hits)} classes of {names.source} ({', '.join(map(str, hits))}); "
                        "rename it to one class's index, or pass --labels names.txt")
    if hits:
        return _Resolved(hits[0], "name")
    if label.strip().isdigit():
        return _Resolved(int(label), "number")
    numbered = _NUMBERED.match(label.strip())
    if not numbered:
        return _Resolved(None, None)
    index, named = int(numbered.group(1)), table.get(normalise(numbered.group(2)), [])
    if named and index not in named:
        raise UserError(f"{kind} {label!r} says class {index}, but {numbered.group(2)!r} is class {named[0]} "
                        f"of {names.source}; rename it")
    return _Resolved(index, "number")


def _by_sorted_name(labels: list[str], names: ClassNames | None, kind: str) -> LabelMapping:
    order = sorted(set(labels))
    rank = {label: i for i, label in enumerate(order)}
    shown = ", ".join(f"{label}→{i}" for i, label in enumerate(order[:_SHOWN])) + (", …" if len(order) > _SHOWN else "")
    why = f"no {kind} is a class name of {names.source} or a number" if names else \
        f"the models carry no class names and no {kind} is a number"
    return LabelMapping(np.asarray([rank[label] for label in labels], np.int64),
                        f"{why}: mapped by sorted {kind} name, the ImageFolder rule ({shown}); "
                        "pass --labels names.txt if that is wrong")


def map_labels(labels: list[str], names: ClassNames | None, kind: str = "folder") -> LabelMapping:
    """Class index of every label (``kind`` names what the labels are: folder, CSV label)."""
    table = names.indices_by_name() if names else {}
    resolved = [_resolve(label, table, names, kind) for label in labels]
    unresolved = sorted({label for label, r in zip(labels, resolved) if r.index is None})
    if len(unresolved) == len(set(labels)):
        return _by_sorted_name(labels, names, kind)
    if unresolved:
        known = f"one of the class names of {names.source} ({', '.join(names.names[:_SHOWN])}, …)" if names \
            else "a class name"
        raise UserError(f"{kind} {unresolved[0]!r} is neither {known} nor a class number, while other {kind}s are; "
                        "rename it, or pass --labels names.txt")
    limit = len(names.names) if names else None
    for label, r in zip(labels, resolved):
        if limit is not None and r.index >= limit:
            raise UserError(f"unknown label {label!r}: class {r.index} is beyond the {limit} classes of {names.source}")
    hows = {r.how for r in resolved}
    parts = []
    if "name" in hows:
        parts.append(f"{kind} names matched to the class names of {names.source}")
    if "number" in hows:
        parts.append(f"{kind} numbers (N or N_name) are class indices, as given")
    return LabelMapping(np.asarray([r.index for r in resolved], np.int64), " and ".join(parts))
