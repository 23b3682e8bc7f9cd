"""The schema and shared defaults of the run configs in configs/ (big_vision style).

Every experiment file's `get_config()` starts from `base_config()`, changes what it
needs and returns the locked `ConfigDict`: a command-line override of a field that does
not exist (`--config.optim.lrr=1`) is then an error naming that field. FIELD_DOCS gives
every field's meaning: `python -m llada_jax.config [FILE]` lists them with their values,
and a command's `--print_config` the config its command line resolves to. The rules
about the fields' values are `llada_jax.config.rules` (and `rules_rl` for the `rl` section).
"""

from __future__ import annotations

import copy
import importlib.util

import ml_collections
from ml_collections import config_dict

# The model fields a run inherits: left unset (None) in a config, they come from the base of
# train.init_from (its run.json, or a Hugging Face folder's config.json), vocab_size from the
# run's tokenizer, or else these values (a 64-wide, 2-layer LLaDA). A field a config file, a
# command-line flag or Python code sets is the user's: it overrides the base where it may
# (training.inherit.SHAPE fields must equal the base's). Why None and not a comparison with
# these defaults: a value the user sets that equals the default (`--config.model.causal=False`
# on a causal base) must count as set, which only a separate "unset" value can tell.
MODEL_DEFAULTS = dict(
    family="llada",
    d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=256,
    vocab_size=512, max_sequence_length=512, rope_theta=10000.0, rms_norm_eps=1e-5, weight_tying=False,
    # Architecture knobs of the other families (LLaDA's values here).
    qkv_bias=False, qk_norm=False, attention_head_dim=0, partial_rotary_factor=1.0,
    logit_alignment="same", causal=False, mlp="swiglu", block_size=0,
    moe=dict(num_experts=0, num_experts_per_tok=2, expert_hidden_size=0, shared_hidden_size=0,
             score_function="softmax", expert_bias="none", n_group=1, topk_group=1, norm_topk_prob=False,
             routed_scaling_factor=1.0, first_k_dense=0),
    # RoPE rescaling (llada_jax.model.rope.RopeScaling): "llama3" for Llama 3.1+ checkpoints
    rope_scaling=dict(rope_type="default", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_position_embeddings=8192),
)


def _unset(defaults: dict) -> dict:
    """Placeholders (None, typed like the default, so `--config.model.x=v` parses) for `defaults`."""
    return {k: ml_collections.ConfigDict(_unset(v)) if isinstance(v, dict) else config_dict.placeholder(type(v))
            for k, v in defaults.items()}


def unset_fields(model) -> list[str]:
    """The dotted names ("d_model", "moe.num_experts") of config.model's INHERITED fields that
    are unset, embedding_size included."""
    out = [] if model.get("embedding_size") is not None else ["embedding_size"]
    for k, v in MODEL_DEFAULTS.items():
        if isinstance(v, dict):
            out += [f"{k}.{f}" for f in v if model[k][f] is None]
        elif model[k] is None:
            out.append(k)
    return out


def set_model_field(model, name: str, value) -> None:
    """config.model.`name` (dotted) = value, converted to the default's type (JSON gives 1e4 as
    an int where the field is a float)."""
    *parent, leaf = name.split(".")
    node, default = model, MODEL_DEFAULTS
    for p in parent:
        node, default = node[p], default[p]
    kind = type(default[leaf] if leaf in default else node[leaf])
    node[leaf] = value if value is None or kind in (bool, str, type(None)) else kind(value)


def model_field(model, name: str):
    node = model
    for p in name.split("."):
        node = node[p]
    return node


def with_model_defaults(config):
    """A copy of `config` whose unset model fields hold MODEL_DEFAULTS (embedding_size: the
    vocab_size); `config` itself when none is unset. What validation, planning and model
    building read when nothing is inherited (training.inherit.resolve inherits first)."""
    missing = unset_fields(config.model)
    if not missing:
        return config
    config = copy.deepcopy(config)
    for name in missing:
        if name != "embedding_size":
            set_model_field(config.model, name, model_field(MODEL_DEFAULTS, name))
    if config.model.embedding_size is None:
        config.model.embedding_size = config.model.vocab_size
    return config


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # Model shape (llada_jax.model.LLaDAConfig fields; Hugging Face names). The INHERITED fields
    # start unset (None): a run fills them from train.init_from, the tokenizer, or MODEL_DEFAULTS.
    c.model = ml_collections.ConfigDict(dict(
        _unset(MODEL_DEFAULTS),
        embedding_size=config_dict.placeholder(int),
        # -1: the base's (train.init_from), else taken from the tokenizer (mask, end-of-text); set for synthetic data.
        mask_token_id=-1, eos_token_id=-1, pad_token_id=-1,
        init_std=0.02,
        dtype="float32", param_dtype="float32", scan_layers=True, scan_unroll=0, remat_policy="none",
        attention="dense",
        mlp_chunk=0,
    ))
    # sparse MoE MLP (llada_jax.model.moe.MoEConfig; its docstring has each field); 0 experts: dense.
    # Its loss weights and dispatch are this run's choices, not the base's.
    c.model.moe.update(load_balance_weight=0.01, z_loss_weight=0.001, dispatch="ragged")

    # Device mesh (data, fsdp, tensor); one axis may be -1: the rest of the devices.
    # rules: (logical axis, mesh axes) pairs replacing those entries of the default table
    # (llada_jax.parallel.sharding.LOGICAL_RULES), e.g. (("embed", None),) stops FSDP.
    # expert: MoE expert parallelism (also data parallel); the mesh has the axis when it is > 1.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, expert=1, rules=()))

    c.optim = ml_collections.ConfigDict(dict(
        lr=1e-3, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
        schedule="cosine",
        warmup_steps=100,
        decay_steps=0,
        final_lr_ratio=0.1,
        drop_step=-1, drop_ratio=1.0,
        clip_norm=1.0,
        grad_accum=1,
    ))

    c.data = ml_collections.ConfigDict(dict(
        kind="pretrain",
        source="stdlib",
        task="arith",
        task_items=8, task_values=64,
        train_files="", eval_files="",
        train_jsonl="", eval_jsonl="",
        path="", eval_path="",
        tokenizer="",
        max_bytes=0,
        seq_len=128,
        batch_size=16,
        random_length_prob=0.01,
        eps=1e-3,
    ))

    c.train = ml_collections.ConfigDict(dict(
        steps=1000, seed=0, log_every=50,
        eval_every=500, eval_batches=4,
        num_samples=2, sample_prompt_len=16, sample_gen_length=32, sample_steps=32,
        peak_flops=0.0,
        init_from="",
        block_warmup="",
    ))

    # LoRA fine-tuning (llada_jax.model.adapters.lora): rank 0 is off. With rank > 0 the base model comes
    # from train.init_from, frozen and stored as base_dtype; the adapters and their optimizer
    # state are float32 and are all a checkpoint holds (the base is referenced, see the README).
    c.lora = ml_collections.ConfigDict(dict(
        rank=0, alpha=16.0, dropout=0.0,
        targets="all",
        base_dtype="bfloat16",
    ))

    c.checkpoint = ml_collections.ConfigDict(dict(every=500, keep=3, async_save=True))

    # Reinforcement learning (`python -m llada_jax.rl`, llada_jax.rl): diffu-GRPO (d1) or VRPO
    # (LLaDA 1.5) from the params of init_from; train.steps counts rollout (or pair) batches of
    # data.batch_size prompts (pairs), optim.* is the optimizer. Unused by `llada_jax.train`.
    c.rl = ml_collections.ConfigDict(dict(
        algorithm="grpo",
        init_from="",
        rewards="sort_exact",
        num_generations=8,
        num_iterations=2,
        p_mask_prompt=0.15,
        epsilon=0.2,
        beta=0.04,
        scale_rewards=False,
        # rollouts: llada_jax.sampling.generate options (threshold 0: off; cache "": none)
        sampler_steps=8, gen_length=8, block_length=8, temperature=1.0, remasking="low_confidence",
        threshold=0.0, cache="",
        pairs="",
        vrpo_n=8,
        eval_prompts=256,
    ))
    return c


# The meaning of every field (`python -m llada_jax.config` lists them with their values).
FIELD_DOCS = {
    # model
    "model.family": "model family (llada_jax.model.families): what llada_jax.build makes of this config",
    "model.d_model": "embedding width", "model.n_heads": "query heads", "model.n_kv_heads": "key/value heads (GQA)",
    "model.n_layers": "Transformer blocks", "model.mlp_hidden_size": "MLP hidden width",
    "model.vocab_size": "tokens the model predicts (>= the tokenizer's vocabulary)",
    "model.embedding_size": "rows of the embedding and output head (>= vocab_size; unset: vocab_size)",
    "model.max_sequence_length": "longest sequence (RoPE positions)", "model.rope_theta": "RoPE base",
    "model.rms_norm_eps": "RMSNorm epsilon", "model.weight_tying": "output head shares the embedding",
    "model.qkv_bias": "bias on the q/k/v projections (Qwen2, Dream)", "model.qk_norm": "RMSNorm on queries and keys (Qwen3, LLaDA-MoE)",
    "model.attention_head_dim": "head dimension; 0: d_model / n_heads",
    "model.partial_rotary_factor": "fraction of each head's dimensions that RoPE rotates",
    "model.logit_alignment": '"same": the logit at i predicts token i; "shifted": token i + 1 (Dream, AR checkpoints)',
    "model.causal": "causal attention mask (autoregressive models)", "model.mlp": 'MLP kind: "swiglu"',
    "model.block_size": "> 0: a block-causal model (block diffusion) with blocks of this size; 0: bidirectional",
    "model.moe.num_experts": "sparse MoE MLP experts (llada_jax.model.moe.MoEConfig); 0: a dense MLP",
    "model.moe.num_experts_per_tok": "experts chosen per token (top-k)", "model.moe.expert_hidden_size": "each expert's hidden width",
    "model.moe.shared_hidden_size": "hidden width of the shared expert; 0: none",
    "model.moe.score_function": 'router scores: "softmax" or "sigmoid"',
    "model.moe.expert_bias": 'a fixed routing bias per expert: "none", "selection" (it chooses, the unbiased scores weigh) or "weights" (it chooses and weighs)',
    "model.moe.n_group": "expert groups for group-limited routing", "model.moe.topk_group": "groups a token may route to",
    "model.moe.norm_topk_prob": "renormalise the chosen experts' weights to sum to 1",
    "model.moe.routed_scaling_factor": "scale of the routed experts' output", "model.moe.first_k_dense": "leading layers with a dense MLP",
    "model.moe.load_balance_weight": "weight of the load-balancing loss", "model.moe.z_loss_weight": "weight of the router z-loss",
    "model.moe.dispatch": '"ragged" (jax.lax.ragged_dot over sorted tokens) or "dense" (every expert on every token)',
    "model.rope_scaling.rope_type": 'RoPE rescaling: "default" (none) or "llama3" (Llama 3.1+ checkpoints)',
    "model.rope_scaling.factor": "llama3 RoPE scaling factor", "model.rope_scaling.low_freq_factor": "llama3 RoPE low-frequency factor",
    "model.rope_scaling.high_freq_factor": "llama3 RoPE high-frequency factor",
    "model.rope_scaling.original_max_position_embeddings": "llama3 RoPE: the pre-training context length",
    "model.mask_token_id": "the [MASK] id; -1: the base's (train.init_from), else the tokenizer's",
    "model.eos_token_id": "the end-of-text id; -1: the base's, else the tokenizer's",
    "model.pad_token_id": "the padding id; -1: the base's, else the tokenizer's EOS",
    "model.init_std": "standard deviation of the initial weights",
    "model.dtype": "compute dtype (float32, bfloat16)", "model.param_dtype": "parameter dtype",
    "model.scan_layers": "the blocks' parameters stacked, one tree per stack (fast compiles of deep models)",
    "model.scan_unroll": "layers per iteration of the loop over a stack; a stack of at most this many runs as "
                         "straight-line code (faster on CPU); 0: straight-line up to 8 layers",
    "model.remat_policy": "rematerialisation in the backward pass: a key of llada_jax.model.REMAT_POLICIES",
    "model.attention": 'attention implementation: "dense", "chunked" (any backend), "cudnn" (GPU) or "splash" (TPU)',
    "model.mlp_chunk": "the MLP over sequence chunks of this many tokens (less memory); 0: whole",
    # mesh
    "mesh.data": "data-parallel devices; -1: the rest", "mesh.fsdp": "devices the parameters are sharded over (FSDP); -1: the rest",
    "mesh.tensor": "tensor-parallel devices; -1: the rest", "mesh.expert": "MoE expert-parallel devices (also data parallel)",
    "mesh.rules": "(logical axis, mesh axes) pairs replacing entries of llada_jax.parallel.sharding.LOGICAL_RULES",
    # optim
    "optim.lr": "peak learning rate", "optim.b1": "AdamW beta1", "optim.b2": "AdamW beta2", "optim.eps": "AdamW epsilon",
    "optim.weight_decay": "AdamW decoupled weight decay", "optim.schedule": '"wsd" (warmup-stable-decay), "cosine" or "constant"',
    "optim.warmup_steps": "linear warmup steps", "optim.decay_steps": "wsd: length of the final linear decay",
    "optim.final_lr_ratio": "lr at the end, as a fraction of the peak",
    "optim.drop_step": "wsd: step of an optional drop of the stable lr; -1: none", "optim.drop_ratio": "wsd: the stable lr after drop_step, as a fraction",
    "optim.clip_norm": "global gradient-norm clipping; 0: none", "optim.grad_accum": "micro-batches per optimizer step",
    # data
    "data.kind": 'the objective (llada_jax.objectives): "pretrain", "sft", "block_diffusion", "block_sft"; "autoregressive" for a causal model (model.causal=True)',
    "data.source": '"stdlib" (embedded corpus), "files", "jsonl" (SFT), "prepared" or "synthetic"',
    "data.task": "synthetic source: a task of llada_jax.data.tasks", "data.task_items": "synthetic task: items per prompt",
    "data.task_values": "synthetic task: distinct values", "data.train_files": 'source "files": comma-separated text files',
    "data.eval_files": 'source "files": held-out text files', "data.train_jsonl": 'source "jsonl": chat JSONL',
    "data.eval_jsonl": 'source "jsonl": held-out chat JSONL', "data.path": 'source "prepared": a folder of python -m llada_jax.prepare_data',
    "data.eval_path": 'source "prepared": the held-out folder', "data.tokenizer": "tokenizer file; empty: the base's, the prepared folder's, or one trained into the workdir",
    "data.max_bytes": "pre-training text to read (tokenizer and data); 0: all", "data.seq_len": "tokens per training row",
    "data.batch_size": "global batch (all processes, all micro-batches)",
    "data.random_length_prob": "fraction of steps with a random length in [1, seq_len]", "data.eps": "minimum mask probability",
    # train
    "train.steps": "optimizer steps (RL: rollout or pair batches)", "train.seed": "random seed", "train.log_every": "steps between metric logs",
    "train.eval_every": "steps between evaluations; 0: none", "train.eval_batches": "held-out batches per evaluation",
    "train.num_samples": "samples printed at each evaluation", "train.sample_prompt_len": "prompt tokens of those samples",
    "train.sample_gen_length": "answer tokens of those samples", "train.sample_steps": "sampling steps of those samples",
    "train.peak_flops": "per-device peak FLOP/s for MFU; 0: measure a matmul at start-up",
    "train.init_from": "a workdir or Hugging Face folder to start from: params, family, shape, special ids, tokenizer",
    "train.block_warmup": 'block kinds: "SIZE:UNTIL_STEP,..." smaller blocks first',
    # lora
    "lora.rank": "LoRA rank; 0: off (full fine-tuning)", "lora.alpha": "LoRA scale numerator (scale alpha / rank)",
    "lora.dropout": "dropout on the adapters' input", "lora.targets": '"all" or a comma-separated subset of q_proj,k_proj,v_proj,attn_out,ff_proj,up_proj,ff_out',
    "lora.base_dtype": "dtype the frozen base is stored in",
    # checkpoint
    "checkpoint.every": "steps between checkpoints; 0: only at the end", "checkpoint.keep": "checkpoints kept",
    "checkpoint.async_save": "save in the background while training goes on",
    # rl
    "rl.algorithm": '"grpo" (diffu-GRPO) or "vrpo"', "rl.init_from": "the SFT workdir: the start and the frozen reference",
    "rl.rewards": "comma-separated names of llada_jax.rl.rewards, summed", "rl.num_generations": "G: rollouts per prompt",
    "rl.num_iterations": "mu: updates per rollout batch", "rl.p_mask_prompt": "probability of masking a prompt token in the log-probability estimate",
    "rl.epsilon": "ratio clipping", "rl.beta": "GRPO: KL coefficient (0: no reference pass); VRPO: the DPO beta",
    "rl.scale_rewards": "divide advantages by the group's std", "rl.sampler_steps": "rollouts: sampling steps",
    "rl.gen_length": "rollouts: answer tokens", "rl.block_length": "rollouts: block length", "rl.temperature": "rollouts: temperature",
    "rl.remasking": "rollouts: remasking rule", "rl.threshold": "rollouts: confidence threshold; 0: off",
    "rl.cache": 'rollouts: "" or "dual" (Fast-dLLM\'s cache)', "rl.pairs": "VRPO: preference pairs JSONL (python -m llada_jax.rl.pairs)",
    "rl.vrpo_n": "VRPO: timesteps per ELBO estimate", "rl.eval_prompts": "held-out prompts of the greedy exact-match evaluation",
}


def lock(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`c`, locked: no field can be added, so a misspelt override (`--config.optim.lrr`)
    is an error instead of a silently unused field. Every configs/*.py returns lock(...)."""
    c.lock()
    return c


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of an experiment file, as `--config=path` loads it."""
    spec = importlib.util.spec_from_file_location("_llada_user_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def experiment_mode(name: str, mode: str) -> bool:
    """True for an experiment config's full run, False for its reduced (CI-sized) one."""
    if mode not in ("full", "reduced"):
        raise ValueError(f"{name} config mode {mode!r}: expected 'full' or 'reduced'")
    return mode == "full"


def describe(config: ml_collections.ConfigDict) -> list[str]:
    """One line per field of `config`: `section.field = value  # meaning` (FIELD_DOCS)."""
    def walk(node, prefix):
        for k in node.keys():
            v = node[k]
            if isinstance(v, ml_collections.ConfigDict):
                yield from walk(v, prefix + k + ".")
            else:
                yield f"{prefix}{k} = {v!r}  # {FIELD_DOCS[prefix + k]}"
    return list(walk(config, ""))
