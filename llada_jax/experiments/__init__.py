"""Small experiments that reproduce the paper's findings in miniature.

Shared here: one training run (the training loop's core, `training.loop.run_steps`,
without checkpoints) for both kinds of model of the same shape, the masked
diffusion model (the project's own `training.step.train_step`: forward process, pre-training
loss, AdamW) and the autoregressive baseline (`causal=True`, next-token cross-entropy,
the same optimizer and state layout), plus their likelihood measures in bits per token,
greedy autoregressive decoding and the FLOPs accounting.

- `llada_jax.experiments.reversal`: the reversal curse on synthetic parent/child facts.
- `llada_jax.experiments.scaling`: diffusion versus autoregressive at equal training FLOPs.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import flax.linen as nn
from llada_jax import objectives
from llada_jax.objectives import diffusion, likelihood
from llada_jax.training import loop, optimizer, step
from llada_jax.config import base_config
from llada_jax.model import LLaDAConfig, build, flops, init_params

KINDS = ("diffusion", "autoregressive")


def optim_config(lr: float, warmup_steps: int) -> ml_collections.ConfigDict:
    """The default optimizer fields (AdamW, cosine decay, clipping) at this lr and warmup."""
    optim = base_config().optim
    optim.update(lr=lr, warmup_steps=warmup_steps)
    return optim


def make_step(model: nn.Module, tx, kind: str, random_length_prob: float = 0.0):
    """The jitted train step of `kind`: the training system's own step with the pretrain
    objective (diffusion) or the autoregressive one (llada_jax.objectives). Not cached:
    `train_model` holds it for its run."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
    objective = "pretrain" if kind == "diffusion" else "autoregressive"
    if model.config.causal != objectives.get(objective).causal:
        raise ValueError(f"make_step: a{'n' if kind == 'autoregressive' else ''} {kind} model needs "
                         f"causal={not model.config.causal}")
    st = step.Static(model, tx, objective, model.config.mask_token_id, diffusion.EPS,
                      random_length_prob if kind == "diffusion" else 0.0, 1)
    return jax.jit(functools.partial(step.train_step, st=st), donate_argnums=0)


def model_for(kind: str, config: LLaDAConfig) -> nn.Module:
    """The same shape as a bidirectional mask predictor or a causal baseline."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
    return build(config.replace(causal=kind == "autoregressive"))


def train_model(kind: str, config: LLaDAConfig, batches: Iterator[np.ndarray], *, steps: int, lr: float,
                seed: int = 0, warmup_steps: int = 20, random_length_prob: float = 0.0,
                callback: Callable[[int, dict], None] | None = None, callback_every: int = 0):
    """Train a model of `kind` for `steps` steps on `batches` (int32 (B, L) arrays).

    Both kinds start from the same initial parameters for a given seed and see the same
    batches. callback(step, params) runs every `callback_every` steps (and at the end).
    Returns (model, params, losses per step).
    """
    model = model_for(kind, config)
    tx, _ = optimizer.make_optimizer(optim_config(lr, warmup_steps), steps)
    step_fn = make_step(model, tx, kind, random_length_prob)
    params = init_params(model.config, jax.random.PRNGKey(seed))
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
             "rng": jax.random.PRNGKey(seed + 1)}
    losses = []

    def record(i, state, m):
        losses.append(m["loss"])
        if callback is not None and callback_every and (i % callback_every == 0 or i == steps):
            callback(i, state["params"])

    # the training loop's core without checkpoints; a non-finite loss is reported after the run
    state = loop.run_steps(state, 0, steps, update=step_fn, hooks=(record,),
                           next_batch=lambda i, state: {"input_ids": jnp.asarray(next(batches), jnp.int32)})[0]
    losses = np.asarray(jax.device_get(losses), np.float64)
    if not np.all(np.isfinite(losses)):
        raise FloatingPointError(f"train_model({kind}): non-finite loss at step {int(np.argmin(np.isfinite(losses))) + 1}")
    return model, state["params"], losses


def random_batches(rows: np.ndarray, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Endless batches of rows, reshuffled each epoch."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(rows))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield rows[order[i:i + batch_size]]


def flops_per_step(config: LLaDAConfig, batch_size: int, seq_len: int) -> float:
    """Training FLOPs of one step (forward + backward), the same count for both kinds."""
    return flops.train_flops_per_token(config, seq_len) * batch_size * seq_len


@functools.partial(jax.jit, static_argnames=("model",))
def _ar_nll(model, params, ids):
    logits = model.apply({"params": params}, ids[:, :-1])
    return jnp.sum(diffusion.token_cross_entropy(logits, ids[:, 1:]))


def ar_bits_per_token(model: nn.Module, params, rows: np.ndarray, batch_size: int = 32) -> float:
    """Exact NLL of rows[:, 1:] given the preceding tokens, in bits per token."""
    total = sum(float(_ar_nll(model, params, jnp.asarray(rows[i:i + batch_size])))
                for i in range(0, len(rows), batch_size))
    return total / (rows.shape[0] * (rows.shape[1] - 1)) / math.log(2)


@functools.partial(jax.jit, static_argnames=("model", "num_t"))
def _elbo_sum(model, params, ids, rng, num_t):
    b, l = ids.shape
    u_rng, m_rng = jax.random.split(rng)
    # stratified t: one draw in each of num_t equal bins, shifted by one offset per row
    t = (jnp.arange(num_t)[:, None] + jax.random.uniform(u_rng, (1, b))) / num_t
    p = (1 - diffusion.EPS) * t + diffusion.EPS  # (num_t, b), as in the forward process (facts 3)
    masked = jax.random.uniform(m_rng, (num_t, b, l)) < p[..., None]

    def one(args):
        m, pk = args
        return jnp.sum(likelihood.masked_nll(model, params, ids, m, 1.0 / pk, mask_id=model.config.mask_token_id))

    return jnp.sum(jax.lax.map(one, (masked, p))) / num_t


def diffusion_bits_per_token(model: nn.Module, params, rows: np.ndarray, *, rng, num_t: int = 8,
                             batch_size: int = 32) -> float:
    """The diffusion ELBO bound in bits per token: the pre-training loss (an upper bound on
    a bound on the NLL in nats per token) averaged over `num_t` stratified t per row."""
    total = 0.0
    for i in range(0, len(rows), batch_size):
        chunk = jnp.asarray(rows[i:i + batch_size])
        total += float(_elbo_sum(model, params, chunk, jax.random.fold_in(rng, i), num_t))
    return total / rows.size / math.log(2)


@functools.partial(jax.jit, static_argnames=("model", "n"))
def _greedy(model, params, x, attention_mask, n):
    p = x.shape[1] - n

    def body(i, x):
        logits = model.apply({"params": params}, x, attention_mask)
        nxt = jnp.argmax(logits[:, p + i - 1], axis=-1).astype(x.dtype)
        return x.at[:, p + i].set(nxt)

    return jax.lax.fori_loop(0, n, body, x)


def greedy_ar(model: nn.Module, params, prompt: np.ndarray, n: int, attention_mask=None) -> np.ndarray:
    """Greedy next-token decoding of `n` tokens after `prompt` (B, P); returns (B, n).
    Left-padded prompts take an `attention_mask` (B, P) with 0 on the padding."""
    prompt = np.asarray(prompt, np.int32)
    b, p = prompt.shape
    x = np.concatenate([prompt, np.zeros((b, n), np.int32)], axis=1)
    mask = None if attention_mask is None else np.concatenate(
        [np.asarray(attention_mask, bool), np.ones((b, n), bool)], axis=1)
    return np.asarray(_greedy(model, params, jnp.asarray(x), mask, n))[:, p:]
