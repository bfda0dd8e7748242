"""Training-file formats: Vertex Gemini supervised tuning, chat messages for TRL, and the model's answer.

The answer a model is taught to give (and that serving parses back) is one JSON object:
`{"domain": "<domain key>", "attribute": "<attribute name>", "level": "<level title>",
  "secondary": [{"domain": ..., "attribute": ..., "level": ...}]}`.
"""

from __future__ import annotations

import datetime as dt
import mimetypes
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd

from obs_platform.data.json_lines import Coded, Fragments, Lists, Text
from obs_platform.data.redaction import Redactor, Roster, name_tokens
from obs_platform.taxonomy import Label, Taxonomy
from obs_platform.taxonomy.model import normalise_key

if TYPE_CHECKING:
    from obs_platform.predictions import Instance

PHOTO_MIME_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
}
OSS_SYSTEM_PROMPT = (
    "You tag early-years observations with a curriculum area, goal and progression level. "
    'Answer with JSON: {"domain": ..., "attribute": ..., "level": ..., "secondary": [...]}.'
)


def system_instruction(taxonomy: Taxonomy) -> str:
    """The instruction every Gemini example carries, and serving sends with every request.

    Deliberately short: it is repeated in every training line and billed as tokens on every example and
    request, and a tuned model learns the label space from the answers. The level scale is spelled out
    because its order is what a level means.
    """
    levels = "; ".join(level.title for level in taxonomy.levels)
    return (
        "Tag this early-years observation with one curriculum domain, attribute and progression level. "
        'Reply with JSON only: {"domain": "<domain key>", "attribute": "<attribute name>", "level": "<level>", '
        f'"secondary": [<more tags of the same shape>]}}. Levels, youngest first: {levels}.'
    )


def user_text(notes: str, child_age_months: float | None, observation_date: dt.date | str | None = None) -> str:
    """What a model reads: the note, then the child's age and the observation's date when known. The hybrid
    classifier reads the two as numbers (the level depends on the child's school year and the term)."""
    return f"{OBSERVATION_PREFIX}{notes}{age_line(child_age_months)}{date_line(observation_date)}"


OBSERVATION_PREFIX = "Observation: "


def age_line(child_age_months: float | None) -> str:
    if child_age_months is not None and child_age_months == child_age_months and child_age_months is not pd.NA:
        return f"\nChild's age: {int(round(child_age_months))} months"
    return ""


def date_line(observation_date: dt.date | str | None) -> str:
    if observation_date is not None and not pd.isna(observation_date):
        return f"\nObserved on: {str(observation_date)[:10]}"  # a date, a timestamp or an ISO string
    return ""


def gemini_user_turn(prompt: str, photos: Sequence[str] = ()) -> dict[str, Any]:
    """The user turn of a Gemini conversation: the prompt, then the photos Gemini can read (`gs://` images) as
    file data. Tuning lines and requests to a tuned model both use it, so the model is asked as it was taught."""
    files = [
        {"fileData": {"mimeType": mime, "fileUri": uri}}
        for uri in photos
        if uri.startswith("gs://") and (mime := photo_mime_type(uri))
    ]
    return {"role": "user", "parts": [{"text": prompt}, *files]}


class RequestTexts:
    """What a model reads for each request: the notes redacted with the roster, then the training format.

    Requests pass the redaction the training data passed (a request's `child_name` joins the roster), so a model
    sees the text shape it was trained on, and no name leaves for a hosted model. Free of torch: the Gemini
    transport, which has no model of its own, redacts with it too.
    """

    def __init__(self, roster: Roster | None):
        self.roster = roster or Roster()
        self._redactor = Redactor(self.roster)  # building one compiles the roster's pattern: once, not per request
        self._extended = lru_cache(maxsize=256)(lambda name: Redactor(self.roster.with_child(name)))

    def _redactor_for(self, child_name: str | None) -> Redactor:
        """The shared redactor, or (cached) one whose roster also holds a child it does not know yet."""
        if not child_name or set(name_tokens(child_name)) <= self._redactor.known_tokens:
            return self._redactor
        return self._extended(child_name)

    def __call__(self, instances: Sequence[Instance]) -> list[str]:
        return [
            user_text(
                self._redactor_for(i.child_name).redact(i.notes, i.child_name), i.child_age_months, i.observation_date
            )
            for i in instances
        ]


def answer_json(label: Label, secondary: list[Label], taxonomy: Taxonomy) -> str:
    def tag(lbl: Label) -> dict[str, str]:
        return {
            "domain": taxonomy.domain(lbl.domain_id).key,
            "attribute": taxonomy.attribute(lbl.attribute_id).name,
            "level": lbl.level_title,
        }

    return orjson.dumps({**tag(label), "secondary": [tag(s) for s in secondary]}).decode()


@dataclass(frozen=True)
class TrainingExample:
    """One redacted, labelled observation: what every training format is rendered from."""

    observation_id: str
    text: str
    child_age_months: float | None
    observation_date: dt.date | None
    label: Label
    secondary: tuple[Label, ...]
    photo_uris: tuple[str, ...]


LabelKey = tuple[int, int, str]  # (domain id, attribute id, level title)


class TrainingLineRenderer:
    """Renders labelled observations to JSONL lines, Gemini's and TRL's chat format.

    The fixed parts of a line are encoded once; per line, only the note and the answer are encoded, and
    answers are cached per label (a data set has a few hundred distinct ones): a million lines render in
    seconds.
    """

    def __init__(self, taxonomy: Taxonomy, instruction: str | None = None):
        self.taxonomy = taxonomy
        system = {"role": "system", "parts": [{"text": instruction or system_instruction(taxonomy)}]}
        self._gemini_head = b'{"systemInstruction":' + orjson.dumps(system) + b',"contents":['
        self._gemini_model = b',{"role":"model","parts":[{"text":'
        self._chat_head = (
            b'{"messages":[{"role":"system","content":'
            + orjson.dumps(OSS_SYSTEM_PROMPT)
            + b'},{"role":"user","content":'
        )
        self._chat_assistant = b'},{"role":"assistant","content":'
        self._answers: dict[tuple[LabelKey, tuple[LabelKey, ...]], bytes] = {}

    def gemini_pieces(self, frame: pd.DataFrame) -> list[str | Fragments]:
        """The Gemini lines of a frame of split records as `json_lines.render_lines` puts them together, column by
        column: the bytes `gemini` writes row by row (a test holds the two to it)."""
        note = self._note_pieces(frame)
        photos = Lists.of(frame["photo_uris"], _file_parts, "")
        head, model = self._gemini_head.decode(), self._gemini_model.decode()
        user = head + '{"role":"user","parts":[{"text":"' + note[0]
        return [user, *note[1:], '"}', photos, "]}" + model, self._answers_of(frame), "}]}]}\n"]

    def chat_pieces(self, frame: pd.DataFrame) -> list[str | Fragments]:
        """The chat lines of a frame of split records, column by column: the bytes `chat` writes row by row."""
        note = self._note_pieces(frame)
        head, assistant = self._chat_head.decode(), self._chat_assistant.decode()
        return [head + '"' + note[0], *note[1:], '"' + assistant, self._answers_of(frame), "}]}\n"]

    @staticmethod
    def _note_pieces(frame: pd.DataFrame) -> list[str | Fragments]:
        """`user_text` inside a JSON string: its fixed start, then the note, the age line and the date line."""
        return [
            _inside_string(OBSERVATION_PREFIX),
            Text.of(frame["text"], quoted=False),
            Coded.values(frame["child_age_months"].astype("Float64"), lambda a: _inside_string(age_line(a)), ""),
            Coded.days(frame["observation_date"], lambda day: _inside_string(date_line(day)), ""),
        ]

    def _answers_of(self, frame: pd.DataFrame) -> Coded:
        """Each row's answer, rendered once per distinct label and secondary labels."""
        label_columns = ["domain_id", "attribute_id", "progression_title"]
        labels = frame.groupby(label_columns, sort=False, dropna=False).ngroup().to_numpy()
        secondary = Coded.lists(frame["secondary_tags"], lambda tags: orjson.dumps(tags).decode(), "[]")
        keys = labels.astype(np.int64) * len(secondary.rendered) + secondary.codes
        domains, attributes = frame["domain_id"].to_numpy(), frame["attribute_id"].to_numpy()
        levels, tags = frame["progression_title"].to_numpy(dtype=object), frame["secondary_tags"].to_numpy(dtype=object)

        def render(row: int) -> str:
            label = (int(domains[row]), int(attributes[row]), str(levels[row]))
            others = tuple((t["domain_id"], t["attribute_id"], t["level"]) for t in tags[row] or ())
            return self._answer(label, others).decode()

        return Coded.by_key(keys, render)

    def _answer(self, label: LabelKey, secondary: tuple[LabelKey, ...]) -> bytes:
        key = (label, secondary)
        encoded = self._answers.get(key)
        if encoded is None:
            text = answer_json(Label(*label), [Label(*s) for s in secondary], self.taxonomy)
            encoded = self._answers[key] = orjson.dumps(text)
        return encoded

    def gemini(
        self,
        text: str,
        age: float | None,
        observed: dt.date | str | None,
        label: LabelKey,
        secondary: tuple[LabelKey, ...],
        photos: Sequence[str],
    ) -> bytes:
        """One line of Vertex AI's Gemini supervised-tuning JSONL (photos only as `gs://` image file data)."""
        return b"".join(
            (
                self._gemini_head,
                orjson.dumps(gemini_user_turn(user_text(text, age, observed), photos)),
                self._gemini_model,
                self._answer(label, secondary),
                b"}]}]}\n",
            )
        )

    def chat(
        self,
        text: str,
        age: float | None,
        observed: dt.date | str | None,
        label: LabelKey,
        secondary: tuple[LabelKey, ...],
    ) -> bytes:
        """One line of conversational JSONL as TRL's SFTTrainer reads it."""
        return b"".join(
            (
                self._chat_head,
                orjson.dumps(user_text(text, age, observed)),
                self._chat_assistant,
                self._answer(label, secondary),
                b"}]}\n",
            )
        )


def _inside_string(text: str) -> str:
    """`text` as it reads between a JSON string's quotes."""
    return orjson.dumps(text).decode()[1:-1]


def _file_parts(photos: Sequence[str]) -> str:
    """The file parts `gemini_user_turn` adds after the prompt, each after a comma."""
    return "".join("," + orjson.dumps(part).decode() for part in gemini_user_turn("", photos)["parts"][1:])


def _keys(example: TrainingExample) -> tuple[LabelKey, tuple[LabelKey, ...]]:
    to_key = lambda lbl: (lbl.domain_id, lbl.attribute_id, lbl.level_title)  # noqa: E731
    return to_key(example.label), tuple(to_key(s) for s in example.secondary)


def gemini_line(example: TrainingExample, taxonomy: Taxonomy, instruction: str) -> dict[str, Any]:
    """One decoded Gemini tuning line (the renderer's bytes, for callers that want the structure)."""
    label, secondary = _keys(example)
    renderer = TrainingLineRenderer(taxonomy, instruction)
    return orjson.loads(
        renderer.gemini(
            example.text, example.child_age_months, example.observation_date, label, secondary, example.photo_uris
        )
    )


def chat_line(example: TrainingExample, taxonomy: Taxonomy) -> dict[str, Any]:
    """One decoded chat line."""
    label, secondary = _keys(example)
    return orjson.loads(
        TrainingLineRenderer(taxonomy).chat(
            example.text, example.child_age_months, example.observation_date, label, secondary
        )
    )


def photo_mime_type(uri: str) -> str | None:
    """The image MIME type of a photo URI by its suffix; None for anything that is not an image."""
    guessed = PHOTO_MIME_TYPES.get(PurePosixPath(uri).suffix.lower()) or mimetypes.guess_type(uri)[0]
    return guessed if guessed and guessed.startswith("image/") else None


# ----- reading answers back ------------------------------------------------------------------------


class AnswerError(ValueError):
    """A model answer that is not a valid label of the taxonomy."""


def parse_answer(text: str, taxonomy: Taxonomy) -> tuple[Label, list[Label]]:
    """Parse the model's JSON answer into labels, resolving names forgivingly; AnswerError when invalid."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise AnswerError(f"no JSON object in answer {text[:80]!r}")
    try:
        value = orjson.loads(text[start : end + 1])
    except orjson.JSONDecodeError as exc:
        raise AnswerError(f"answer is not valid JSON: {exc}") from exc
    if not isinstance(value, Mapping):
        raise AnswerError("answer is not a JSON object")
    primary = _resolve_tag(value, taxonomy)
    secondary_raw = value.get("secondary") or []
    if not isinstance(secondary_raw, list):
        raise AnswerError("'secondary' must be a list")
    return primary, [_resolve_tag(s, taxonomy) for s in secondary_raw]


def _resolve_tag(tag: Any, taxonomy: Taxonomy) -> Label:
    if not isinstance(tag, Mapping):
        raise AnswerError(f"tag {tag!r} is not an object")
    domain_name, attribute_name, level_name = tag.get("domain"), tag.get("attribute"), tag.get("level")
    if not all(isinstance(v, str) for v in (domain_name, attribute_name, level_name)):
        raise AnswerError(f"tag {dict(tag)!r} needs string 'domain', 'attribute' and 'level'")
    domain = next(
        (d for d in taxonomy.domains if normalise_key(domain_name) in (d.key, normalise_key(d.name))),
        None,
    )
    if domain is None:
        raise AnswerError(f"unknown domain {domain_name!r}")
    attribute = next((a for a in domain.attributes if a.key == normalise_key(attribute_name)), None)
    if attribute is None:
        raise AnswerError(f"attribute {attribute_name!r} is not in domain {domain.key!r}")
    try:
        level = taxonomy.level(level_name)
    except KeyError as exc:
        raise AnswerError(str(exc)) from None
    label = Label(domain.id, attribute.id, level.title)
    problems = taxonomy.label_problems(label.domain_id, label.attribute_id, label.level_title)
    if problems:
        raise AnswerError("; ".join(problems))
    return label


def gemini_line_problems(line: Any, taxonomy: Taxonomy) -> list[str]:
    """Why a decoded Gemini tuning line is unusable (format or label); empty when it is fine."""
    problems: list[str] = []
    if not isinstance(line, Mapping):
        return ["line is not a JSON object"]
    system = line.get("systemInstruction")
    if not isinstance(system, Mapping) or not _texts(system.get("parts")):
        problems.append("systemInstruction needs parts with text")
    contents = line.get("contents")
    if not isinstance(contents, list) or len(contents) < 2:
        return problems + ["contents needs a user turn and a model turn"]
    roles = [c.get("role") if isinstance(c, Mapping) else None for c in contents]
    if roles[-1] != "model" or "user" not in roles or any(r not in ("user", "model") for r in roles):
        problems.append(f"contents roles must be user/model ending with model, got {roles}")
    for turn in contents:
        parts = turn.get("parts") if isinstance(turn, Mapping) else None
        if not isinstance(parts, list) or not parts:
            problems.append("every turn needs a non-empty parts list")
            continue
        for part in parts:
            if not isinstance(part, Mapping) or not (("text" in part) ^ ("fileData" in part)):
                problems.append(f"a part must hold exactly one of text or fileData: {part!r:.80}")
            elif "fileData" in part:
                data = part["fileData"]
                if (
                    not isinstance(data, Mapping)
                    or not str(data.get("fileUri", "")).startswith("gs://")
                    or not data.get("mimeType")
                ):
                    problems.append(f"fileData needs a gs:// fileUri and a mimeType: {data!r:.80}")
    answer = _texts(contents[-1].get("parts") if isinstance(contents[-1], Mapping) else None)
    try:
        parse_answer(answer, taxonomy)
    except AnswerError as exc:
        problems.append(f"model answer invalid: {exc}")
    return problems


def _texts(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(p.get("text", "") for p in parts if isinstance(p, Mapping) and isinstance(p.get("text"), str))


def written_texts(line: bytes | str) -> list[str]:
    """What a person wrote in one training line (the note, as the user turn carries it), for the leak check.

    The three shapes the data assets write are read for their note only: the system instruction and the
    answer are the taxonomy's words. A line of any other shape, or one that does not parse, is scanned
    whole: the check must see what it was not told about."""
    try:
        body = orjson.loads(line)
    except orjson.JSONDecodeError:
        return [line.decode("utf-8", "replace") if isinstance(line, bytes) else line]
    if isinstance(body, Mapping):
        if isinstance(body.get("text"), str) and "domain_id" in body:
            return [body["text"]]
        contents, messages = body.get("contents"), body.get("messages")
        if isinstance(contents, list) and all(isinstance(c, Mapping) for c in contents) and contents:
            return [_texts(c.get("parts")) for c in contents if c.get("role") != "model"]
        if isinstance(messages, list) and all(isinstance(m, Mapping) for m in messages) and messages:
            return [str(m.get("content")) for m in messages if m.get("role") not in ("system", "assistant")]
    return list(_strings(body))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
