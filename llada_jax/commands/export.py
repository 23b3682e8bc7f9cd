"""Export a checkpoint of a workdir as a Hugging Face directory (`interop.export.export_workdir`):

    llada-export --workdir=DIR [--step=N] --out=HF_DIR [--peft] [--dtype=bfloat16]
    python -m llada_jax.export ...   (the same command)

Prints {"out", "step", "files"} as one JSON line."""

from __future__ import annotations

import json
import os

from llada_jax.commands import flags as flag_lib


def define(fv):
    from absl import flags

    from llada_jax.interop.export import EXPORT_DTYPES

    kw = dict(flag_values=fv)
    flags.DEFINE_string("workdir", None, "training (or import) workdir with run.json and checkpoints/", **kw)
    flags.DEFINE_integer("step", None, "checkpoint step (default: the latest readable)", **kw)
    flags.DEFINE_string("out", None, "output Hugging Face directory", **kw)
    flags.DEFINE_enum("dtype", "bfloat16", list(EXPORT_DTYPES), "tensor dtype in the files (bfloat16 as published)",
                      **kw)
    flags.DEFINE_bool("overwrite", False, "replace a non-empty --out directory whole", **kw)
    flags.DEFINE_string("max_shard_size", "5GB", "largest safetensors file", **kw)
    flags.DEFINE_string("tokenizer", None, "tokenizer file or directory to include (default: the one in run.json, "
                        "if any)", **kw)
    flags.DEFINE_bool("peft", False, "LoRA workdir: write the adapters alone in the PEFT format (default: merged "
                      "weights)", **kw)
    return ("workdir", "out")


def main(argv=None):
    with flag_lib.running(argv, define, doc=__doc__) as F:
        from llada_jax.interop.export import export_workdir

        step, files = export_workdir(F.workdir, F.out, step=F.step, dtype=F.dtype, overwrite=F.overwrite,
                                     max_shard_size=F.max_shard_size, tokenizer=F.tokenizer, peft=F.peft)
    print(json.dumps({"out": os.path.abspath(F.out), "step": int(step), "files": files}))


if __name__ == "__main__":
    main()
