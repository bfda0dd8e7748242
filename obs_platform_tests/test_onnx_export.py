"""The ONNX export: built once and kept beside the model, or removed as soon as it is loaded."""

import tempfile

import pytest
import torch

from obs_platform.serving import runtime
from obs_platform.serving.endpoint import ONNX_DIR_VARIABLE
from obs_platform.serving.runtime import EXPORT_MANIFEST, MODEL_FILE, OnnxForward


@pytest.fixture(scope="module")
def merged(trained, tiny_bert):
    from trainer.classifier import load_trained_classifier

    model, tokenizer, _ = load_trained_classifier(trained, base_model=str(tiny_bert))
    model.encoder = model.encoder.merge_and_unload()
    return model, tokenizer


@pytest.fixture
def exports(monkeypatch, tmp_path):
    """Counts the exports built; the temporary folder is one of the test's own."""
    built = []
    real = runtime.export_onnx
    monkeypatch.setattr(runtime, "export_onnx", lambda *args: built.append(args[-1]) or real(*args))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    monkeypatch.delenv(ONNX_DIR_VARIABLE, raising=False)
    (tmp_path / "temp").mkdir()
    return built


def logits(forward, tokenizer):
    encoded = tokenizer(["Counted the ducks on the pond", "Sang"], padding=True, return_tensors="pt")
    return forward(encoded["input_ids"], encoded["attention_mask"])


def test_an_export_is_built_once_then_loaded(merged, exports, tmp_path, monkeypatch):
    model, tokenizer = merged
    monkeypatch.setenv(ONNX_DIR_VARIABLE, str(tmp_path / "v1" / "onnx"))  # what the endpoint process is given
    first = OnnxForward(model, tokenizer)
    second = OnnxForward(model, tokenizer)
    assert len(exports) == 1 and first.kept_at == second.kept_at
    assert sorted(p.name for p in (tmp_path / "v1" / "onnx").iterdir()) == [first.kept_at.name]  # no scratch left
    assert sorted(p.name for p in first.kept_at.iterdir()) == sorted([EXPORT_MANIFEST, MODEL_FILE])
    assert second.fused_operators == first.fused_operators and first.fused_operators.get("Attention") == 2
    for head, value in logits(first, tokenizer).items():
        assert torch.allclose(value, logits(second, tokenizer)[head])
    assert list((tmp_path / "temp").iterdir()) == []


def test_without_a_folder_to_keep_it_the_export_is_removed_once_loaded(merged, exports, tmp_path):
    model, tokenizer = merged
    not_a_folder = tmp_path / "read-only"
    not_a_folder.write_text("")  # a folder cannot be made below it, as below a read-only registry copy
    for export_dir in (None, not_a_folder / "onnx"):
        forward = OnnxForward(model, tokenizer, export_dir=export_dir)
        assert forward.kept_at is None and logits(forward, tokenizer)["attribute"].shape[0] == 2
    assert len(exports) == 2 and list((tmp_path / "temp").iterdir()) == []
