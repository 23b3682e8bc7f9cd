"""Data: documents read from files (`documents`), the in-memory pipeline (`pipeline`),
prepared directories (`prepare` writes, `prepared` reads), the synthetic tasks (`tasks`)
and the tokenizers (`tokenizer`)."""

from llada_jax.data.documents import iter_documents, stdlib_files
from llada_jax.data.pipeline import (DataIterator, batches, pack_documents, pretrain_iterator, pretrain_rows,
                                     sft_iterator, sft_rows)

__all__ = ["DataIterator", "batches", "iter_documents", "pack_documents", "pretrain_iterator", "pretrain_rows",
           "sft_iterator", "sft_rows", "stdlib_files"]
