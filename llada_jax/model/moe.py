"""The sparse mixture-of-experts MLP: a router picks `num_experts_per_tok` of `num_experts`
SwiGLU experts per token, plus optional always-on shared experts.

Routing (one function, `route`, covers the published variants):
  scores = softmax(logits) or sigmoid(logits) of the router logits (float32);
  expert_bias "selection" (DeepSeek-V3, LLaDA 2.x): the experts are chosen by scores + bias and
  weighed by the unbiased scores; "weights" (LLaDA-MoE's published modeling file): the bias is
  added to the scores that both choose and weigh;
  group-limited routing (n_group > 1): only the topk_group groups with the largest sum of their
  two best scores are eligible;
  norm_topk_prob renormalises the chosen weights to sum to 1; routed_scaling_factor multiplies them.
The first `first_k_dense` layers keep the dense SwiGLU MLP (the model scans them as a second stack).

Dispatch (`MoEConfig.dispatch`):
  "ragged": the (token, slot) pairs sorted by expert, each expert's rows multiplied by its weights
    with `jax.lax.ragged_dot` (grouped matmuls): dropless, exact, and native grouped GEMMs on
    GPU/TPU; XLA:CPU lowers it to a masked dense dot, num_experts times the FLOPs.
  "dense": every expert on every token (einsums), the unchosen ones weighed 0: exact, and
    num_experts / num_experts_per_tok times the active FLOPs, so best for small expert counts
    and on CPU. `benchmarks/moe_dispatch.py` measures both.

Auxiliary losses, sown into the `MOE_LOSSES` collection per MoE layer (the train step
collects them with `collect_losses`): the load-balancing loss of Switch / the published
`load_balancing_loss_func` (num_experts * sum_i f_i P_i, f_i the fraction of tokens that
chose expert i, P_i its mean routing probability; num_experts_per_tok at perfect balance),
and the router z-loss (ST-MoE: mean of logsumexp(logits)^2). Every token counts (as the
published code does with attention_mask None).

Parameters: `router` (embed, expert), `experts_gate` / `experts_up` (expert, embed, mlp),
`experts_down` (expert, mlp, embed), the shared expert's `shared_gate` / `shared_up` /
`shared_down`, and `expert_bias` (expert,), a fixed (imported) bias: no gradient, no decay.
LoRA does not apply to these (its targets are the attention projections and the dense MLP's).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from llada_jax.model.layers import EMBED, MLP, projection

EXPERT = "expert"  # logical axis of the expert dimension (llada_jax.parallel.sharding maps it)
MOE_LOSSES = "moe_losses"  # the collection the aux losses are sown into
SCORE_FUNCTIONS = ("softmax", "sigmoid")
EXPERT_BIAS = ("none", "selection", "weights")
DISPATCH = ("ragged", "dense")
METRICS = ("moe_load_balance", "moe_z_loss")  # what the train step reports


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    """num_experts 0: the dense SwiGLU MLP (the default). Validated by LLaDAConfig."""

    num_experts: int = 0
    num_experts_per_tok: int = 2
    expert_hidden_size: int = 0  # each expert's SwiGLU width; 0: the model's mlp_hidden_size
    shared_hidden_size: int = 0  # the shared experts' total width (always on); 0: none
    score_function: str = "softmax"  # a key of SCORE_FUNCTIONS
    expert_bias: str = "none"  # one of EXPERT_BIAS (see the module docstring)
    n_group: int = 1  # group-limited routing: experts in n_group groups ...
    topk_group: int = 1  # ... of which the best topk_group are eligible
    norm_topk_prob: bool = False
    routed_scaling_factor: float = 1.0
    first_k_dense: int = 0  # the first layers keep the dense MLP (mlp_hidden_size wide)
    load_balance_weight: float = 0.01  # the training loss adds these times the layers' mean
    z_loss_weight: float = 0.001
    dispatch: str = "ragged"  # one of DISPATCH

    @property
    def enabled(self) -> bool:
        return self.num_experts > 0


def problems(m: MoEConfig, n_layers: int) -> list[tuple[str, str]]:
    """(field, expected) for every rule `m` breaks; LLaDAConfig raises the first."""
    out = []

    def need(ok, field, expected):
        if not ok:
            out.append((field, expected))

    def count(v):
        return isinstance(v, int) and not isinstance(v, bool)

    need(count(m.num_experts) and m.num_experts >= 0, "num_experts", "an integer >= 0 (0: the dense MLP)")
    if out or not m.enabled:
        return out
    need(count(m.num_experts_per_tok) and 1 <= m.num_experts_per_tok <= m.num_experts, "num_experts_per_tok",
         f"an integer in [1, num_experts={m.num_experts}]")
    for f in ("expert_hidden_size", "shared_hidden_size"):
        need(count(getattr(m, f)) and getattr(m, f) >= 0, f, "an integer >= 0")
    need(m.score_function in SCORE_FUNCTIONS, "score_function", f"one of {SCORE_FUNCTIONS}")
    need(m.expert_bias in EXPERT_BIAS, "expert_bias", f"one of {EXPERT_BIAS}")
    need(m.dispatch in DISPATCH, "dispatch", f"one of {DISPATCH}")
    need(count(m.n_group) and m.n_group >= 1 and m.num_experts % m.n_group == 0, "n_group",
         f"a divisor of num_experts={m.num_experts}")
    if count(m.n_group) and m.n_group >= 1:
        per = m.num_experts // m.n_group
        need(count(m.topk_group) and 1 <= m.topk_group <= m.n_group and m.topk_group * per >= m.num_experts_per_tok,
             "topk_group", f"an integer in [1, n_group={m.n_group}] whose groups hold >= num_experts_per_tok="
             f"{m.num_experts_per_tok} experts")
        need(m.n_group == 1 or per >= 2, "n_group", "groups of at least 2 experts (a group scores its best two)")
    need(isinstance(m.norm_topk_prob, bool), "norm_topk_prob", "a bool")
    need(isinstance(m.routed_scaling_factor, (int, float)) and m.routed_scaling_factor > 0,
         "routed_scaling_factor", "> 0")
    need(count(m.first_k_dense) and 0 <= m.first_k_dense < n_layers, "first_k_dense",
         f"an integer in [0, n_layers={n_layers}) (at least one MoE layer)")
    for f in ("load_balance_weight", "z_loss_weight"):
        need(isinstance(getattr(m, f), (int, float)) and getattr(m, f) >= 0, f, ">= 0")
    return out


def route(logits_TxX, m: MoEConfig, bias_X=None):
    """(weights (T, K) float32, expert ids (T, K) int32, scores (T, X)) of router logits."""
    logits = logits_TxX.astype(jnp.float32)
    scores = jax.nn.softmax(logits, -1) if m.score_function == "softmax" else jax.nn.sigmoid(logits)
    choice = scores if bias_X is None or m.expert_bias == "none" else scores + bias_X.astype(jnp.float32)
    if m.n_group > 1:
        t, x = choice.shape
        grouped = choice.reshape(t, m.n_group, x // m.n_group)
        group_score = jnp.sum(jax.lax.top_k(grouped, 2)[0], -1)
        _, best = jax.lax.top_k(group_score, m.topk_group)
        keep = jnp.sum(jax.nn.one_hot(best, m.n_group, dtype=jnp.int32), 1) > 0
        choice = jnp.where(jnp.repeat(keep, x // m.n_group, axis=1), choice, -jnp.inf)
    top, idx = jax.lax.top_k(choice, m.num_experts_per_tok)
    weights = top if m.expert_bias == "weights" else jnp.take_along_axis(scores, idx, -1)
    if m.norm_topk_prob:
        weights = weights / (jnp.sum(weights, -1, keepdims=True) + 1e-20)
    return weights * m.routed_scaling_factor, idx, scores


def aux_losses(logits_TxX, idx_TxJ, m: MoEConfig):
    """(load-balancing loss, router z-loss), float32 scalars (see the module docstring)."""
    logits = logits_TxX.astype(jnp.float32)
    probs = jax.nn.softmax(logits, -1) if m.score_function == "softmax" else jax.nn.sigmoid(logits)
    if m.score_function == "sigmoid":  # P_i over normalised scores, as a distribution
        probs = probs / jnp.sum(probs, -1, keepdims=True)
    chosen = jnp.sum(jax.nn.one_hot(idx_TxJ, m.num_experts, dtype=jnp.float32), 1)  # (T, X)
    balance = m.num_experts * jnp.sum(jnp.mean(chosen, 0) * jnp.mean(probs, 0))
    z = jnp.mean(jnp.square(jax.nn.logsumexp(logits, -1)))
    return balance, z


def _ragged(x_TxE, idx_TxJ, gate, up, down):
    """Per-(token, slot) expert outputs (T, K, E) with grouped matmuls over expert-sorted rows."""
    t, k = idx_TxJ.shape
    flat = idx_TxJ.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    sizes = jnp.bincount(flat, length=gate.shape[0]).astype(jnp.int32)
    rows = jnp.take(x_TxE, order // k, axis=0)
    h = jax.nn.silu(jax.lax.ragged_dot(rows, gate, sizes)) * jax.lax.ragged_dot(rows, up, sizes)
    out = jax.lax.ragged_dot(h, down, sizes)
    return jnp.take(out, jnp.argsort(order), axis=0).reshape(t, k, -1)


def experts_apply(x_TxE, weights_TxJ, idx_TxJ, gate_XxExF, up_XxExF, down_XxFxE, dispatch: str):
    """sum_k weights[t, k] * SwiGLU_{idx[t, k]}(x[t]): (T, E) in x's dtype."""
    w = weights_TxJ.astype(x_TxE.dtype)
    if dispatch == "ragged":
        return jnp.einsum("tke,tk->te", _ragged(x_TxE, idx_TxJ, gate_XxExF, up_XxExF, down_XxFxE), w)
    combine_TxX = jnp.einsum("tkx,tk->tx", jax.nn.one_hot(idx_TxJ, gate_XxExF.shape[0], dtype=x_TxE.dtype), w)
    h = jax.nn.silu(jnp.einsum("te,xem->txm", x_TxE, gate_XxExF)) * jnp.einsum("te,xem->txm", x_TxE, up_XxExF)
    return jnp.einsum("txm,xme->te", h * combine_TxX[..., None], down_XxFxE)  # one matmul over (x, m)


class MoEMLP(nn.Module):
    """The MoE MLP of one Block: (B, L, E) -> (B, L, E); sows its aux losses."""

    config: object  # LLaDAConfig (not imported: the transformer imports this module)

    @nn.compact
    def __call__(self, x_BxLxE):
        cfg, m = self.config, self.config.moe
        b, l, e = x_BxLxE.shape
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        x, hid = x_BxLxE.reshape(b * l, e), m.expert_hidden_size or cfg.mlp_hidden_size

        def param(name, shape, axes):
            init = nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std), axes)
            return self.param(name, init, shape, pdt)

        router = param("router", (e, m.num_experts), (EMBED, EXPERT))
        logits = jnp.einsum("te,ex->tx", x, router.astype(dt), preferred_element_type=jnp.float32)
        bias = None
        if m.expert_bias != "none":
            init = nn.with_logical_partitioning(nn.initializers.zeros, (EXPERT,))
            bias = jax.lax.stop_gradient(self.param("expert_bias", init, (m.num_experts,), jnp.float32))
        weights, idx, _ = route(logits, m, bias)
        balance, z = aux_losses(logits, idx, m)
        self.sow(MOE_LOSSES, "load_balance", balance)
        self.sow(MOE_LOSSES, "z_loss", z)
        gate = param("experts_gate", (m.num_experts, e, hid), (EXPERT, EMBED, MLP)).astype(dt)
        up = param("experts_up", (m.num_experts, e, hid), (EXPERT, EMBED, MLP)).astype(dt)
        down = param("experts_down", (m.num_experts, hid, e), (EXPERT, MLP, EMBED)).astype(dt)
        y = experts_apply(x, weights, idx, gate, up, down, m.dispatch).reshape(b, l, e)
        if m.shared_hidden_size:
            s = m.shared_hidden_size
            sg = projection(self, "shared_gate", "ble,em->blm", (e, s), (EMBED, MLP))
            su = projection(self, "shared_up", "ble,em->blm", (e, s), (EMBED, MLP))
            sd = projection(self, "shared_down", "blm,me->ble", (s, e), (MLP, EMBED))
            y = y + sd(jax.nn.silu(sg(x_BxLxE)) * su(x_BxLxE))
        return y


def collect_losses(mutables) -> dict:
    """{"load_balance", "z_loss"}: each the mean over the MoE layers of what `MoEMLP` sowed
    (scanned stacks sow one value per layer); zeros when nothing was sown."""
    out = {}
    for name in ("load_balance", "z_loss"):
        # each leaf is a tuple of sown values; a scanned stack's carry a leading layer axis
        vals = [jnp.ravel(a) for v in _find(mutables.get(MOE_LOSSES, {}), name)
                for a in (v if isinstance(v, tuple) else (v,))]
        out[name] = jnp.mean(jnp.concatenate(vals)) if vals else jnp.zeros((), jnp.float32)
    return out


def _find(tree, name):
    for k, v in tree.items():
        if k == name:
            yield v
        elif isinstance(v, dict):
            yield from _find(v, name)


def add_losses(loss, metrics: dict, sown: list, m: MoEConfig):
    """The training loss plus load_balance_weight x the load-balancing loss and z_loss_weight
    x the router z-loss (each the mean over the forwards of `sown`, `collect_losses` outputs);
    the metrics gain both terms unweighted (METRICS)."""
    balance = jnp.mean(jnp.stack([s["load_balance"] for s in sown]))
    z = jnp.mean(jnp.stack([s["z_loss"] for s in sown]))
    metrics = {**metrics, METRICS[0]: balance, METRICS[1]: z}
    return loss + m.load_balance_weight * balance + m.z_loss_weight * z, metrics
