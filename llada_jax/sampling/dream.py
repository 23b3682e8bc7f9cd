"""Dream's sampler (`diffusion_generate` of Dream-org/Dream-v0, as dllm ships it), in JAX.

Start from [prompt, MASK * gen_length] (Dream's `max_new_tokens`) and run `steps` model
calls over the whole sequence; no blocks. With `timesteps = linspace(1, eps, steps + 1)`,
step i (t, s = timesteps[i], timesteps[i + 1]) predicts every masked position and reveals
`int(n * (1 - s / t))` of them (all at the last step), n the batch's mean count of masks:

- alg "maskgit_plus": the most probable predictions first; "topk_margin": the largest gap
  between the top two probabilities; "entropy": the lowest entropy; "origin": each masked
  position is revealed with probability 1 - s / t, at random.
- alg_temp > 0 samples which positions to reveal (softmax of confidence / alg_temp) instead.
- temperature, top_p, top_k shape the token distribution (temperature 0: its argmax; the
  confidence is the probability after the top-p / top-k filter, as in Dream).

Left-padded batches (attention_mask 0 on padding) get Dream's position ids: the cumulative
count of real tokens minus one (padding at 1). The model's logits are read through its
family's alignment (the model applies it), so Dream's shifted logits need no shift here.
Temperature 0 with alg_temp None is deterministic for the three confidence algorithms and
equals the published sampler token for token; the random ones use JAX's generator.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llada_jax import validation
from llada_jax.validation import special_ids
from llada_jax.sampling.confidence import first_argmax

ALGS = ("maskgit_plus", "topk_margin", "entropy", "origin")
OPTIONS = ("alg", "alg_temp", "eps", "top_p", "top_k")  # what makes `llada_jax.generate` use this rule


class _Options(NamedTuple):
    """Static options of one compiled sampler (the values of top_p, top_k and eps are traced)."""

    steps: int
    alg: str
    alg_temp: float | None
    temperature: float
    mask_id: int
    filters: bool  # top_p or top_k given: sort the vocabulary at each step


def timesteps(steps: int, eps: float) -> np.ndarray:
    """torch.linspace(1, eps, steps + 1) (float32), bit for bit: torch's CPU kernel steps in
    float64 and fills the first half from the start, the second half from the end."""
    n = steps + 1
    start, end = 1.0, float(np.float32(eps))
    step = (end - start) / max(n - 1, 1)
    i = np.arange(n, dtype=np.float64)
    return np.where(i < n // 2, start + step * i, end - step * (n - 1 - i)).astype(np.float32)


def _filtered(logits, top_p, top_k):
    """Dream's top_p_logits (when top_p < 1) then top_k_logits (removed entries set to the
    float32 minimum); top_p 1 and top_k = vocabulary are no filter."""
    low = jnp.finfo(jnp.float32).min
    order = jnp.argsort(-logits, axis=-1, stable=True)
    sorted_logits = jnp.take_along_axis(logits, order, -1)
    remove = jnp.cumsum(jax.nn.softmax(sorted_logits, -1), -1) > top_p
    remove = jnp.concatenate([jnp.zeros_like(remove[..., :1]), remove[..., :-1]], -1) & (top_p < 1)
    logits = jnp.where(jnp.take_along_axis(remove, jnp.argsort(order, axis=-1), -1), low, logits)
    kth = jnp.take(sorted_logits, jnp.minimum(top_k, logits.shape[-1]) - 1, axis=-1)[..., None]
    return jnp.where(logits < kth, low, logits)


def sample_tokens(logits_BxLxV, rng, top_p, top_k, o: _Options):
    """(confidence, x0) per position, as Dream's `sample_tokens` for `o.alg`."""
    logits = logits_BxLxV.astype(jnp.float32)
    if o.temperature > 0:
        logits = logits / o.temperature
    probs = jax.nn.softmax(_filtered(logits, top_p, top_k) if o.filters else logits, -1)
    if o.temperature > 0:
        x0 = jax.random.categorical(rng, jnp.log(probs), -1)
    else:
        x0 = first_argmax(probs)
    confidence = jnp.take_along_axis(probs, x0[..., None], -1)[..., 0]
    if o.alg == "topk_margin":
        top2 = jax.lax.top_k(probs, 2)[0]
        confidence = top2[..., 0] - top2[..., 1]
    elif o.alg == "entropy":
        confidence = jnp.sum(probs * jnp.log(probs + 1e-10), -1)
    return confidence, x0


def _step(model, params, x, key_mask, positions, t, s, last, rng, top_p, top_k, o: _Options):
    mask_index = x == o.mask_id
    logits = model.apply({"params": params}, x, key_mask, positions=positions)
    tok_rng, pick_rng = jax.random.split(rng)
    confidence, x0 = sample_tokens(logits, tok_rng, top_p, top_k, o)
    if o.alg == "origin":
        p_transfer = jnp.where(last, 1.0, 1 - s / t)
        transfer = mask_index & (jax.random.uniform(pick_rng, x.shape) < p_transfer)
        return jnp.where(transfer, x0, x)
    num_mask = jnp.sum(mask_index).astype(jnp.float32) / np.float32(x.shape[0])
    k = jnp.where(last, num_mask, num_mask * (1 - s / t)).astype(jnp.int32)  # int(): truncation
    full = jnp.where(mask_index, confidence, -jnp.inf)
    if o.alg_temp:  # sampled without replacement: Gumbel top-k of log softmax(confidence / alg_temp)
        full = jax.nn.log_softmax(full / o.alg_temp, -1) + jax.random.gumbel(pick_rng, full.shape)
    order = jnp.argsort(-full, axis=-1, stable=True)
    transfer = jnp.argsort(order, axis=-1) < k
    # Dream writes x0 at masked and the mask id elsewhere at the chosen indices.
    return jnp.where(transfer, jnp.where(mask_index, x0, o.mask_id), x)


@functools.partial(jax.jit, static_argnames=("model", "options"))
def _reverse_process(model, params, x, key_mask, positions, ts, rng, top_p, top_k, options: _Options):
    def body(i, x):
        return _step(model, params, x, key_mask, positions, ts[i], ts[i + 1], i == options.steps - 1,
                     jax.random.fold_in(rng, i), top_p, top_k, options)

    return jax.lax.fori_loop(0, options.steps, body, x)


def generate(model, params, prompt, *, attention_mask=None, steps=512, gen_length=128, alg="origin",
             alg_temp=None, eps=1e-3, temperature=0.0, top_p=None, top_k=None, mask_id=None, rng=None):
    """Dream's `diffusion_generate` on `prompt` (B, P) int ids; returns int32 (B, P + gen_length).

    steps, gen_length: Dream's `steps` and `max_new_tokens`. attention_mask (B, P): 0 on left
    padding. Options are Dream's (see the module docstring); mask_id defaults to the model
    config's. Every argument is checked (ValueError) before anything is compiled.
    """
    where = "generate"
    mask_id = special_ids(model, mask_id)[0]
    vocab = validation.vocab_of(model)
    prompt = validation.token_ids(where, "prompt", prompt, vocab, ndim=2)
    mask_id = validation.token_id(where, "mask_id", mask_id, vocab)
    steps = validation.integer(where, "steps", steps, minimum=1)
    gen_length = validation.integer(where, "gen_length", gen_length, minimum=1)
    if alg not in ALGS:
        validation.bad(where, "alg", alg, f"one of {ALGS}")
    eps = validation.number(where, "eps", eps, minimum=0)
    if not 0 < eps < 1:
        validation.bad(where, "eps", eps, "in (0, 1)")
    temperature = validation.number(where, "temperature", temperature, minimum=0)
    if alg_temp is not None:
        alg_temp = validation.number(where, "alg_temp", alg_temp, minimum=0)
    if top_p is not None and not 0 < validation.number(where, "top_p", top_p) <= 1:
        validation.bad(where, "top_p", top_p, "None or in (0, 1]")
    if top_k is not None:
        top_k = validation.integer(where, "top_k", top_k, minimum=1)
    b, p = prompt.shape
    config = getattr(model, "config", None)
    if config is not None and p + gen_length > config.max_sequence_length:
        validation.bad(where, "prompt_len + gen_length", p + gen_length,
                       f"<= max_sequence_length={config.max_sequence_length}")
    mask = np.ones((b, p), bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    if mask.shape != prompt.shape:
        validation.bad(where, "attention_mask.shape", mask.shape, f"the prompt's shape {prompt.shape}")
    rng = jax.random.key(0) if rng is None else validation.rng_key(where, "rng", rng)
    mask = np.concatenate([mask, np.ones((b, gen_length), bool)], axis=1)
    positions = np.where(mask, np.cumsum(mask, -1) - 1, 1).astype(np.int32)
    x = np.concatenate([prompt, np.full((b, gen_length), mask_id, np.int32)], axis=1)
    options = _Options(steps, alg, None if not alg_temp else float(alg_temp), float(temperature), int(mask_id),
                       filters=top_p is not None or top_k is not None)
    return _reverse_process(model, params, jnp.asarray(x), jnp.asarray(mask), jnp.asarray(positions),
                            jnp.asarray(timesteps(steps, eps)), rng, jnp.float32(1.0 if top_p is None else top_p),
                            jnp.int32((vocab or 2**30) if top_k is None else top_k), options)
