"""Import a Hugging Face LLaDA directory as a step-0 workdir (`interop.import_hf.import_to_workdir`):

    llada-import-hf --src=HF_DIR --workdir=DIR
    python -m llada_jax.import_hf ...   (the same command)

Prints {"workdir", "step", "flags"} as one JSON line; "flags" are the `--config.model.*`
flags that give a training or sampling run the imported shape."""

from __future__ import annotations

import json
import os

from llada_jax.commands import flags as flag_lib


def define(fv):
    from absl import flags

    from llada_jax.model import DTYPES

    kw = dict(flag_values=fv)
    flags.DEFINE_string("src", None, "Hugging Face directory (config.json + safetensors)", **kw)
    flags.DEFINE_string("workdir", None, "new (or empty) workdir to create", **kw)
    flags.DEFINE_enum("dtype", "float32", list(DTYPES), "parameter dtype in the checkpoint (float32: master "
                      "weights for fine-tuning)", **kw)
    return ("src", "workdir")


def main(argv=None):
    with flag_lib.running(argv, define, doc=__doc__) as F:
        from llada_jax.interop.import_hf import import_to_workdir, model_flags

        config = import_to_workdir(F.src, F.workdir, dtype=F.dtype)
    print(json.dumps({"workdir": os.path.abspath(F.workdir), "step": 0, "flags": " ".join(model_flags(config))}))


if __name__ == "__main__":
    main()
