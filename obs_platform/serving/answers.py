"""A generated answer as a prediction: what every generative model (the local `sft` model, a tuned Gemini asked
online or in a batch job) goes through, so `valid`, `repaired` and `invalid` mean the same for all of them.

The answer is read with the trainer's reader (`trainer.answers.read_answer`, which never raises) against a label
space; an answer naming no label of the taxonomy becomes an `invalid` prediction, which every evaluation counts
as wrong.
"""

from __future__ import annotations

from trainer.answers import LabelSpace, ReadAnswer, Tag, read_answer

from obs_platform.predictions import Prediction, Suggestion
from obs_platform.taxonomy import Taxonomy


def taxonomy_label_space(taxonomy: Taxonomy) -> LabelSpace:
    """Every label of the taxonomy, as the reader's label space (a tuned Gemini was taught all of them)."""
    return LabelSpace.from_tags(
        Tag(taxonomy.domain(attribute.domain_id).key, attribute.name, level.title)
        for attribute in taxonomy.attributes
        for level in taxonomy.levels
    )


def read_prediction(text: str, space: LabelSpace, taxonomy: Taxonomy, probability: float) -> Prediction:
    """The prediction an answer's text names, with `probability` as the confidence of its primary tag."""
    return answer_prediction(read_answer(text, space), taxonomy, probability)


def answer_prediction(read: ReadAnswer, taxonomy: Taxonomy, probability: float) -> Prediction:
    if read.tag is None:
        return Prediction.invalid(read.problem)
    tags = [_attribute_id(taxonomy, t.domain, t.attribute) for t in (read.tag, *read.secondary)]
    if tags[0] is None:
        return Prediction.invalid(f"{read.tag.attribute!r} is not an attribute of this taxonomy")
    found = [t for t in tags if t is not None]
    suggestions = [Suggestion.of(taxonomy, a, probability if n == 0 else 0.0) for n, a in enumerate(found)]
    return Prediction.ranked(
        suggestions,
        read.tag.level,
        probability,
        tags=[s.attribute_id for s in suggestions],
        status="ok" if read.status == "valid" else read.status,
        problem=read.problem,
    )


def _attribute_id(taxonomy: Taxonomy, domain_key: str, attribute_name: str) -> int | None:
    try:
        domain = taxonomy.domain_by_key(domain_key)
    except KeyError:
        return None
    return next((a.id for a in domain.attributes if a.name == attribute_name), None)
