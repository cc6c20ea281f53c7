"""Text sources: where a training caption comes from, as a registry (`sources`), with BioCLIP's five
taxonomic text types as the built-in source (`taxonomic`). Plain Python: no torch, no Ray."""

from linnaeus.text import taxonomic  # noqa: F401  (registers the built-in source)
from linnaeus.text.sources import TEXT_SOURCES, Mixing, TextSampler, TextSource, make_source

__all__ = ["TEXT_SOURCES", "Mixing", "TextSampler", "TextSource", "make_source"]
