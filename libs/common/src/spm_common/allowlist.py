"""Which fields of an event's data a consumer keeps, derived from its payload models: the audit trail stores
nothing else, so a field nobody declared (a shop's `note`, a card number under a new name) never enters it.

A `FieldTree` maps a field's name to None (kept as it is) or to the tree of the model it holds (a nested model,
a list of them, or an optional one). `spm-admin docs` writes every event's tree, from the models each service
publishes and consumes, into the audit package (`audit/trail_fields.json`), so each image carries what it
needs and the models stay the one place the fields are declared.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Union

from pydantic import BaseModel

FieldTree = dict[str, "FieldTree | None"]


def fields_of(model: type[BaseModel]) -> FieldTree:
    """The tree of `model`'s fields, by the names they travel under."""
    tree: FieldTree = {}
    for name, info in model.model_fields.items():
        subtree: FieldTree | None = None
        for inner in _models_in(info.annotation):
            subtree = merge(subtree or {}, fields_of(inner))
        tree[info.alias or name] = subtree
    return tree


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a field holds: itself, an optional one, a list (tuple, set) of them. A model inside a
    mapping is kept whole (its keys are data, not names)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset, Union, types.UnionType, typing.Annotated):
        return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]
    return []


def merge(left: FieldTree, right: FieldTree) -> FieldTree:
    """Both trees' fields (two models of one event type, say the publisher's and a consumer's)."""
    out: FieldTree = dict(left)
    for name, subtree in right.items():
        mine = out.get(name)
        if name not in out:
            out[name] = subtree
        elif mine is not None and subtree is not None:
            out[name] = merge(mine, subtree)
        else:
            out[name] = None  # one of them keeps it whole: so does the union
    return out


def keep(value: Any, tree: FieldTree) -> Any:
    """`value` with only the fields of `tree`, at every level it describes."""
    if isinstance(value, dict):
        out = {}
        for name, item in value.items():
            if name in tree:
                subtree = tree[name]
                out[name] = item if subtree is None else keep(item, subtree)
        return out
    if isinstance(value, list):
        return [keep(item, tree) for item in value]
    return value  # a plain value where a model was declared: the consumer's validation would refuse it
