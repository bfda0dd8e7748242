"""Where the classifier's forward pass runs: PyTorch, or ONNX Runtime on the same weights.

ONNX Runtime answers the same predictions (the benchmark checks agreement) about 1.4x faster for one
observation on 2 CPU cores. The model is exported with the LoRA adapter merged into the encoder, so the registry
keeps one artefact per version. The encoder is traced with plain ("eager") attention so ONNX Runtime's transformer
optimiser can fuse each layer's attention, GELU and layer norms into single kernels (another ~15 %).

The export (seconds to build, some 170 MB on disk) is kept in an export folder under a key of what it is built from
(weights, encoder configuration, exporting libraries), so a model is exported once and every later start loads it;
the endpoint process is given a folder beside the model version (`OBS_PLATFORM_ONNX_DIR`). Without one, or where
that folder cannot be written (a read-only copy of a registry), the export is built in a temporary folder that is
removed as soon as ONNX Runtime has loaded it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from obs_platform.serving.endpoint import ONNX_DIR_VARIABLE

Runtime = Literal["torch", "onnx"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnx")
HEADS = ("domain", "attribute", "level", "tags")
EXPORT_RECIPE = "eager-attention opset-17 bert-fusion"  # changed whenever the export below changes what it builds
MODEL_FILE = "classifier.onnx"
EXPORT_MANIFEST = "export.json"  # written last: a folder without it is no finished export


class _TupleOutputs(nn.Module):
    """The model with its named outputs as a tuple: what an ONNX graph can return."""

    def __init__(self, model: nn.Module, outputs: tuple[str, ...]):
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(input_ids, attention_mask)
        return tuple(logits[name] for name in self.outputs)


def export_key(model: nn.Module, outputs: tuple[str, ...] = HEADS) -> str:
    """What an export is built from: the weights (adapter merged), the encoder's configuration (less where it was
    loaded from), the recipe and the exporting libraries' versions."""
    import onnxruntime

    config = {k: v for k, v in model.encoder.config.to_dict().items() if k != "_name_or_path"}
    versions = f"torch {torch.__version__}|onnxruntime {onnxruntime.__version__}"
    digest = hashlib.sha256(f"{EXPORT_RECIPE}|{versions}|{','.join(outputs)}".encode())
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def export_onnx(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path, outputs: tuple[str, ...] = HEADS
) -> None:
    """Trace the model (an encoder under `.encoder`, named outputs: the classifier's heads by default) into
    `folder`: the fused graph (`classifier.onnx`), then its manifest (the operators the optimiser fused)."""
    from onnxruntime.transformers import optimizer

    traced = folder / "traced.onnx"
    encoder = model.encoder
    encoder.set_attn_implementation("eager")  # the attention pattern the optimiser knows how to fuse
    # Traced on a padded pair of inputs so the attention-mask path for padding is the one in the graph.
    example = tokenizer(["an example observation of a few words", "short"], padding=True, return_tensors="pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow in the encoder
        torch.onnx.export(
            _TupleOutputs(model.eval(), outputs),
            (example["input_ids"], example["attention_mask"]),
            str(traced),
            input_names=["input_ids", "attention_mask"],
            output_names=list(outputs),
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in ("input_ids", "attention_mask")},
            opset_version=17,
            dynamo=False,
        )
    fused = optimizer.optimize_model(
        str(traced),
        model_type="bert",
        num_heads=encoder.config.num_attention_heads,
        hidden_size=encoder.config.hidden_size,
    )
    fused.save_model_to_file(str(folder / MODEL_FILE))
    traced.unlink()
    statistics = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    (folder / EXPORT_MANIFEST).write_text(json.dumps({"fused_operators": statistics}, indent=2))


def _built_in(folder: Path, model: nn.Module, tokenizer: PreTrainedTokenizerBase, outputs: tuple[str, ...]) -> Path:
    """`folder` with an export built in it; removed when the export fails half-way."""
    try:
        export_onnx(model, tokenizer, folder, outputs)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def prepared_export(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, export_dir: Path | None, outputs: tuple[str, ...] = HEADS
) -> tuple[Path, bool]:
    """The folder holding the model's export, and whether it is scratch to remove once loaded: the one kept under
    `export_dir` (built there first when missing), else one built in a temporary folder."""
    if export_dir is not None:
        kept = export_dir / export_key(model, outputs)
        if (kept / EXPORT_MANIFEST).exists():
            return kept, False
        try:
            export_dir.mkdir(parents=True, exist_ok=True)
            building = Path(tempfile.mkdtemp(prefix=f".{kept.name}.", suffix=".tmp", dir=export_dir))
        except OSError:  # a folder this process may not write: the export is not kept
            pass
        else:
            _built_in(building, model, tokenizer, outputs)
            try:
                building.rename(kept)  # whole or not at all
            except OSError:  # another process kept the same export meanwhile: ours serves this once
                return building, True
            return kept, False
    return _built_in(Path(tempfile.mkdtemp(prefix="obs-platform-onnx-")), model, tokenizer, outputs), True


class OnnxForward:
    """A drop-in for a model's forward pass (same inputs, same dict of named outputs: by default the classifier's
    heads) on ONNX Runtime."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        threads: int | None = None,
        export_dir: Path | None = None,
        outputs: tuple[str, ...] = HEADS,
    ):
        """`export_dir`: where exports are kept (default: `OBS_PLATFORM_ONNX_DIR`, else none is kept)."""
        import onnxruntime

        if export_dir is None and os.environ.get(ONNX_DIR_VARIABLE):
            export_dir = Path(os.environ[ONNX_DIR_VARIABLE])
        folder, scratch = prepared_export(model, tokenizer, export_dir, outputs)
        self.outputs = outputs
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            manifest: dict[str, Any] = json.loads((folder / EXPORT_MANIFEST).read_text())
            self.session = onnxruntime.InferenceSession(
                str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
            )
        finally:
            if scratch:  # the session holds the graph in memory now
                shutil.rmtree(folder, ignore_errors=True)
        self.fused_operators: dict[str, int] = manifest["fused_operators"]
        self.kept_at = None if scratch else folder  # where the export stays for the next start

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        values = self.session.run(
            list(self.outputs), {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        )
        return {name: torch.from_numpy(value) for name, value in zip(self.outputs, values)}
