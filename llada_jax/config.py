"""The schema and shared defaults of the experiment configs in configs/ (big_vision style).

Every experiment file's `get_config()` starts from `base_config()`, changes what it
needs and returns the locked `ConfigDict`: a command-line override of a field that does
not exist (`--config.optim.lrr=1`) is then an error naming that field.
"""

from __future__ import annotations

import importlib.util

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # Model shape (llada_jax.model.LLaDAConfig fields; Hugging Face names).
    c.model = ml_collections.ConfigDict(dict(
        family="llada",  # llada_jax.model.families: what llada_jax.build makes of this config
        d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=256,
        vocab_size=512, embedding_size=512, max_sequence_length=512,
        rope_theta=10000.0, rms_norm_eps=1e-5,
        # -1: taken from the tokenizer (mask, end-of-text); set for synthetic data.
        mask_token_id=-1, eos_token_id=-1, pad_token_id=-1,
        weight_tying=False, init_std=0.02,
        dtype="float32", param_dtype="float32", scan_layers=True, remat_policy="none",
        attention="dense",  # "dense", "chunked" (any backend), "cudnn" (GPU) or "splash" (TPU)
        mlp_chunk=0,  # the MLP over sequence chunks of this many tokens (less memory); 0: whole
        # sparse MoE MLP (llada_jax.model.moe.MoEConfig; its docstring has each field); 0 experts: dense
        moe=ml_collections.ConfigDict(dict(
            num_experts=0, num_experts_per_tok=2, expert_hidden_size=0, shared_hidden_size=0,
            score_function="softmax", expert_bias="none", n_group=1, topk_group=1, norm_topk_prob=False,
            routed_scaling_factor=1.0, first_k_dense=0, load_balance_weight=0.01, z_loss_weight=0.001,
            dispatch="ragged")),
        # Architecture knobs of the other families (import_hf prints them; LLaDA's defaults here).
        qkv_bias=False, qk_norm=False, attention_head_dim=0, partial_rotary_factor=1.0,
        logit_alignment="same",  # "shifted": the logit at i predicts token i + 1 (Dream, AR checkpoints)
        causal=False, mlp="swiglu",
        block_size=0,  # > 0: a block-causal model (block diffusion, `data.kind="block_diffusion"`); 0: bidirectional
        # RoPE rescaling (llada_jax.model.rope.RopeScaling): "llama3" for Llama 3.1+ checkpoints
        rope_scaling=ml_collections.ConfigDict(dict(
            rope_type="default", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=8192)),
    ))

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
