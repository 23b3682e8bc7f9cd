"""The jitted RL updates of the registered RL objectives (`objectives.get("grpo" | "vrpo")`)
over the training state {"step", "params", "opt_state", "rng"} (+ "frozen" with LoRA): the
same state layout, optimizer update (`training.optimizer.apply_gradients`) and checkpoints as `train`.

The reference policy: with LoRA the base without adapters (`ref_model` is the model with
rank 0 applied to state["frozen"]: no second copy of the weights); without LoRA a frozen
copy of the initial params, passed in as `ref_params` (reloaded from `rl.init_from` on
resume, so a checkpoint never holds it).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import flax.linen as nn
from llada_jax import objectives
from llada_jax.model.adapters import lora
from llada_jax.training import optimizer, train_state
from llada_jax.model import build
from llada_jax.objectives import grpo  # noqa: F401  (rl_step.grpo.group_advantages, used by experiments)
from llada_jax.objectives.base import Policy


class Static(NamedTuple):
    """Hashable settings of the compiled RL updates."""

    model: nn.Module
    ref_model: nn.Module
    tx: optax.GradientTransformation
    prompt_len: int
    mask_id: int
    num_iterations: int = 1  # mu: optimizer updates per rollout batch
    p_mask_prompt: float = 0.15
    epsilon: float = 0.2
    beta: float = 0.04
    vrpo_n: int = 8  # VRPO: timesteps (one mask each) per sequence


def reference_model(model: nn.Module) -> nn.Module:
    """The model that computes the reference: without LoRA the model itself, with LoRA
    the same shape at rank 0 (it reads only the base, state["frozen"])."""
    return build(model.config.replace(lora=lora.LoRAConfig())) if model.config.lora.rank else model


def reference_params(state, ref_params=None):
    return state["frozen"] if "frozen" in state else ref_params


def objective(kind: str, st: Static):
    """The registered RL objective `kind` ("grpo" or "vrpo") with the settings of `st`."""
    if kind == "grpo":
        settings = dict(num_iterations=st.num_iterations, p_mask_prompt=st.p_mask_prompt, epsilon=st.epsilon)
    else:
        settings = dict(n=st.vrpo_n)
    return dataclasses.replace(objectives.get(kind), prompt_len=st.prompt_len, mask_id=st.mask_id, beta=st.beta,
                               **settings)


def rl_step(state, ref_params, batch, st: Static, obj):
    """The optimizer updates of an RL objective `obj` (objectives.base: RL objectives) on
    one batch: its noise has one entry per update (GRPO's mu, redrawn prompt masks); the
    frozen policies' arrays (rollout-time "old" and reference log-probs, reference ELBOs)
    are computed for every update before any update; each update is the training step's
    `apply_gradients`."""
    rng, step_rng = jax.random.split(state["rng"])
    noise = obj.noise(batch, step_rng, None, mask_id=st.mask_id, eps=0.0)
    frozen = state.get("frozen")
    full = lambda params: params if frozen is None else lora.combine(params, frozen)
    policy, ref = Policy(st.model, full(state["params"])), Policy(st.ref_model, reference_params(state, ref_params))
    consts = jax.lax.map(lambda nk: obj.reference(policy, ref, batch, nk), noise)

    def loss_fn(params, noise_k, consts_k):
        return obj.loss(Policy(st.model, full(params)), {**batch, **consts_k}, noise_k, None)

    def body(carry, xs):
        params, opt_state = carry
        (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *xs)
        params, opt_state, grad_norm = optimizer.apply_gradients(st.tx, params, opt_state, grads)
        return (params, opt_state), {**m, "loss": loss, "grad_norm": grad_norm}

    (params, opt_state), ms = jax.lax.scan(body, (state["params"], state["opt_state"]), (noise, consts))
    m = jax.tree_util.tree_map(jnp.mean, ms)
    m["state_finite"] = train_state.update_finite(params, jnp.max(ms["grad_norm"]))
    return {**state, "params": params, "opt_state": opt_state, "rng": rng, "step": state["step"] + 1}, m


def grpo_step(state, ref_params, ids_NxL, advantages_N, completion_mask_NxA, st: Static):
    """mu = num_iterations optimizer updates of diffu-GRPO on one rollout batch (d1)."""
    batch = {"input_ids": ids_NxL, "advantages": advantages_N, "completion_mask": completion_mask_NxA}
    return rl_step(state, ref_params, batch, st, objective("grpo", st))


def vrpo_step(state, ref_params, chosen_NxL, rejected_NxL, st: Static):
    """One optimizer update of VRPO on a batch of preference pairs; the policy and the
    reference see the same timesteps and masks (antithetic sampling)."""
    return rl_step(state, ref_params, {"chosen": chosen_NxL, "rejected": rejected_NxL}, st, objective("vrpo", st))


def jitted(kind: str, st: Static):
    """The jitted update of `kind` ("grpo" or "vrpo"); the state is donated. Not cached: the
    caller holds the returned function for as long as it steps (one compile per run)."""
    fn = {"grpo": grpo_step, "vrpo": vrpo_step}[kind]
    return jax.jit(functools.partial(fn, st=st), donate_argnums=0)
