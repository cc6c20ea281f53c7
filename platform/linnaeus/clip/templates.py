"""Prompt templates: how a class name or label becomes the texts whose embeddings are averaged.

`openai` is the 80 ImageNet templates of the CLIP paper (open_clip's list), `single` the form of
BioCLIP's training captions ("a photo of {}."), `none` the text as given. Evaluation, label banks, the
service and bulk prediction all pick from this one table.
"""

from __future__ import annotations

from typing import Callable

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

Template = Callable[[str], str]

TEMPLATES: dict[str, tuple[Template, ...]] = {
    "openai": tuple(OPENAI_IMAGENET_TEMPLATES),
    "single": (lambda c: f"a photo of {c}.",),
    "none": (lambda c: c,),
}


def templates(name: str) -> tuple[Template, ...]:
    """The templates named `name`; a ValueError naming the known sets otherwise."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"templates: {name!r} is not one of {sorted(TEMPLATES)}") from None
