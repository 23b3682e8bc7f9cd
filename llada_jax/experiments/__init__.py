"""Small experiments that reproduce the paper's findings in miniature.

Shared here: an experiment's run, built by the run builder (`training.run.build_run`: the
model, optimizer, mesh, state shardings and step settings of a training run, checked by the
same rules) and trained by the training loop's core (`training.loop.run_steps`, without
checkpoints) on in-memory rows, for both kinds of model of the same shape: the masked
diffusion model (pre-training objective) and the autoregressive baseline (`causal=True`,
next-token cross-entropy, the same optimizer and state layout); plus their likelihood
measures in bits per token, greedy autoregressive decoding and the FLOPs accounting.

- `llada_jax.experiments.reversal`: the reversal curse on synthetic parent/child facts.
- `llada_jax.experiments.scaling`: diffusion versus autoregressive at equal training FLOPs.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import flax.linen as nn
from llada_jax.config import base_config, set_model_field
from llada_jax.model import LLaDAConfig, build, flops, from_config, init_params
from llada_jax.objectives import diffusion, likelihood
from llada_jax.training import loop, step, train_state
from llada_jax.training import run as run_lib

KINDS = ("diffusion", "autoregressive")


def optim_config(lr: float, warmup_steps: int) -> ml_collections.ConfigDict:
    """The default optimizer fields (AdamW, cosine decay, clipping) at this lr and warmup."""
    optim = base_config().optim
    optim.update(lr=lr, warmup_steps=warmup_steps)
    return optim


def experiment_run(mcfg: LLaDAConfig, objective: str, *, optim: ml_collections.ConfigDict, steps: int,
                   batch_size: int, seq_len: int, random_length_prob: float = 0.0):
    """(Run, the train step's settings, the compiled step) of an in-memory experiment on one
    device, from the run builder (`training.run.build_run`) as a training run of this model,
    objective, optimizer and batch shape is built, and checked by the same rules."""
    config = base_config()
    for name, value in from_config.model_section(mcfg).items():
        set_model_field(config.model, name, value)
    config.optim = optim
    config.train.steps = steps
    config.mesh.data = 1
    config.data.update(kind=objective, source="synthetic", batch_size=batch_size, seq_len=seq_len,
                       random_length_prob=random_length_prob, eps=diffusion.EPS)
    built = run_lib.build_run(config, devices=jax.devices()[:1])
    st, batch_spec = run_lib.train_static(built)
    return built, st, step.compile_step(st, built.mesh, built.shardings, batch_spec)


def start_state(built, params, seed: int) -> dict:
    """A fresh train state of `built` (a Run) from `params` (copied: the step donates its
    state), the step's noise seeded by `seed`."""
    params = jax.tree_util.tree_map(jnp.copy, params)
    state = train_state.init_state(built.model, built.tx, built.mesh, 0, built.shardings, params=params)
    return dict(state, rng=jax.random.PRNGKey(seed))


def run_rows(step_fn, state, batches: Iterator[np.ndarray], steps: int, hooks=()):
    """`steps` of a compiled train step (`experiment_run`'s) on in-memory batches (int32
    (B, L) rows): the training loop's core without checkpoints."""
    return loop.run_steps(state, 0, steps, update=step_fn, hooks=hooks,
                          next_batch=lambda i, state: {"input_ids": jnp.asarray(next(batches), jnp.int32)})[0]


def model_for(kind: str, config: LLaDAConfig) -> nn.Module:
    """The same shape as a bidirectional mask predictor or a causal baseline."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
    return build(config.replace(causal=kind == "autoregressive"))


def train_model(kind: str, config: LLaDAConfig, batches: Iterator[np.ndarray], *, steps: int, lr: float,
                seed: int = 0, warmup_steps: int = 20, random_length_prob: float = 0.0,
                callback: Callable[[int, dict], None] | None = None, callback_every: int = 0):
    """Train a model of `kind` for `steps` steps on `batches` (int32 (B, L) arrays): the
    pre-training objective for "diffusion", next-token prediction for "autoregressive"
    (a causal model), AdamW at `lr` with the default schedule.

    Both kinds start from the same initial parameters for a given seed and see the same
    batches. callback(step, params) runs every `callback_every` steps (and at the end).
    Returns (model, params, losses per step).
    """
    mcfg = model_for(kind, config).config
    first = next(batches)
    batches = itertools.chain([first], batches)
    built, _, step_fn = experiment_run(mcfg, "pretrain" if kind == "diffusion" else "autoregressive",
                                       optim=optim_config(lr, warmup_steps), steps=steps, batch_size=first.shape[0],
                                       seq_len=first.shape[1], random_length_prob=random_length_prob)
    state = start_state(built, init_params(built.model_config, jax.random.PRNGKey(seed)), seed + 1)
    losses = []

    def record(i, state, m):
        losses.append(m["loss"])
        if callback is not None and callback_every and (i % callback_every == 0 or i == steps):
            callback(i, state["params"])

    # a non-finite loss is reported after the run
    state = run_rows(step_fn, state, batches, steps, hooks=(record,))
    losses = np.asarray(jax.device_get(losses), np.float64)
    if not np.all(np.isfinite(losses)):
        raise FloatingPointError(f"train_model({kind}): non-finite loss at step {int(np.argmin(np.isfinite(losses))) + 1}")
    return built.model, state["params"], losses


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
    p = (1 - diffusion.EPS) * t + diffusion.EPS  # (num_t, b): the forward process's masking probability
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
