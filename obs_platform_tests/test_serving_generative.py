"""The generative predictor (a model tuned in `sft` mode): answers read back into taxonomy labels, repaired
or reported invalid; never a crash, whatever the model generates."""

import json
from pathlib import Path

import pytest
from trainer.answers import ReadAnswer, Tag
from trainer.config import TrainerConfig
from trainer.sft import train_sft

from obs_platform.data.redaction import Roster
from obs_platform.serving.answers import answer_prediction
from obs_platform.serving.predictor import GenerativePredictor, Instance, load_predictor


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory, chat_files, tiny_causal_lm) -> Path:
    folder = tmp_path_factory.mktemp("chat")
    for name, size in {"train": 24, "valid": 8}.items():
        (folder / f"{name}.jsonl").write_text("\n".join(chat_files[name].read_text().splitlines()[:size]) + "\n")
    output = tmp_path_factory.mktemp("generator")
    train_sft(
        TrainerConfig(
            mode="sft",
            train=str(folder / "train.jsonl"),
            valid=str(folder / "valid.jsonl"),
            output=str(output),
            base_model=str(tiny_causal_lm),
            epochs=1,
            max_new_tokens=24,
            eval_generations=2,
        )
    )
    return output


@pytest.fixture(scope="module")
def predictor(generator_dir, eyfs) -> GenerativePredictor:
    predictor = load_predictor(generator_dir, eyfs, Roster.from_names(["Amara Okafor"]))
    assert isinstance(predictor, GenerativePredictor)
    predictor.max_new_tokens = 24
    return predictor


def test_whatever_the_model_generates_the_answer_is_a_label_or_reported_invalid(predictor, eyfs):
    predictions = predictor.predict([Instance("Amara counted the cups", 40), Instance("Sang a song", None, "Bo")])
    assert len(predictions) == 2
    for prediction in predictions:
        assert prediction.status in ("ok", "repaired", "invalid")
        if prediction.status == "invalid":  # a tiny random model rarely names a label
            assert prediction.problem and prediction.attribute == "" and prediction.confidence == 0
        else:
            assert eyfs.attribute(prediction.attribute_id).name == prediction.attribute
            assert 0 < prediction.confidence <= 1


@pytest.mark.parametrize(
    ("read", "status", "attribute"),
    [
        (ReadAnswer("valid", Tag("mathematics", "Numerical Patterns", "Reception")), "ok", "Numerical Patterns"),
        (
            ReadAnswer("repaired", Tag("mathematics", "Number", "Reception"), problem="attribute 'Numbr' → 'Number'"),
            "repaired",
            "Number",
        ),
        (ReadAnswer("invalid", None, problem="no label in answer 'hello'"), "invalid", ""),
        (ReadAnswer("valid", Tag("mathematics", "Not In This Taxonomy", "Reception")), "invalid", ""),
    ],
)
def test_a_read_answer_becomes_a_typed_prediction(eyfs, read, status, attribute):
    prediction = answer_prediction(read, eyfs, 0.8)
    assert prediction.status == status and prediction.attribute == attribute
    if status != "invalid":
        assert (
            prediction.domain == "mathematics" and prediction.domain_name == eyfs.domain_by_key(prediction.domain).name
        )
        assert prediction.confidence == 0.8 and prediction.top_k[0].attribute == attribute
    else:
        assert prediction.problem


def test_the_manifest_decides_which_predictor_loads(generator_dir):
    assert json.loads((generator_dir / "manifest.json").read_text())["mode"] == "sft"
