"""Training-file formats: Vertex Gemini supervised tuning, chat messages for TRL, and the model's answer.

The answer a model is taught to give (and that serving parses back) is one JSON object:
`{"domain": "<domain key>", "attribute": "<attribute name>", "level": "<level title>",
  "secondary": [{"domain": ..., "attribute": ..., "level": ...}]}`.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from obs_platform.data import jsonl

from obs_platform.taxonomy import Label, Taxonomy
from obs_platform.taxonomy.model import normalise_key

PHOTO_MIME_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                    ".heic": "image/heic", ".heif": "image/heif"}
USER_PREFIX = "Observation: "
AGE_TEMPLATE = ("\nChild's age: ", " months")
OSS_SYSTEM_PROMPT = (
    "You tag early-years observations with a curriculum area, goal and progression level. "
    'Answer with JSON: {"domain": ..., "attribute": ..., "level": ..., "secondary": [...]}.'
)


def system_instruction(taxonomy: Taxonomy) -> str:
    """The label space spelled out, so a general model can answer with valid labels only."""
    lines = [
        "You tag early-years observations written by educators with the curriculum framework below.",
        'Reply with one JSON object and nothing else: {"domain": "<domain key>", "attribute": "<attribute name>", '
        '"level": "<level>", "secondary": [<up to two more tags of the same shape>]}.',
        "Domains (key: attributes):",
    ]
    for domain in taxonomy.domains:
        lines.append(f"- {domain.key}: " + "; ".join(a.name for a in domain.attributes))
    lines.append("Levels, youngest first: " + "; ".join(level.title for level in taxonomy.levels) + ".")
    return "\n".join(lines)


def user_text(notes: str, child_age_months: float | None) -> str:
    """The user turn for one observation (serving builds it this way; training renders whole columns)."""
    text = f"{USER_PREFIX}{notes}"
    if child_age_months is not None and child_age_months == child_age_months and child_age_months is not pd.NA:
        text += f"{AGE_TEMPLATE[0]}{round(child_age_months)}{AGE_TEMPLATE[1]}"
    return text


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
    label: Label
    secondary: tuple[Label, ...]
    photo_uris: tuple[str, ...]


class TrainingLineRenderer:
    """Renders a frame of labelled observations (`text`, `child_age_months`, `domain_id`, `attribute_id`,
    `progression_title`, `secondary_tags`, `photo_uris`) to JSONL lines, Gemini's format or TRL's chat,
    a column at a time (see `obs_platform.data.jsonl`). Answers are encoded once per distinct label."""

    def __init__(self, taxonomy: Taxonomy, instruction: str | None = None):
        self.taxonomy = taxonomy
        system = {"role": "system", "parts": [{"text": instruction or system_instruction(taxonomy)}]}
        self._gemini_head = '{"systemInstruction":' + orjson.dumps(system).decode() + ',"contents":[{"role":"user","parts":[{"text":'
        self._gemini_model = '},{"role":"model","parts":[{"text":'
        self._chat_head = '{"messages":[{"role":"system","content":' + orjson.dumps(OSS_SYSTEM_PROMPT).decode() + '},{"role":"user","content":'
        self._chat_assistant = '},{"role":"assistant","content":'

    def _answers(self, frame: pd.DataFrame) -> pa.Array:
        secondary = [
            "" if not tags else orjson.dumps([[t["domain_id"], t["attribute_id"], t["level"]] for t in tags]).decode()
            for tags in frame["secondary_tags"].tolist()
        ]
        keys = pd.MultiIndex.from_arrays(
            [frame["domain_id"].astype(int), frame["attribute_id"].astype(int), frame["progression_title"].astype(object), secondary]
        )
        codes, uniques = keys.factorize()
        answers = [
            orjson.dumps(
                answer_json(Label(domain, attribute, level), [Label(*t) for t in orjson.loads(tags or "[]")], self.taxonomy)
            ).decode()
            for domain, attribute, level, tags in uniques
        ]
        return pa.array(answers, type=pa.large_string()).take(pa.array(codes))

    def _user_texts(self, frame: pd.DataFrame) -> pa.Array:
        ages = pa.array(frame["child_age_months"].astype("Float64"), type=pa.float64())
        age_text = jsonl.join([AGE_TEMPLATE[0], jsonl.json_numbers(pc.round(ages)), AGE_TEMPLATE[1]])
        age_part = pc.if_else(pc.is_valid(ages), age_text, pa.scalar("", pa.large_string()))
        return jsonl.json_strings(jsonl.join([USER_PREFIX, jsonl.as_large_strings(frame["text"]), age_part]))

    def gemini_lines(self, frame: pd.DataFrame) -> pa.Array:
        """Vertex AI's Gemini supervised-tuning JSONL (photos only as `gs://` image file data)."""
        if frame.empty:
            return jsonl.NO_LINES
        files = [_file_parts(photos) if photos else "" for photos in frame["photo_uris"].tolist()]
        return jsonl.join_lines([
            self._gemini_head, self._user_texts(frame), "}", pa.array(files, type=pa.large_string()), "]",
            self._gemini_model, self._answers(frame), "}]}]}",
        ])  # fmt: skip

    def chat_lines(self, frame: pd.DataFrame) -> pa.Array:
        """Conversational JSONL as TRL's SFTTrainer reads it."""
        if frame.empty:
            return jsonl.NO_LINES
        return jsonl.join_lines([
            self._chat_head, self._user_texts(frame), self._chat_assistant, self._answers(frame), "}]}",
        ])  # fmt: skip


def _file_parts(photos: Sequence[str]) -> str:
    return "".join(
        ',{"fileData":' + orjson.dumps({"mimeType": mime, "fileUri": uri}).decode() + "}"
        for uri in photos
        if uri.startswith("gs://") and (mime := photo_mime_type(uri))
    )


def examples_frame(examples: Sequence[TrainingExample]) -> pd.DataFrame:
    """Training examples as the frame the renderer takes."""
    return pd.DataFrame(
        {
            "text": [e.text for e in examples],
            "child_age_months": pd.array([e.child_age_months for e in examples], dtype="Float64"),
            "domain_id": [e.label.domain_id for e in examples],
            "attribute_id": [e.label.attribute_id for e in examples],
            "progression_title": [e.label.level_title for e in examples],
            "secondary_tags": [
                [{"domain_id": s.domain_id, "attribute_id": s.attribute_id, "level": s.level_title} for s in e.secondary]
                for e in examples
            ],
            "photo_uris": [list(e.photo_uris) for e in examples],
        }
    )


def gemini_line(example: TrainingExample, taxonomy: Taxonomy, instruction: str) -> dict[str, Any]:
    """One decoded Gemini tuning line, for callers that want the structure."""
    return orjson.loads(TrainingLineRenderer(taxonomy, instruction).gemini_lines(examples_frame([example]))[0].as_py())


def chat_line(example: TrainingExample, taxonomy: Taxonomy) -> dict[str, Any]:
    """One decoded chat line."""
    return orjson.loads(TrainingLineRenderer(taxonomy).chat_lines(examples_frame([example]))[0].as_py())


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
                if not isinstance(data, Mapping) or not str(data.get("fileUri", "")).startswith("gs://") or not data.get(
                    "mimeType"
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
