"""Where the classifier's forward pass runs: PyTorch, or ONNX Runtime on the same weights.

ONNX Runtime answers the same predictions (the benchmark checks agreement) about 1.4x faster for one
observation on 2 CPU cores. The model is exported when the endpoint loads it (a few seconds), with the LoRA
adapter merged into the encoder, so the registry keeps one artefact per version. The encoder is traced with
plain ("eager") attention so ONNX Runtime's transformer optimiser can fuse each layer's attention, GELU and
layer norms into single kernels (another ~15 %).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

Runtime = Literal["torch", "onnx"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnx")
HEADS = ("domain", "attribute", "level", "tags")


class _TupleOutputs(nn.Module):
    """The classifier with its head outputs as a tuple: what an ONNX graph can return."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(input_ids, attention_mask)
        return tuple(logits[head] for head in HEADS)


class OnnxForward:
    """A drop-in for the classifier's forward pass (same inputs, same dict of logits) on ONNX Runtime."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, threads: int | None = None):
        import onnxruntime
        from onnxruntime.transformers import optimizer

        folder = Path(tempfile.mkdtemp(prefix="obs-platform-onnx-"))
        traced, path = folder / "traced.onnx", folder / "classifier.onnx"
        encoder = model.encoder
        encoder.set_attn_implementation("eager")  # the attention pattern the optimiser knows how to fuse
        # Traced on a padded pair of inputs so the attention-mask path for padding is the one in the graph.
        example = tokenizer(["an example observation of a few words", "short"], padding=True, return_tensors="pt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python control flow in the encoder
            torch.onnx.export(
                _TupleOutputs(model.eval()),
                (example["input_ids"], example["attention_mask"]),
                str(traced),
                input_names=["input_ids", "attention_mask"],
                output_names=list(HEADS),
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
        fused.save_model_to_file(str(path))
        self.fused_operators = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.session.run(
            list(HEADS), {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        )
        return {head: torch.from_numpy(value) for head, value in zip(HEADS, outputs)}
