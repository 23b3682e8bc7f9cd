"""Sample from the latest checkpoint of a training workdir.

    python -m llada_jax.generate --workdir=DIR --prompt="def fib(n):" [--gen_length=64 --steps=64 ...]
    python -m llada_jax.generate --workdir=DIR --prompt="x = <mask:6> + 1"      # infill 6 tokens
    python -m llada_jax.generate --workdir=DIR --prompt_ids=5,9,-1,-1,7 --gen_length=0

The model shape and tokenizer come from DIR/run.json (written by the training run).
`<mask:N>` in --prompt (or -1 in --prompt_ids) stands for N (one) mask tokens, which the
sampler fills in; with --gen_length=0 only those are filled. --chat wraps the prompt in
the chat template of the instruct models.

Calling the module, `llada_jax.generate(model, params, prompt, ...)`, calls the sampler
`llada_jax.sampling.generate`: the public API's `generate` and this command share the
name, and a module attribute cannot be both, so the module forwards the call.
"""

from __future__ import annotations

import re
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np

_MASK = re.compile(r"<mask:(\d+)>")


def load(workdir: str, block_size: int | None = None):
    """(LLaDA module, params, tokenizer or None, step) from a workdir's latest checkpoint
    (`llada_jax.load_workdir`, on the default device). block_size: sample it as a
    block-causal model with blocks of this size, which it must have been trained (or
    converted) with: ValueError before any checkpoint is read otherwise."""
    from llada_jax.checkpoint import workdir as workdir_lib
    from llada_jax.checkpoint.load import load_workdir
    from llada_jax.model import build

    if block_size is not None:
        trained = workdir_lib.read_run_info(workdir)["model"].get("block_size", 0)
        if trained != block_size:
            how = ("full diffusion (bidirectional); convert it first: python -m llada_jax.train "
                   f"--config.data.kind=block_diffusion --config.model.block_size={block_size} "
                   f"--config.train.init_from={workdir}") if not trained else "another block size"
            raise ValueError(f"--block_size={block_size}: {workdir} was trained with model.block_size={trained}, "
                             f"{how}")
    w = load_workdir(workdir)
    return build(w.config), w.params, w.tokenizer, w.step


def encode_prompt(text: str | None, ids: str | None, tokenizer, mask_id: int, chat: bool = False) -> list[int]:
    """Token ids of the prompt; `<mask:N>` (text) or -1 (ids) become N (one) mask ids."""
    if ids:
        try:
            out = [int(x) for x in ids.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--prompt_ids={ids!r}: expected comma-separated integers (-1 for a mask)") from None
        return [mask_id if i == -1 else i for i in out]
    if text is None:
        raise ValueError("expected --prompt or --prompt_ids")
    if tokenizer is None:
        raise ValueError("--prompt needs a tokenizer; this run has none (synthetic data): use --prompt_ids")
    if chat:
        if _MASK.search(text):
            raise ValueError("--chat with <mask:N> in --prompt: infill is for plain prompts")
        return tokenizer.render_chat([{"role": "user", "content": text}])
    pieces, out = _MASK.split(text), []
    for i, piece in enumerate(pieces):
        if i % 2:
            out += [mask_id] * int(piece)
        elif piece:
            out += tokenizer.encode(piece)
    return out


def sample(model, params, prompt_ids, *, tokenizer=None, gen_length=64, steps=None, block_length=None,
           temperature=0.0, cfg_scale=0.0, remasking="low_confidence", threshold=None, seed=0,
           logits_eos_inf=False, confidence_eos_eot_inf=False):
    """Run the sampler; returns (all ids, the generated or infilled text)."""
    from llada_jax.sampling import sampler as sampling

    cfg = model.config
    steps = steps or max(1, gen_length)
    eot = tokenizer.eot_id if tokenizer is not None else cfg.eos_token_id
    block_length = block_length or cfg.block_size or gen_length
    out = sampling.generate(model, params, np.asarray([prompt_ids], np.int32), steps=steps, gen_length=gen_length,
                            block_length=block_length, temperature=temperature,
                            cfg_scale=cfg_scale, remasking=remasking, mask_id=cfg.mask_token_id,
                            logits_eos_inf=logits_eos_inf, confidence_eos_eot_inf=confidence_eos_eot_inf,
                            eos_id=cfg.eos_token_id, eot_id=eot, threshold=threshold,
                            rng=jax.random.PRNGKey(seed))
    ids = [int(i) for i in np.asarray(out)[0]]
    shown = ids if gen_length == 0 else ids[len(prompt_ids):]
    text = " ".join(map(str, shown)) if tokenizer is None else tokenizer.decode(shown)
    return ids, text


def main(argv=None):
    from absl import flags

    from llada_jax import cli
    from llada_jax.sampling import confidence

    flags.DEFINE_string("workdir", None, "training workdir (its latest checkpoint is used)")
    flags.DEFINE_string("prompt", None, "prompt text; <mask:N> marks N tokens to infill")
    flags.DEFINE_string("prompt_ids", None, "prompt as comma-separated token ids; -1 is a mask")
    flags.DEFINE_bool("chat", False, "wrap the prompt in the chat template")
    flags.DEFINE_integer("gen_length", 64, "tokens to generate after the prompt (0: only infill)")
    flags.DEFINE_integer("steps", None, "sampling steps (default: gen_length, or the number of masks)")
    flags.DEFINE_integer("block_length", None, "semi-autoregressive block length (default: gen_length; "
                         "a block-causal model: its block size)")
    flags.DEFINE_integer("block_size", None, "expect a block-causal model with this block size (error otherwise)")
    flags.DEFINE_float("temperature", 0.0, "Gumbel noise temperature (0: greedy)")
    flags.DEFINE_float("cfg_scale", 0.0, "classifier-free guidance scale")
    flags.DEFINE_enum("remasking", "low_confidence", list(confidence.RULES), "remasking (confidence) rule")
    flags.DEFINE_float("threshold", None, "Fast-dLLM confidence threshold")
    flags.DEFINE_bool("logits_eos_inf", False, "forbid EOS as a prediction")
    flags.DEFINE_bool("confidence_eos_eot_inf", False, "give EOS/EoT zero confidence")
    flags.DEFINE_integer("seed", 0, "sampling seed")
    flags.DEFINE_bool("show_ids", False, "also print the token ids")
    flags.mark_flag_as_required("workdir")
    F = flags.FLAGS

    def run(_):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
        model, params, tok, step = load(F.workdir, F.block_size)
        ids = encode_prompt(F.prompt, F.prompt_ids, tok, model.config.mask_token_id, F.chat)
        holes = sum(i == model.config.mask_token_id for i in ids)
        all_ids, text = sample(model, params, ids, tokenizer=tok, gen_length=F.gen_length,
                               steps=F.steps or (F.gen_length or holes), block_length=F.block_length,
                               temperature=F.temperature, cfg_scale=F.cfg_scale, remasking=F.remasking,
                               threshold=F.threshold, seed=F.seed, logits_eos_inf=F.logits_eos_inf,
                               confidence_eos_eot_inf=F.confidence_eos_eot_inf)
        print(f"# checkpoint step {step}")
        print(text)
        if F.show_ids:
            print("ids:", ",".join(map(str, all_ids)))

    cli.run_absl(run, argv)


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from llada_jax.sampling import generate

        return generate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
