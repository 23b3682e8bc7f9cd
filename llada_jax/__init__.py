"""llada-jax: pre-train, fine-tune, sample from, evaluate and export LLaDA masked diffusion LMs.

The public API (imported on first use, so `import llada_jax` does not import jax):

    build(config) -> the Flax module of config.family (llada_jax.model.families)
    LLaDA, LLaDAConfig             the LLaDA module and the model config of every family
    generate(model, params, prompt, ...)            the sampler (llada_jax.sampling.generate)
    log_likelihood(model, params, prompt, answer, rng=...)   Monte Carlo log p(answer | prompt)
    load_pretrained(hf_dir) -> (config, params)     a Hugging Face directory (llada_jax.interop)
    save_pretrained(config, params, hf_dir)         one, with our modeling file and the tokenizer
    load_workdir(workdir, mesh=None) -> Workdir(config, params, step, tokenizer, info)

`llada_jax.generate` is also the module of `python -m llada_jax.generate`; calling it
calls the sampler (see that module), so both uses of the name work.
"""

import importlib

_API = {
    "build": "llada_jax.model",
    "LLaDA": "llada_jax.model",
    "LLaDAConfig": "llada_jax.model",
    "log_likelihood": "llada_jax.objectives.likelihood",
    "load_pretrained": "llada_jax.interop.import_hf",
    "save_pretrained": "llada_jax.interop.export",
    "load_workdir": "llada_jax.checkpoint.load",
}
__all__ = sorted([*_API, "generate"])


def __getattr__(name):
    if name == "generate":  # the CLI module, callable as the sampler
        return importlib.import_module("llada_jax.generate")
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'llada_jax' has no attribute {name!r}")
