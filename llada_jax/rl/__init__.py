"""Reinforcement learning for masked diffusion LMs: diffu-GRPO (d1) and VRPO (LLaDA 1.5).

- `llada_jax.objectives.grpo` / `.vrpo`: the pure losses and estimators.
- `rewards`: the reward registry; `rollout`: G samples per prompt with the jitted sampler;
  `pairs`: the VRPO preference-pair JSONL (`python -m llada_jax.rl.pairs`
  writes one from a policy's scored samples, `sample_pairs`); `step`: the jitted updates; `loop`: the run
  (checkpoints, resume, SIGTERM, logging, mesh), `python -m llada_jax.rl`.
"""
