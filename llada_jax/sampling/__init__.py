"""Sampling from a mask predictor: the reverse process (`sampler`), its confidence
(remasking) rules and classifier-free guidance, and the end-of-answer rule (`eos_stop`)."""

from llada_jax.sampling.sampler import CACHES, REMASKING, generate, num_transfer_tokens, select_transfer

__all__ = ["CACHES", "REMASKING", "generate", "num_transfer_tokens", "select_transfer"]
