"""Data: the in-memory pipeline (`pipeline`), prepared directories (`prepare` writes,
`prepared` reads), the synthetic tasks (`tasks`) and the tokenizers (`tokenizer`)."""

from llada_jax.data.pipeline import (DataIterator, batches, iter_documents, pack_documents, pretrain_iterator,
                                     pretrain_rows, sft_iterator, sft_rows, stdlib_files)

__all__ = ["DataIterator", "batches", "iter_documents", "pack_documents", "pretrain_iterator", "pretrain_rows",
           "sft_iterator", "sft_rows", "stdlib_files"]
