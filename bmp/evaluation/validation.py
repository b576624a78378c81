"""The rules an annotation file must meet before ``bmp eval`` runs a single image.

pycocotools trusts its input: duplicate ids silently drop an image, a string id
fails an assertion only after every image has run, a car category is scored as
people. So the parsed JSON is checked here first, in one pass that takes well
under a second on a COCO val file, and the first broken rule is reported in
one line that names the entry (``images[3] (id 785)``) and how many others
break it too.

The rules, in the order they are checked:

1. The file is a JSON object with lists ``images``, ``annotations`` and
   ``categories``, and at least one image.
2. Every entry of those lists is an object with its required keys.
3. Ids are JSON integers in [0, 2**63) (``"785"``, ``785.0`` and ``true`` are
   not) and unique per list. Annotation ids may be left out (OCHuman); present ones are unique.
4. Images: ``file_name`` is a non-empty string without NUL that names a file,
   unique once ``./`` and ``//`` are normalised away (results are keyed by
   it); ``height`` and ``width`` are positive integers.
5. Categories: ``name`` is a string; ``keypoints``, if given, a list of names.
   The evaluated category is ``--category NAME|ID`` or else the one named
   ``person``; any other only category is an error, not a person.
6. Annotations: ``image_id`` names an image and ``category_id`` a category.
7. Persons (annotations of the evaluated category), where a field is given:
   ``bbox`` is 4 finite numbers with width and height >= 0; ``area`` a finite
   number >= 0; ``iscrowd`` 0 or 1; ``num_keypoints`` an integer >= 0;
   ``keypoints`` finite numbers, 3 per keypoint of the category (or, without
   keypoint names, as many as every other person's); ``segmentation``
   polygons of >= 3 finite points, or an RLE of the image's size. A person
   has a bbox or a segmentation.

Separately, :func:`outside_images` is the rule that keeps a ``file_name`` inside
the images folder; an image that breaks it is refused and reported, not fatal.
"""

from __future__ import annotations

import math
import posixpath
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ..config import ConfigError

#: Ids must survive numpy's int64 in pycocotools.
MAX_ID = 2**63 - 1

Entry = dict[str, Any]
#: A rule on one entry: None when it holds, else what is wrong.
Rule = Callable[[Entry], "str | None"]


class DatasetError(ConfigError):
    """An annotation file or images folder that cannot be evaluated."""


def check_annotation_file(data: Any, path: Path, category: str | None = None) -> Entry:
    """Check every rule on a parsed annotation file; return the category to evaluate.

    Args:
        data: the parsed JSON.
        path: the file, for messages.
        category: ``--category``: a category name or id; default: ``person``.
    Raises:
        DatasetError: one line naming the first broken rule.
    """
    _check_layout(data, path)
    images, annotations, categories = data["images"], data["annotations"], data["categories"]
    _check_entries(path, "images", list(enumerate(images)), IMAGE_RULES)
    _check_unique(path, "images", [i["id"] for i in images], "id")
    _check_unique(path, "images", [posixpath.normpath(i["file_name"]) for i in images], "file_name")
    _check_entries(path, "categories", list(enumerate(categories)), CATEGORY_RULES)
    _check_unique(path, "categories", [c["id"] for c in categories], "id")
    chosen = select_category(categories, path, category)
    image_ids = {i["id"]: i for i in images}
    category_ids = {c["id"] for c in categories}
    rules = annotation_rules(image_ids, category_ids)
    _check_entries(path, "annotations", list(enumerate(annotations)), rules)
    _check_unique(path, "annotations", [a["id"] for a in annotations if "id" in a], "id")
    persons = [(n, a) for n, a in enumerate(annotations) if a["category_id"] == chosen["id"]]
    _check_entries(path, "annotations", persons, person_rules(image_ids, chosen, persons))
    return chosen


def select_category(categories: Sequence[Entry], path: Path, wanted: str | None) -> Entry:
    """``--category`` by id (digits) or name (any case), else the one named person."""
    names = [c["name"] for c in categories][:10]
    if wanted is None:
        found = [c for c in categories if c["name"].strip().lower() == "person"]
        if len(found) != 1:
            raise DatasetError(
                f"{path} has no single 'person' category (categories: {names}); "
                "name the one to evaluate with --category NAME|ID"
            )
        return dict(found[0])
    key = wanted.strip()
    if key.isascii() and key.isdigit():
        found = [c for c in categories if c["id"] == int(key)]
    else:
        found = [c for c in categories if c["name"].strip().lower() == key.lower()]
    if len(found) != 1:
        which = "no" if not found else "more than one"
        raise DatasetError(f"--category {wanted!r}: {path} has {which} such category (categories: {names})")
    return dict(found[0])


def outside_images(name: str, root: Path) -> str | None:
    """Why ``file_name`` ``name`` leaves the images folder ``root``, or None.

    The annotation file may pick any entry of the folder's tree but not walk
    out of it: absolute names, ``..`` and folders that resolve (through links)
    outside ``root`` are refused. The last part may be a link to a file:
    folders of links to images are a common way to assemble a dataset, and
    those links were made by whoever made the folder, not by the annotation file.
    """
    pure = PurePosixPath(name)
    if pure.is_absolute():
        return f"file name {name!r} is absolute, outside the images folder"
    if ".." in pure.parts:
        return f"file name {name!r} goes up with '..', out of the images folder"
    try:
        folder = (root / pure).parent.resolve()
        inside = folder.is_relative_to(root.resolve())
    except (OSError, RuntimeError) as exc:  # RuntimeError: a link loop on Python < 3.13
        return f"file name {name!r} cannot be resolved: {exc}"
    if not inside:
        return f"file name {name!r} leads out of the images folder through a link (to {folder})"
    return None


# Layout, entries and uniqueness ---------------------------------------------------


def _check_layout(data: Any, path: Path) -> None:
    if not isinstance(data, dict):
        raise DatasetError(f"{path} is not a COCO-format file: a {type(data).__name__}, not an object")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"{path} is not a COCO-format file: it has no {key!r} list")
        if not isinstance(data[key], list):
            raise DatasetError(f"{path}: {key!r} is a {type(data[key]).__name__}, not a list")
    if not data["images"]:
        raise DatasetError(f"{path} has no images")


def _check_entries(path: Path, kind: str, indexed: Sequence[tuple[int, Any]], rules: Sequence[Rule]) -> None:
    """Apply ``rules`` in order to every ``(index in the file, entry)``; a rule runs
    only once every entry passed the rules before it, which it may rely on."""
    for rule in rules:
        broken = [(n, e, p) for n, e in indexed if (p := rule(e)) is not None]
        if broken:
            n, entry, problem = broken[0]
            more = f" ({len(broken) - 1} more {kind} break this rule)" if len(broken) > 1 else ""
            raise DatasetError(f"{path}: {_label(kind, n, entry)}: {problem}{more}")


def _check_unique(path: Path, kind: str, values: list[Any], key: str) -> None:
    repeated = [v for v, count in Counter(values).items() if count > 1]
    if repeated:
        shown = ", ".join(repr(v) for v in repeated[:5]) + (", ..." if len(repeated) > 5 else "")
        raise DatasetError(f"{path}: {kind} repeat the {key} {shown}; every {key} must be unique")


def _label(kind: str, index: int, entry: Any) -> str:
    if isinstance(entry, dict) and _is_int(entry.get("id")):
        return f"{kind}[{index}] (id {entry['id']})"
    return f"{kind}[{index}]"


# Rules on one entry ----------------------------------------------------------------


def _object_with(*keys: str) -> Rule:
    def rule(entry: Any) -> str | None:
        if not isinstance(entry, dict):
            return f"is a {type(entry).__name__} ({entry!r:.60}), not an object"
        missing = [k for k in keys if k not in entry]
        return f"has no {', '.join(missing)}" if missing else None
    return rule


def _integer(key: str, minimum: int = 0) -> Rule:
    def rule(entry: Entry) -> str | None:
        if key not in entry:
            return None
        value = entry[key]
        if not _is_int(value):
            return f"{key} is {value!r:.60} ({type(value).__name__}), not an integer"
        if not minimum <= value <= MAX_ID:
            return f"{key} {value} is out of range [{minimum}, 2**63)"
        return None
    return rule


def _file_name(entry: Entry) -> str | None:
    name = entry["file_name"]
    if not isinstance(name, str) or "\0" in name or not PurePosixPath(name).name:
        return f"file_name {name!r:.80} does not name a file"
    return None


def _category_fields(entry: Entry) -> str | None:
    if not isinstance(entry["name"], str):
        return f"name is {entry['name']!r:.60}, not a string"
    names = entry.get("keypoints")
    if names is not None and not (isinstance(names, list) and all(isinstance(k, str) for k in names)):
        return f"keypoints is {names!r:.60}, not a list of keypoint names"
    return None


IMAGE_RULES: list[Rule] = [
    _object_with("id", "file_name", "height", "width"),
    _integer("id"),
    _file_name,
    _integer("height", minimum=1),
    _integer("width", minimum=1),
]

CATEGORY_RULES: list[Rule] = [_object_with("id", "name"), _integer("id"), _category_fields]


def annotation_rules(images: dict[int, Entry], categories: set[int]) -> list[Rule]:
    def refers(entry: Entry) -> str | None:
        if entry["image_id"] not in images:
            return f"image_id {entry['image_id']!r:.60} is not the id of any image"
        if entry["category_id"] not in categories:
            return f"category_id {entry['category_id']!r:.60} is not the id of any category"
        return None
    return [_object_with("image_id", "category_id"), _integer("id"), _integer("image_id"),
            _integer("category_id"), refers]


def person_rules(images: dict[int, Entry], category: Entry, persons: list[tuple[int, Entry]]) -> list[Rule]:
    """Rules on the geometry of the annotations that are scored."""
    names = category.get("keypoints")
    if names:
        num_values, source = 3 * len(names), f"the category's {len(names)} keypoints"
    else:  # no names: every person must agree with the first one that has keypoints
        first = next((a["keypoints"] for _, a in persons if _given(a, "keypoints")), [])
        num_values, source = len(first), "the first person's keypoints"

    def keypoints(entry: Entry) -> str | None:
        if not _given(entry, "keypoints"):
            return None
        values = entry["keypoints"]
        if not _finite_numbers(values):
            return f"keypoints {values!r:.60} are not all finite numbers"
        if len(values) != num_values or len(values) % 3:
            return f"has {len(values)} keypoint values; {source} make {num_values} (x, y, v per keypoint)"
        return None

    def segmentation(entry: Entry) -> str | None:
        if not _given(entry, "segmentation"):
            return None
        image = images[entry["image_id"]]
        return _segmentation_problem(entry["segmentation"], image["height"], image["width"])

    return [_bbox, _area, _iscrowd, _integer("num_keypoints", minimum=0), keypoints, segmentation,
            _box_or_mask]


def _bbox(entry: Entry) -> str | None:
    if not _given(entry, "bbox"):
        return None
    box = entry["bbox"]
    if not _finite_numbers(box) or len(box) != 4 or box[2] < 0 or box[3] < 0:
        return f"bbox {box!r:.80} is not [x, y, width, height] of finite numbers with width, height >= 0"
    return None


def _area(entry: Entry) -> str | None:
    if "area" in entry and not (_finite_numbers([entry["area"]]) and entry["area"] >= 0):
        return f"area {entry['area']!r:.60} is not a finite number >= 0"
    return None


def _iscrowd(entry: Entry) -> str | None:
    if "iscrowd" in entry and entry["iscrowd"] not in (0, 1):
        return f"iscrowd is {entry['iscrowd']!r:.60}, not 0 or 1"
    return None


def _box_or_mask(entry: Entry) -> str | None:
    if not _given(entry, "bbox") and not _given(entry, "segmentation"):
        return "has neither bbox nor segmentation"
    return None


def _segmentation_problem(segm: Any, height: int, width: int) -> str | None:
    if isinstance(segm, list):
        for polygon in segm:
            if not _finite_numbers(polygon) or len(polygon) < 6 or len(polygon) % 2:
                return f"segmentation polygon {polygon!r:.60} is not >= 3 (x, y) points of finite numbers"
        return None
    if not isinstance(segm, dict) or "counts" not in segm or "size" not in segm:
        return f"segmentation {segm!r:.60} is neither polygons nor an RLE with counts and size"
    if segm["size"] != [height, width]:
        size = f"[{height}, {width}]"
        return f"segmentation RLE size {segm['size']!r:.40} is not the image's [height, width] {size}"
    counts = segm["counts"]
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != height * width:
            return f"segmentation RLE counts do not add up to the image's {height} x {width} pixels"
    elif not isinstance(counts, str):
        return f"segmentation RLE counts {counts!r:.60} are neither a string nor a list"
    return None


# Values ----------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite_numbers(values: Any) -> bool:
    """A list of ints and floats, none of them NaN or infinite (JSON bools are not numbers)."""
    return isinstance(values, list) and all(
        type(v) is int or (type(v) is float and math.isfinite(v)) for v in values
    )


def _given(entry: Entry, key: str) -> bool:
    """COCO-style files mark an absent field with an empty list as often as by leaving it out."""
    return entry.get(key) not in (None, [], {})
