"""The schema and shared defaults of the experiment configs in configs/ (big_vision style).

Every experiment file's `get_config()` starts from `base_config()`, changes what it
needs and returns the locked `ConfigDict`: a command-line override of a field that does
not exist (`--config.optim.lrr=1`) is then an error naming that field. `MEANINGS` says
what each field means (`describe` lists them with their defaults: `--list_config_fields`
of every config command); the rules about the values are `llada_jax.config.rules`.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # Model shape (llada_jax.model.LLaDAConfig fields; Hugging Face names).
    c.model = ml_collections.ConfigDict(dict(
        d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=256,
        vocab_size=512, embedding_size=512, max_sequence_length=512,
        rope_theta=10000.0, rms_norm_eps=1e-5,
        # -1: taken from the tokenizer (mask, end-of-text); set for synthetic data.
        mask_token_id=-1, eos_token_id=-1, pad_token_id=-1,
        weight_tying=False, init_std=0.02,
        dtype="float32", param_dtype="float32", scan_layers=True, remat_policy="none",
        attention="dense",  # "dense", "chunked" (any backend), "cudnn" (GPU) or "splash" (TPU)
        mlp_chunk=0,  # the MLP over sequence chunks of this many tokens (less memory); 0: whole
    ))

    # Device mesh (data, fsdp, tensor); one axis may be -1: the rest of the devices.
    # rules: (logical axis, mesh axes) pairs replacing those entries of the default table
    # (llada_jax.parallel.sharding.LOGICAL_RULES), e.g. (("embed", None),) stops FSDP.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, rules=()))

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
        kind="pretrain",  # "pretrain" or "sft"
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


def sibling(config_file: str, name: str) -> ml_collections.ConfigDict:
    """An unlocked copy of `get_config()` of the experiment file `name` in the directory of
    `config_file` (a config's own `__file__`): configs build on each other by path, so they
    load from any working directory."""
    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name)
    return load_config_file(path).copy_and_resolve_references()


def describe(config: ml_collections.ConfigDict | None = None) -> str:
    """One line per field of `config` (default: base_config()): `section.field = value  # meaning`."""
    config = base_config() if config is None else config
    lines = []
    for section, fields in config.items():
        for name, value in fields.items():
            meaning = MEANINGS.get(section, {}).get(name, "")
            lines.append(f"{section}.{name} = {value!r}" + (f"  # {meaning}" if meaning else ""))
    return "\n".join(lines)


def experiment_mode(name: str, mode: str) -> bool:
    """True for an experiment config's full run, False for its reduced (CI-sized) one."""
    if mode not in ("full", "reduced"):
        raise ValueError(f"{name} config mode {mode!r}: expected 'full' or 'reduced'")
    return mode == "full"


# What each field means, one line a field ("section.field: meaning"; the defaults are
# base_config()'s); tests/configs_test.py checks that every field of base_config() has one.
_MEANINGS = """
model.d_model: width of the residual stream
model.n_heads: attention heads
model.n_kv_heads: key/value heads (grouped-query attention; n_heads for multi-head)
model.n_layers: Transformer blocks
model.mlp_hidden_size: hidden width of the SwiGLU MLP
model.vocab_size: tokens the model predicts (>= the tokenizer's)
model.embedding_size: rows of the embedding table (>= vocab_size; padded for speed)
model.max_sequence_length: longest sequence (RoPE tables)
model.rope_theta: RoPE base frequency
model.rms_norm_eps: RMSNorm epsilon
model.mask_token_id: the mask token's id, the mask_id of the objectives and the sampler; -1: the tokenizer's
model.eos_token_id: end-of-text id; -1: the tokenizer's
model.pad_token_id: padding id; -1: the tokenizer's EOS
model.weight_tying: share the embedding table with the output head
model.init_std: std of the initial weights
model.dtype: compute dtype (float32, bfloat16, float16)
model.param_dtype: storage dtype of the parameters
model.scan_layers: scan over the blocks (one compiled block)
model.remat_policy: rematerialisation: none, full, dots or dots_no_batch
model.attention: attention kernel: dense, chunked, cudnn (GPU) or splash (TPU)
model.mlp_chunk: MLP over sequence chunks of this many tokens (less memory); 0: whole
mesh.data: data-parallel mesh axis size (-1: the rest of the devices)
mesh.fsdp: fully sharded data-parallel axis size (-1: the rest)
mesh.tensor: tensor-parallel axis size (-1: the rest)
mesh.rules: (logical axis, mesh axes) pairs replacing entries of parallel.sharding.LOGICAL_RULES
optim.lr: peak learning rate
optim.b1: AdamW beta1
optim.b2: AdamW beta2
optim.eps: AdamW epsilon
optim.weight_decay: AdamW weight decay (matrices only)
optim.schedule: wsd (warmup-stable-decay), cosine or constant
optim.warmup_steps: steps of linear warmup
optim.decay_steps: wsd: steps of the final linear decay
optim.final_lr_ratio: lr at the end, as a fraction of the peak
optim.drop_step: wsd: step of a drop of the stable lr (-1: none)
optim.drop_ratio: wsd: the stable lr's factor after drop_step
optim.clip_norm: global gradient-norm clipping (0: none)
optim.grad_accum: micro-batches per optimizer step
data.kind: objective of a training run: a mask-predictor objective of llada_jax.objectives (pretrain, sft)
data.source: stdlib (embedded corpus), files, jsonl (SFT), prepared or synthetic
data.task: synthetic source: a task of llada_jax.data.tasks (arith, sort)
data.task_items: sort task: list length
data.task_values: synthetic task: values per token
data.train_files: source files: comma-separated text files
data.eval_files: source files: held-out text files
data.train_jsonl: source jsonl: chat JSONL for SFT
data.eval_jsonl: source jsonl: held-out chat JSONL
data.path: source prepared: a directory of `prepare_data`
data.eval_path: source prepared: the held-out one
data.tokenizer: tokenizer path; empty: train one into the workdir (stdlib, files)
data.max_bytes: pre-training text to read (tokenizer and data); 0: all
data.seq_len: tokens per row
data.batch_size: global batch: rows over all processes and micro-batches
data.random_length_prob: fraction of steps with a random length in [1, seq_len]
data.eps: minimum mask probability of the forward process
train.steps: optimizer steps of the run (RL: rollout or pair batches)
train.seed: seed of the init, data and noise
train.log_every: steps between logged metrics
train.eval_every: steps between evaluations (0: none)
train.eval_batches: held-out batches per evaluation (0: none)
train.num_samples: samples generated per evaluation
train.sample_prompt_len: prompt tokens of a sample
train.sample_gen_length: tokens a sample generates
train.sample_steps: sampler steps of a sample
train.peak_flops: per-device peak FLOP/s for MFU; 0: measured
train.init_from: a workdir or checkpoint to take the params from (SFT; LoRA's base)
lora.rank: LoRA rank (0: off)
lora.alpha: LoRA scale numerator (update scale alpha / rank)
lora.dropout: dropout on the adapters' input
lora.targets: all, or comma-separated projections to adapt
lora.base_dtype: storage dtype of the frozen base
checkpoint.every: steps between checkpoints (0: only at the end)
checkpoint.keep: checkpoints kept
checkpoint.async_save: save in the background
rl.algorithm: an RL objective of llada_jax.objectives (grpo, vrpo)
rl.init_from: the SFT workdir: the start and the frozen reference (LoRA: its base)
rl.rewards: comma-separated rewards of llada_jax.rl.rewards, summed
rl.num_generations: GRPO: rollouts per prompt
rl.num_iterations: GRPO: optimizer updates per rollout batch (mu)
rl.p_mask_prompt: GRPO: probability of masking a prompt token in the log-prob estimate
rl.epsilon: GRPO: ratio clipping
rl.beta: GRPO: k3 KL coefficient; VRPO: the DPO beta
rl.scale_rewards: GRPO: divide advantages by the group's std
rl.sampler_steps: rollouts: sampler steps
rl.gen_length: rollouts: tokens generated
rl.block_length: rollouts: semi-autoregressive block length
rl.temperature: rollouts: Gumbel noise temperature
rl.remasking: rollouts: confidence rule
rl.threshold: rollouts: Fast-dLLM confidence threshold (0: off)
rl.cache: rollouts: KV cache ("": none)
rl.pairs: VRPO: preference pairs JSONL
rl.vrpo_n: VRPO: timesteps per ELBO estimate
rl.eval_prompts: held-out prompts for the exact-match accuracy
"""


def _by_section(text: str) -> dict:
    out = {}
    for line in text.strip().splitlines():
        field, meaning = line.split(": ", 1)
        section, name = field.split(".")
        out.setdefault(section, {})[name] = meaning
    return out


MEANINGS = _by_section(_MEANINGS)  # {section: {field: meaning}}
