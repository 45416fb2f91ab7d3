"""ONNX Runtime embedder: the only place inference touches the model.

Thread counts are explicit (intra-op = ``threads``, inter-op = 1): left implicit, ONNX Runtime
spawns one thread per core in every process, and a scanner with decode workers then
oversubscribes the machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from brandguard.errors import BundleError, InputError
from brandguard.vision.bundle import Bundle

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class EmbedderInfo:
    providers: tuple[str, ...]
    threads: int
    device: str


class Embedder:
    """Runs a bundle's ``model.onnx``; input Nx3xSxS float32, output NxD float32 (unit norm)."""

    def __init__(self, bundle: Bundle, threads: int = 1, device: str = "cpu") -> None:
        if device not in DEVICES:
            raise InputError(f"device must be one of {DEVICES}, got {device!r}")
        if threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        self.card = bundle.card
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" in available:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(bundle.model_path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            raise BundleError(f"onnxruntime cannot load {bundle.model_path}: {exc}") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if [i.name for i in inputs] != [self.card.input_name]:
            raise BundleError(f"model inputs {[i.name for i in inputs]} != card input {self.card.input_name!r}")
        if self.card.output_name not in [o.name for o in outputs]:
            raise BundleError(f"model has no output {self.card.output_name!r}")
        out_shape = next(o.shape for o in outputs if o.name == self.card.output_name)
        if isinstance(out_shape[-1], int) and out_shape[-1] != self.card.embedding_dim:
            raise BundleError(f"model output dim {out_shape[-1]} != card embedding_dim {self.card.embedding_dim}")
        self.info = EmbedderInfo(tuple(self._session.get_providers()), threads,
                                 "cuda" if "CUDAExecutionProvider" in self._session.get_providers() else "cpu")

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed a preprocessed batch; returns L2-normalised float32 vectors."""
        s = self.card.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, s, s):
            raise InputError(f"batch must be Nx3x{s}x{s}, got {batch.shape}")
        if batch.shape[0] == 0:
            return np.zeros((0, self.card.embedding_dim), dtype=np.float32)
        x = np.ascontiguousarray(batch, dtype=np.float32)
        (y,) = self._session.run([self.card.output_name], {self.card.input_name: x})
        y = np.asarray(y, dtype=np.float32)
        # The model normalises already; renormalising costs nothing and guards against drift.
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return np.ascontiguousarray(y / np.maximum(norms, 1e-12), dtype=np.float32)
