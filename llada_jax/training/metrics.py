"""Training metrics: the log writer (tensorboardX scalars and text, and JSON lines in the
workdir's `metrics.jsonl`) and its reader. Every training loop (`llada_jax.training.loop`,
`llada_jax.rl.loop`) logs through `Writer`; `read_jsonl` is what the demo, the notebooks
and the tests read back. The FLOPs accounting for MFU is `llada_jax.model.flops`."""

from __future__ import annotations

import json
import os

import numpy as np


class Writer:
    """Scalars and texts to tensorboardX and `metrics.jsonl` (process 0 only)."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        if enabled:
            SummaryWriter = _summary_writer()
            os.makedirs(workdir, exist_ok=True)
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

    def scalars(self, step: int, values: dict, prefix: str = "train"):
        if not self.enabled:
            return
        clean = {k: float(np.asarray(v)) for k, v in values.items()}
        for k, v in clean.items():
            self._tb.add_scalar(f"{prefix}/{k}", v, step)
        self._jsonl.write(json.dumps({"step": int(step), "split": prefix, **clean}) + "\n")
        self._jsonl.flush()

    def texts(self, step: int, texts: dict, prefix: str = "samples"):
        if not self.enabled:
            return
        for k, v in texts.items():
            self._tb.add_text(f"{prefix}/{k}", v, step)
        self._jsonl.write(json.dumps({"step": int(step), "split": prefix, **texts}) + "\n")
        self._jsonl.flush()

    def close(self):
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


def _summary_writer():
    """tensorboardX's SummaryWriter, imported without torch: tensorboardX's writer module imports
    torch when it is installed (for the interop tests) only to accept torch tensors in its add_*
    methods, which costs every training process 1.3 CPU-s and the memory of torch; `Writer`
    logs Python floats and strings. Where torch is already loaded, a plain import."""
    import sys

    if "tensorboardX.writer" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # `import torch` raises ImportError while tensorboardX loads
        try:
            from tensorboardX import SummaryWriter
        finally:
            del sys.modules["torch"]
    from tensorboardX import SummaryWriter
    return SummaryWriter


def read_jsonl(workdir: str, split: str = "train") -> list[dict]:
    """The rows of `workdir/metrics.jsonl` that `Writer` wrote with prefix `split` ("train",
    "eval", "samples"), in order; [] when the run has logged nothing yet."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r.get("split") == split]
