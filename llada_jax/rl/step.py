"""The jitted RL updates over the training state {"step", "params", "opt_state", "rng"}
(+ "frozen" with LoRA), the same state layout, optimizer and checkpoints as `train`.

The reference policy: with LoRA the base without adapters (`ref_model` is the model with
rank 0 applied to state["frozen"]: no second copy of the weights); without LoRA a frozen
copy of the initial params, passed in as `ref_params` (reloaded from `rl.init_from` on
resume, so a checkpoint never holds it).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from llada_jax.model.adapters import lora
from llada_jax.training import step as train
from llada_jax.model import LLaDA
from llada_jax.objectives import grpo, vrpo


class Static(NamedTuple):
    """Hashable settings of the compiled RL updates."""

    model: LLaDA
    ref_model: LLaDA
    tx: optax.GradientTransformation
    prompt_len: int
    mask_id: int
    num_iterations: int = 1  # mu: optimizer updates per rollout batch
    p_mask_prompt: float = 0.15
    epsilon: float = 0.2
    beta: float = 0.04
    vrpo_n: int = 8  # VRPO: timesteps (one mask each) per sequence


def reference_model(model: LLaDA) -> LLaDA:
    """The model that computes the reference: without LoRA the model itself, with LoRA
    the same shape at rank 0 (it reads only the base, state["frozen"])."""
    return LLaDA(model.config.replace(lora=lora.LoRAConfig())) if model.config.lora.rank else model


def reference_params(state, ref_params=None):
    return state["frozen"] if "frozen" in state else ref_params


def _apply(model, frozen):
    def fn(params, ids):
        full = params if frozen is None else lora.combine(params, frozen)
        return model.apply({"params": full}, ids)

    return fn


def _update(state, grads, new_rng, m, st: Static):
    updates, opt_state = st.tx.update(grads, state["opt_state"], state["params"])
    new = {**state, "params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
           "rng": new_rng, "step": state["step"] + 1}
    m = {**m, "grad_norm": optax.tree.norm(grads), "state_finite": train.all_finite((new["params"], opt_state))}
    return new, m


def grpo_step(state, ref_params, ids_NxL, advantages_N, completion_mask_NxC, st: Static):
    """mu = num_iterations optimizer updates on one rollout batch (d1). Iteration k's
    prompt mask (redrawn per iteration) is shared by the new, the rollout-time ("old")
    and the reference log-probabilities; old and ref are computed once, before any update."""
    rng, step_rng = jax.random.split(state["rng"])
    mask_rngs = jax.random.split(step_rng, st.num_iterations)
    frozen = state.get("frozen")
    logps = functools.partial(grpo.completion_logps, prompt_len=st.prompt_len, p_mask_prompt=st.p_mask_prompt,
                              mask_id=st.mask_id)
    policy = _apply(st.model, frozen)
    old = jax.lax.map(lambda r: logps(policy, state["params"], ids_NxL, r), mask_rngs)
    if st.beta:
        ref = jax.lax.map(lambda r: logps(_apply(st.ref_model, None), reference_params(state, ref_params),
                                          ids_NxL, r), mask_rngs)
    else:
        ref = old

    def loss_fn(params, r, old_k, ref_k):
        return grpo.grpo_loss(logps(policy, params, ids_NxL, r), old_k, ref_k, advantages_N, completion_mask_NxC,
                              epsilon=st.epsilon, beta=st.beta)

    def body(carry, xs):
        params, opt_state = carry
        (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *xs)
        updates, opt_state = st.tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {**m, "loss": loss,
                                                                  "grad_norm": optax.tree.norm(grads)}

    (params, opt_state), ms = jax.lax.scan(body, (state["params"], state["opt_state"]), (mask_rngs, old, ref))
    m = jax.tree_util.tree_map(jnp.mean, ms)
    m["state_finite"] = train.all_finite((params, opt_state))
    new = {**state, "params": params, "opt_state": opt_state, "rng": rng, "step": state["step"] + 1}
    return new, m


def vrpo_step(state, ref_params, chosen_NxL, rejected_NxL, st: Static):
    """One optimizer update of VRPO on a batch of preference pairs; the policy and the
    reference see the same timesteps and masks (antithetic sampling)."""
    rng, step_rng = jax.random.split(state["rng"])
    n = chosen_NxL.shape[0]
    keys_w, keys_l = vrpo.pair_rngs(step_rng, n)
    frozen = state.get("frozen")
    elbo = functools.partial(vrpo.elbo, prompt_len=st.prompt_len, n=st.vrpo_n, mask_id=st.mask_id)
    ref_p = reference_params(state, ref_params)
    ref_w = elbo(st.ref_model, ref_p, chosen_NxL, keys_w)
    ref_l = elbo(st.ref_model, ref_p, rejected_NxL, keys_l)

    def loss_fn(params):
        full = params if frozen is None else lora.combine(params, frozen)
        return vrpo.vrpo_loss(elbo(st.model, full, chosen_NxL, keys_w), elbo(st.model, full, rejected_NxL, keys_l),
                              ref_w, ref_l, beta=st.beta)

    (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    return _update(state, grads, rng, {**m, "loss": loss}, st)


@functools.lru_cache(maxsize=16)
def jitted(kind: str, st: Static):
    """The jitted update of `kind` ("grpo" or "vrpo"); the state is donated."""
    fn = {"grpo": grpo_step, "vrpo": vrpo_step}[kind]
    return jax.jit(functools.partial(fn, st=st), donate_argnums=0)
