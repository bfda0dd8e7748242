"""Curriculum taxonomies in the `learningdomains.json` schema: loading, validation, look-ups."""

from obs_platform.taxonomy.model import (
    Attribute,
    Domain,
    Label,
    ProgressionLevel,
    ProgressionPoint,
    Taxonomy,
    TaxonomyError,
    default_taxonomy_path,
    load_taxonomy,
    normalise_key,
)

__all__ = [
    "Attribute",
    "Domain",
    "Label",
    "ProgressionLevel",
    "ProgressionPoint",
    "Taxonomy",
    "TaxonomyError",
    "default_taxonomy_path",
    "load_taxonomy",
    "normalise_key",
]
