"""The schema and shared defaults of the experiment configs in configs/ (big_vision style).

Every experiment file's `get_config()` starts from `base_config()`, changes what it
needs and returns the locked `ConfigDict`: a command-line override of a field that does
not exist (`--config.optim.lrr=1`) is then an error naming that field.
"""

from __future__ import annotations

import importlib.util

import copy

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
    family="llada",  # llada_jax.model.families: what llada_jax.build makes of this config
    d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=256,
    vocab_size=512, max_sequence_length=512, rope_theta=10000.0, rms_norm_eps=1e-5, weight_tying=False,
    # Architecture knobs of the other families (LLaDA's values here).
    qkv_bias=False, qk_norm=False, attention_head_dim=0, partial_rotary_factor=1.0,
    logit_alignment="same",  # "shifted": the logit at i predicts token i + 1 (Dream, AR checkpoints)
    causal=False, mlp="swiglu",
    block_size=0,  # > 0: a block-causal model (block diffusion, `data.kind="block_diffusion"`); 0: bidirectional
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
    kind = type(default.get(leaf, 0))
    node[leaf] = value if value is None or kind is bool or kind is str else kind(value)


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
        embedding_size=config_dict.placeholder(int),  # unset: vocab_size
        # -1: the base's (train.init_from), else taken from the tokenizer (mask, end-of-text); set for synthetic data.
        mask_token_id=-1, eos_token_id=-1, pad_token_id=-1,
        init_std=0.02,
        dtype="float32", param_dtype="float32", scan_layers=True, remat_policy="none",
        attention="dense",  # "dense", "chunked" (any backend), "cudnn" (GPU) or "splash" (TPU)
        mlp_chunk=0,  # the MLP over sequence chunks of this many tokens (less memory); 0: whole
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
        schedule="cosine",  # "wsd" (warmup-stable-decay), "cosine" or "constant"
        warmup_steps=100,
        decay_steps=0,  # wsd: length of the final linear decay
        final_lr_ratio=0.1,  # lr at the end, as a fraction of the peak
        drop_step=-1, drop_ratio=1.0,  # wsd: optional step drop of the stable lr (LLaDA-8B: 0.25)
        clip_norm=1.0,  # 0: no clipping
        grad_accum=1,  # micro-batches per optimizer step
    ))

    c.data = ml_collections.ConfigDict(dict(
        kind="pretrain",  # an objective of llada_jax.objectives.training_kinds(): "pretrain", "sft", "block_diffusion", "block_sft"
        source="stdlib",  # "stdlib" (embedded corpus), "files", "jsonl" (SFT), "prepared" or "synthetic"
        task="arith",  # synthetic source: a task of llada_jax.data.tasks ("arith" or "sort")
        task_items=8, task_values=64,  # the sort task's list length; values per token
        train_files="", eval_files="",  # comma-separated text files (source "files")
        train_jsonl="", eval_jsonl="",  # chat JSONL (source "jsonl")
        path="", eval_path="",  # directories of `python -m llada_jax.prepare_data` (source "prepared")
        tokenizer="",  # tokenizer path; empty: train one into the workdir (stdlib/files)
        max_bytes=0,  # pre-training text to read (tokenizer and data); 0: all of it
        seq_len=128,
        batch_size=16,  # global batch (all processes, all micro-batches)
        random_length_prob=0.01,  # fraction of steps with a random length in [1, seq_len]
        eps=1e-3,  # minimum mask probability
    ))

    c.train = ml_collections.ConfigDict(dict(
        steps=1000, seed=0, log_every=50,
        eval_every=500, eval_batches=4,  # 0: no evaluation
        num_samples=2, sample_prompt_len=16, sample_gen_length=32, sample_steps=32,
        peak_flops=0.0,  # per-device peak FLOP/s for MFU; 0: measure a matmul at start-up
        init_from="",  # a workdir or checkpoint directory to take the params from (SFT)
        block_warmup="",  # block kinds: "SIZE:UNTIL_STEP,..." smaller blocks first (conversion from init_from)
    ))

    # LoRA fine-tuning (llada_jax.model.adapters.lora): rank 0 is off. With rank > 0 the base model comes
    # from train.init_from, frozen and stored as base_dtype; the adapters and their optimizer
    # state are float32 and are all a checkpoint holds (the base is referenced, see the README).
    c.lora = ml_collections.ConfigDict(dict(
        rank=0, alpha=16.0, dropout=0.0,
        targets="all",  # "all" or a comma-separated subset of q_proj,k_proj,v_proj,attn_out,ff_proj,up_proj,ff_out
        base_dtype="bfloat16",
    ))

    c.checkpoint = ml_collections.ConfigDict(dict(every=500, keep=3, async_save=True))

    # Reinforcement learning (`python -m llada_jax.rl`, llada_jax.rl): diffu-GRPO (d1) or VRPO
    # (LLaDA 1.5) from the params of init_from; train.steps counts rollout (or pair) batches of
    # data.batch_size prompts (pairs), optim.* is the optimizer. Unused by `llada_jax.train`.
    c.rl = ml_collections.ConfigDict(dict(
        algorithm="grpo",  # "grpo" or "vrpo"
        init_from="",  # the SFT workdir: the start, and the frozen reference (LoRA: its base)
        rewards="sort_exact",  # comma-separated names of llada_jax.rl.rewards, summed
        num_generations=8,  # G rollouts per prompt
        num_iterations=2,  # mu: optimizer updates per rollout batch (d1: 12)
        p_mask_prompt=0.15,  # d1's prompt masking in the log-probability estimate
        epsilon=0.2,  # ratio clipping (d1: 0.5)
        beta=0.04,  # GRPO: k3 KL coefficient (0: no reference pass); VRPO: the DPO beta
        scale_rewards=False,  # divide advantages by the group's std (d1's flag)
        # rollouts: llada_jax.sampling.generate options (threshold 0: off; cache "": none)
        sampler_steps=8, gen_length=8, block_length=8, temperature=1.0, remasking="low_confidence",
        threshold=0.0, cache="",
        pairs="",  # VRPO: preference pairs JSONL (llada_jax.rl.pairs)
        vrpo_n=8,  # VRPO: timesteps per ELBO estimate, one mask each
        eval_prompts=256,  # held-out prompts for the exact-match accuracy (greedy), at train.eval_every
    ))
    return c


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
