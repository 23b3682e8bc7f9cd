"""Sampling from a mask predictor: the reverse process (`sampler`), its confidence
(remasking) rules and classifier-free guidance, the end-of-answer rule (`eos_stop`), and
Dream's sampler (`dream`).

`generate(model, params, prompt, ...)` is the public entry: it runs Dream's rule when
one of Dream's options (alg, alg_temp, eps, top_p, top_k) is given, LLaDA's when one of
LLaDA's (block_length, remasking, cfg_scale, ...) is, and otherwise the model family's
own (SAMPLER of `llada_jax.model.families`: "dream" for Dream, "llada" for the rest).
A block-causal model (`config.block_size` > 0) always takes LLaDA's entry, which runs its
exact block cache (`block_cache`; top_k / top_p are its options there, not Dream's)."""

from llada_jax.sampling import dream
from llada_jax.sampling import sampler
from llada_jax.sampling.params import CACHES, REMASKING
from llada_jax.sampling.reveal import num_transfer_tokens, select_transfer

SAMPLERS = {"llada": sampler.generate, "dream": dream.generate}
_SHARED = {"attention_mask", "steps", "gen_length", "temperature", "mask_id", "rng"}

__all__ = ["CACHES", "REMASKING", "SAMPLERS", "generate", "num_transfer_tokens", "select_transfer"]


def generate(model, params, prompt, **options):
    """Sample from `model`: Dream's rule (`llada_jax.sampling.dream.generate`) or LLaDA's
    (`llada_jax.sampling.sampler.generate`), chosen as the module docstring says."""
    from llada_jax.model import families

    config = getattr(model, "config", None)
    if getattr(config, "block_size", 0):
        return sampler.generate(model, params, prompt, **options)
    dream_opts = set(options) & set(dream.OPTIONS)
    llada_opts = set(options) - set(dream.OPTIONS) - _SHARED
    if dream_opts and llada_opts:
        raise ValueError(f"generate: {', '.join(sorted(dream_opts))} (Dream's sampler) cannot be combined with "
                         f"{', '.join(sorted(llada_opts))} (LLaDA's sampler)")
    rule = "dream" if dream_opts else "llada" if llada_opts or config is None else families.get(config.family).SAMPLER
    return SAMPLERS[rule](model, params, prompt, **options)
