"""Sample from the latest checkpoint of a training workdir (the command line is
`llada_jax.commands.generate`, `llada-generate`).

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


def load(workdir: str):
    """(LLaDA module, params, tokenizer or None, step) from a workdir's latest checkpoint
    (`llada_jax.load_workdir`, on the default device)."""
    from llada_jax.checkpoint.load import load_workdir
    from llada_jax.model import LLaDA

    w = load_workdir(workdir)
    return LLaDA(w.config), w.params, w.tokenizer, w.step


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
    from llada_jax.sampling import sampler

    cfg = model.config
    steps = steps or max(1, gen_length)
    eot = tokenizer.eot_id if tokenizer is not None else cfg.eos_token_id
    out = sampler.generate(model, params, np.asarray([prompt_ids], np.int32), steps=steps, gen_length=gen_length,
                            block_length=block_length or gen_length, temperature=temperature,
                            cfg_scale=cfg_scale, remasking=remasking,
                            logits_eos_inf=logits_eos_inf, confidence_eos_eot_inf=confidence_eos_eot_inf,
                            eot_id=eot, threshold=threshold,
                            rng=jax.random.PRNGKey(seed))
    ids = [int(i) for i in np.asarray(out)[0]]
    shown = ids if gen_length == 0 else ids[len(prompt_ids):]
    text = " ".join(map(str, shown)) if tokenizer is None else tokenizer.decode(shown)
    return ids, text


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from llada_jax.sampling import generate

        return generate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":  # `python -m llada_jax.generate`: run the command module (no import cycle)
    import runpy

    runpy.run_module("llada_jax.commands.generate", run_name="__main__")
