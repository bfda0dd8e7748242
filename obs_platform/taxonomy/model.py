"""Load and validate a curriculum taxonomy written in the original system's `learningdomains.json` schema.

The schema is domains → attributes → progression points. Progression points carry the progression
level they belong to (`progressionPointsId` / `progressionPointsTitle`); the ordered set of those
levels is what the platform predicts as "level". Nothing here is specific to one curriculum: the
shipped EYFS file and the seed system's US file both load through the same code.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalise_key(text: str) -> str:
    """`"Personal, Social & Emotional Development"` → `"personal_social_emotional_development"`."""
    return _NON_ALNUM.sub("_", text.lower()).strip("_")


def normalise_level_title(text: str) -> str:
    """Level titles compare case- and punctuation-insensitively (`"three and four year olds"`)."""
    return normalise_key(text)


def default_taxonomy_path() -> Path:
    """The EYFS (England, 2021) taxonomy shipped inside the package."""
    return Path(str(resources.files("obs_platform.taxonomy") / "learningdomains.json"))


class TaxonomyError(ValueError):
    """The taxonomy file is unusable; `problems` names every offending entry."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        listed = "\n".join(f"  - {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"invalid taxonomy {source}: {len(problems)} problem(s)\n{listed}{more}")


@dataclass(frozen=True)
class ProgressionLevel:
    """One step of the progression scale (e.g. "Reception"), ordered by `id`."""

    id: int
    title: str

    @property
    def key(self) -> str:
        return normalise_level_title(self.title)


@dataclass(frozen=True)
class ProgressionPoint:
    id: int
    level: ProgressionLevel
    description: str
    sort_order: int
    description_order: str | None
    hidden: bool


@dataclass(frozen=True)
class Attribute:
    id: int
    number: int
    name: str
    information: str
    sort_order: int
    domain_id: int
    points: tuple[ProgressionPoint, ...]

    @property
    def key(self) -> str:
        return normalise_key(self.name)

    @cached_property
    def label_levels(self) -> tuple[ProgressionLevel, ...]:
        """Levels usable as a label: those with at least one visible progression point."""
        levels = {p.level for p in self.points if not p.hidden}
        return tuple(sorted(levels, key=lambda lvl: lvl.id))

    def describe_level(self, level: ProgressionLevel) -> str:
        """The visible progression-point descriptions of one level, joined (used in prompts and reports)."""
        return " ".join(p.description for p in self.points if p.level == level and not p.hidden)


@dataclass(frozen=True)
class Domain:
    id: int
    name: str
    category_name: str
    category_title: str
    sort_order: int
    attributes: tuple[Attribute, ...]

    @property
    def key(self) -> str:
        return normalise_key(self.category_name or self.name)


@dataclass(frozen=True)
class Label:
    """A (domain, attribute, level) triple: what an observation is tagged with."""

    domain_id: int
    attribute_id: int
    level_title: str


@dataclass(frozen=True)
class Taxonomy:
    source: str
    sha256: str
    domains: tuple[Domain, ...]
    _attributes: Mapping[int, Attribute] = field(repr=False)
    _domains: Mapping[int, Domain] = field(repr=False)

    # ----- look-ups -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return Path(self.source).parent.name if self.source.endswith("learningdomains.json") else self.source

    @property
    def attributes(self) -> tuple[Attribute, ...]:
        return tuple(a for d in self.domains for a in d.attributes)

    def domain(self, domain_id: int) -> Domain:
        try:
            return self._domains[domain_id]
        except KeyError:
            raise KeyError(f"unknown domain id {domain_id}") from None

    def attribute(self, attribute_id: int) -> Attribute:
        try:
            return self._attributes[attribute_id]
        except KeyError:
            raise KeyError(f"unknown attribute id {attribute_id}") from None

    @cached_property
    def _domains_by_key(self) -> dict[str, Domain]:
        return {d.key: d for d in self.domains}

    def domain_by_key(self, key: str) -> Domain:
        try:
            return self._domains_by_key[normalise_key(key)]
        except KeyError:
            raise KeyError(f"unknown domain key {key!r}") from None

    @cached_property
    def levels(self) -> tuple[ProgressionLevel, ...]:
        """Every progression level in scale order."""
        found = {p.level for a in self.attributes for p in a.points}
        return tuple(sorted(found, key=lambda lvl: lvl.id))

    @cached_property
    def _levels_by_key(self) -> dict[str, ProgressionLevel]:
        return {lvl.key: lvl for lvl in self.levels}

    def level(self, title: str) -> ProgressionLevel:
        """Resolve a level title, forgiving case, spacing and punctuation."""
        try:
            return self._levels_by_key[normalise_level_title(title)]
        except KeyError:
            raise KeyError(f"unknown progression level {title!r}") from None

    def level_index(self, title: str) -> int:
        """0-based position of a level on the ordinal scale (for within-one-level metrics)."""
        return self.levels.index(self.level(title))

    # ----- label validation -----------------------------------------------------------------
    def label_problems(self, domain_id: Any, attribute_id: Any, level_title: Any) -> list[str]:
        """Why a label is invalid (empty when it is valid); one message per problem."""
        problems: list[str] = []
        if domain_id not in self._domains:
            problems.append(f"unknown domain id {domain_id!r}")
        if attribute_id not in self._attributes:
            problems.append(f"unknown attribute id {attribute_id!r}")
        elif domain_id in self._domains and self._attributes[attribute_id].domain_id != domain_id:
            owner = self._attributes[attribute_id].domain_id
            problems.append(f"attribute {attribute_id} belongs to domain {owner}, not {domain_id}")
        if not isinstance(level_title, str) or normalise_level_title(level_title) not in self._levels_by_key:
            problems.append(f"unknown progression level {level_title!r}")
        elif attribute_id in self._attributes:
            level = self.level(level_title)
            if level not in self._attributes[attribute_id].label_levels:
                problems.append(f"level {level.title!r} has no visible progression point for attribute {attribute_id}")
        return problems

    @cached_property
    def valid_label_keys(self) -> frozenset[str]:
        """`"<attribute_id>|<level key>"` for every usable (attribute, level) pair: vectorised checks use it."""
        return frozenset(f"{a.id}|{lvl.key}" for a in self.attributes for lvl in a.label_levels)

    @cached_property
    def attribute_domain(self) -> dict[int, int]:
        return {a.id: a.domain_id for a in self.attributes}


# ----- loading --------------------------------------------------------------------------------


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Load and validate a `learningdomains.json`; the packaged EYFS taxonomy when `path` is None."""
    source = Path(path) if path is not None else default_taxonomy_path()
    try:
        raw_bytes = source.read_bytes()
    except OSError as exc:
        raise TaxonomyError(str(source), [f"cannot read file: {exc}"]) from exc
    try:
        document = json.loads(raw_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TaxonomyError(str(source), [f"not valid JSON: {exc}"]) from exc
    return parse_taxonomy(document, source=str(source), sha256=hashlib.sha256(raw_bytes).hexdigest())


def parse_taxonomy(document: Any, *, source: str = "<memory>", sha256: str = "") -> Taxonomy:
    """Build a `Taxonomy` from the decoded JSON, collecting every problem before failing."""
    problems: list[str] = []
    if not isinstance(document, Mapping) or not isinstance(document.get("domains"), list) or not document["domains"]:
        raise TaxonomyError(source, ["top level must be an object with a non-empty 'domains' list"])

    level_titles = _majority_level_titles(document)
    point_ids: dict[int, str] = {}
    attributes: dict[int, Attribute] = {}
    domains: list[Domain] = []
    domain_ids: set[int] = set()

    for d_index, raw_domain in enumerate(document["domains"]):
        where = f"domains[{d_index}]"
        fields = _require(raw_domain, where, {"id": int, "name": str, "sortOrder": int}, problems)
        if fields is None:
            continue
        where = f"{where} (id {fields['id']}, {fields['name']!r})"
        if fields["id"] in domain_ids:
            problems.append(f"{where}: duplicate domain id {fields['id']}")
        domain_ids.add(fields["id"])
        domain_attributes: list[Attribute] = []
        raw_attributes = raw_domain.get("attributes")
        if not isinstance(raw_attributes, list) or not raw_attributes:
            problems.append(f"{where}: has no attributes")
            raw_attributes = []
        for a_index, raw_attribute in enumerate(raw_attributes):
            attribute = _parse_attribute(
                raw_attribute, f"{where}.attributes[{a_index}]", fields["id"], level_titles, point_ids, problems
            )
            if attribute is None:
                continue
            if attribute.id in attributes:
                problems.append(f"{where}.attributes[{a_index}]: duplicate attribute id {attribute.id}")
            attributes[attribute.id] = attribute
            domain_attributes.append(attribute)
        keys = [a.key for a in domain_attributes]
        for key in sorted({k for k in keys if keys.count(k) > 1}):
            problems.append(f"{where}: two attributes normalise to the same key {key!r}")
        domains.append(
            Domain(
                id=fields["id"],
                name=fields["name"],
                category_name=str(raw_domain.get("categoryName") or fields["name"]),
                category_title=str(raw_domain.get("categoryTitle") or ""),
                sort_order=fields["sortOrder"],
                attributes=tuple(sorted(domain_attributes, key=lambda a: (a.sort_order, a.id))),
            )
        )

    domain_keys = [d.key for d in domains]
    for key in sorted({k for k in domain_keys if domain_keys.count(k) > 1}):
        problems.append(f"two domains normalise to the same key {key!r}")
    if problems:
        raise TaxonomyError(source, problems)
    ordered = tuple(sorted(domains, key=lambda d: (d.sort_order, d.id)))
    return Taxonomy(
        source=source,
        sha256=sha256,
        domains=ordered,
        _attributes=attributes,
        _domains={d.id: d for d in ordered},
    )


def _parse_attribute(
    raw: Any,
    where: str,
    domain_id: int,
    level_titles: dict[int, str],
    point_ids: dict[int, str],
    problems: list[str],
) -> Attribute | None:
    fields = _require(raw, where, {"id": int, "name": str}, problems)
    if fields is None:
        return None
    where = f"{where} (id {fields['id']}, {fields['name']!r})"
    raw_points = raw.get("progressionPoints")
    if not isinstance(raw_points, list) or not raw_points:
        problems.append(f"{where}: has no progression points")
        raw_points = []
    points: list[ProgressionPoint] = []
    for p_index, raw_point in enumerate(raw_points):
        p_where = f"{where}.progressionPoints[{p_index}]"
        p = _require(
            raw_point,
            p_where,
            {"id": int, "progressionPointsId": int, "progressionPointsTitle": str, "description": str},
            problems,
        )
        if p is None:
            continue
        if p["id"] in point_ids:
            problems.append(f"{p_where}: duplicate progression point id {p['id']} (first seen at {point_ids[p['id']]})")
        point_ids.setdefault(p["id"], p_where)
        title = p["progressionPointsTitle"].strip()
        known = level_titles.get(p["progressionPointsId"], title)
        if normalise_level_title(known) != normalise_level_title(title):
            problems.append(
                f"{p_where}: level id {p['progressionPointsId']} is titled {title!r} here but {known!r} elsewhere"
            )
        if not p["description"].strip():
            problems.append(f"{p_where}: empty description")
        hidden = raw_point.get("isProgressionHidden", 0)
        order = raw_point.get("descriptionOrder")
        points.append(
            ProgressionPoint(
                id=p["id"],
                level=ProgressionLevel(p["progressionPointsId"], known),
                description=p["description"].strip(),
                sort_order=int(raw_point.get("sortOrder") or p_index + 1),
                description_order=None if order in (None, "NULL", "") else str(order),
                hidden=bool(hidden),
            )
        )
    if points and all(p.hidden for p in points):
        problems.append(f"{where}: every progression point is hidden, so no level can be used as a label")
    return Attribute(
        id=fields["id"],
        number=int(raw.get("number") or 0),
        name=fields["name"].strip(),
        information=str(raw.get("categoryInformation") or ""),
        sort_order=int(raw.get("sortOrder") or 0),
        domain_id=domain_id,
        points=tuple(sorted(points, key=lambda p: (p.sort_order, p.id))),
    )


def _majority_level_titles(document: Mapping[str, Any]) -> dict[int, str]:
    """Each level id's most common title: the odd one out is the entry reported as wrong."""
    seen: dict[int, Counter[str]] = {}
    for domain in document["domains"]:
        for attribute in domain.get("attributes") or [] if isinstance(domain, Mapping) else []:
            for point in attribute.get("progressionPoints") or [] if isinstance(attribute, Mapping) else []:
                if isinstance(point, Mapping) and isinstance(point.get("progressionPointsId"), int):
                    title = str(point.get("progressionPointsTitle") or "").strip()
                    seen.setdefault(point["progressionPointsId"], Counter())[title] += 1
    return {level_id: titles.most_common(1)[0][0] for level_id, titles in seen.items()}


def _require(raw: Any, where: str, spec: dict[str, type], problems: list[str]) -> dict[str, Any] | None:
    """Check that `raw` is an object holding `spec`'s keys with the right types; note each miss."""
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected an object, got {type(raw).__name__}")
        return None
    found: dict[str, Any] = {}
    ok = True
    for key, kind in spec.items():
        value = raw.get(key)
        if value is None:
            problems.append(f"{where}: missing {key!r}")
            ok = False
        elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{where}: {key!r} must be an integer, got {value!r}")
            ok = False
        elif kind is str and (not isinstance(value, str) or not value.strip()):
            problems.append(f"{where}: {key!r} must be a non-empty string, got {value!r}")
            ok = False
        else:
            found[key] = value
    return found if ok else None
