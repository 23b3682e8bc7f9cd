"""Tokenize a corpus once into a prepared directory (`data.prepare.prepare`):

    llada-prepare-data --inputs=PATHS_OR_GLOBS --out=DIR [--tokenizer=PATH] [--kind=pretrain|sft]
    python -m llada_jax.prepare_data ...   (the same command)

Rerun the same command to resume; --verify checks every shard's sha256."""

from __future__ import annotations

import json
import logging

from llada_jax.commands import flags as flag_lib


def define(fv):
    from absl import flags

    from llada_jax.data import prepared

    kw = dict(flag_values=fv)
    flags.DEFINE_string("inputs", "", "comma-separated files or globs: text, .jsonl, .parquet", **kw)
    flags.DEFINE_string("out", None, "output directory (rerun to resume)", **kw)
    flags.DEFINE_string("tokenizer", None, "sentencepiece .model, tokenizer.json or a directory; default: train a "
                        "sentencepiece model on the inputs into OUT/tokenizer.model", **kw)
    flags.DEFINE_enum("kind", "pretrain", list(prepared.KINDS), "what the rows are for", **kw)
    flags.DEFINE_string("field", None, "JSONL field / Parquet column (default: text, or messages for sft)", **kw)
    flags.DEFINE_integer("vocab_size", 32000, "of a trained tokenizer", **kw)
    flags.DEFINE_integer("shard_bytes", 1 << 26, "input bytes per shard", **kw)
    flags.DEFINE_integer("workers", 0, "processes (default: all cores)", **kw)
    flags.DEFINE_bool("verify", False, "check the sha256 of every shard of --out and exit", **kw)
    return ("out",)


def main(argv=None):
    with flag_lib.running(argv, define, doc=__doc__, errors=(OSError,)) as F:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        from llada_jax.data import prepare, prepared

        if F.verify:
            prepared.verify_shards(F.out, prepared.read_index(F.out))
            print(f"{F.out}: every shard matches its checksum")
            return
        index = prepare.prepare(F.inputs, F.out, tokenizer=F.tokenizer, kind=F.kind, field=F.field,
                                shard_bytes=F.shard_bytes, workers=F.workers or None, vocab_size=F.vocab_size)
    print(json.dumps({k: index[k] for k in ("kind", "documents", "tokens", "dtype")} | {"shards": len(index["shards"])}))


if __name__ == "__main__":
    main()
