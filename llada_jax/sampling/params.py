"""`SamplingParams`: the sampler's options as one frozen, serialisable value.

Every entry point reads its options from here: `generate(..., sampling=SamplingParams(...))`,
`python -m llada_jax.generate`, the serving engine and server (`llada_jax.serving`), the
lm-eval adapter and the RL rollouts. Construction checks every field that does not depend
on a model or a prompt (ValueError naming the field, its value and what was expected);
`generate` and the engine add the checks that do (vocabulary, max_sequence_length).

    p = SamplingParams(gen_length=64, steps=64, block_length=32, temperature=0.7, seed=1)
    SamplingParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
"""

from __future__ import annotations

import dataclasses
import json

from llada_jax import validation
from llada_jax.sampling import confidence, eos_stop

REMASKING = tuple(confidence.RULES)
CACHES = (None, "prefix", "dual")
WHERE = "SamplingParams"


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Options of one reverse process (semantics: `llada_jax.sampling.generate`).

    gen_length: answer tokens; block_length: semi-autoregressive block (a divisor of
    gen_length); steps: model calls in all (a multiple of the number of blocks, <=
    gen_length + masks in the prompt); temperature: Gumbel noise (0: greedy); cfg_scale: classifier-free
    guidance (0: off); remasking: confidence rule; threshold: Fast-dLLM's confidence
    threshold (None: off); top_k (0: off) and top_p (1: off): the token draw keeps the k
    most likely tokens / the smallest set of probability >= p; seed: the request's own
    random stream (the engine's per-row RNG; `generate` takes its batch `rng`);
    logits_eos_inf / confidence_eos_eot_inf: the official EOS rules; cache: Fast-dLLM's
    approximate KV cache (None, "prefix", "dual"); eos_early_stop: the end-of-answer rule.
    """

    gen_length: int = 128
    steps: int | None = None  # default: gen_length (one token per call)
    block_length: int | None = None  # default: gen_length (one block)
    temperature: float = 0.0
    cfg_scale: float = 0.0
    remasking: str = "low_confidence"
    threshold: float | None = None
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
    cache: str | None = None
    eos_early_stop: str | None = None

    def __post_init__(self):
        def bad(name, value, expected):
            validation.bad(WHERE, name, value, expected)

        gen = validation.integer(WHERE, "gen_length", self.gen_length, minimum=0)
        block = gen if self.block_length is None else validation.integer(WHERE, "block_length", self.block_length,
                                                                           minimum=1)
        if gen and gen % block:
            bad("block_length", block, f"a positive divisor of gen_length={gen}")
        steps = self.steps
        if steps is not None or gen:
            steps = validation.integer(WHERE, "steps", gen if steps is None else steps, minimum=1)
        blocks = gen // block if gen else 1
        if steps is not None and steps % blocks:
            bad("steps", steps, f"a positive multiple of the number of blocks ({blocks})")
        for name in ("temperature", "cfg_scale"):
            object.__setattr__(self, name, validation.number(WHERE, name, getattr(self, name), minimum=0))
        if self.remasking not in REMASKING:
            bad("remasking", self.remasking, f"one of {REMASKING}")
        if self.threshold is not None:
            t = validation.number(WHERE, "threshold", self.threshold)
            if not 0 < t <= 1:
                bad("threshold", t, "None or in (0, 1]")
            object.__setattr__(self, "threshold", t)
        object.__setattr__(self, "top_k", validation.integer(WHERE, "top_k", self.top_k, minimum=0))
        p = validation.number(WHERE, "top_p", self.top_p)
        if not 0 < p <= 1:
            bad("top_p", p, "in (0, 1] (1: off)")
        object.__setattr__(self, "top_p", p)
        object.__setattr__(self, "seed", validation.integer(WHERE, "seed", self.seed, minimum=0, maximum=2**31 - 1))
        for name in ("logits_eos_inf", "confidence_eos_eot_inf"):
            if not isinstance(getattr(self, name), bool):
                bad(name, getattr(self, name), "a bool")
        if self.cache not in CACHES:
            bad("cache", self.cache, f"one of {CACHES}")
        if self.eos_early_stop not in eos_stop.EOS_EARLY_STOP:
            bad("eos_early_stop", self.eos_early_stop, f"one of {eos_stop.EOS_EARLY_STOP}")
        object.__setattr__(self, "gen_length", gen)
        object.__setattr__(self, "block_length", block if gen else self.block_length)
        object.__setattr__(self, "steps", steps)

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length if self.gen_length else 1

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks

    def replace(self, **changes) -> "SamplingParams":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingParams":
        """From a dict (e.g. parsed JSON); unknown keys are a ValueError naming them."""
        if not isinstance(d, dict):
            validation.bad(WHERE, "options", d, "a dict of SamplingParams fields")
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            validation.bad(WHERE, unknown[0], d[unknown[0]], f"one of the fields {FIELDS}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "SamplingParams":
        return cls.from_dict(json.loads(text))

    def generate_kwargs(self) -> dict:
        """The keyword arguments of `llada_jax.sampling.generate` (all but seed/top-k/p,
        which `generate` takes as `sampling=`)."""
        d = self.to_dict()
        for k in ("seed", "top_k", "top_p"):
            d.pop(k)
        return d


FIELDS = tuple(f.name for f in dataclasses.fields(SamplingParams))
