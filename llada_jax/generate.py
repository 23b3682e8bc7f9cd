"""Sample from the latest checkpoint of a training workdir.

    python -m llada_jax.generate --workdir=DIR --prompt="def fib(n):" [--gen_length=64 --steps=64 ...]
    python -m llada_jax.generate --workdir=DIR --prompt="x = <mask:6> + 1"      # infill 6 tokens
    python -m llada_jax.generate --workdir=DIR --prompt_ids=5,9,-1,-1,7 --gen_length=0
    python -m llada_jax.generate --workdir=DIR --prompts_jsonl=IN.jsonl --out=OUT.jsonl [--batch_size=8]

The model shape and tokenizer come from DIR/run.json (written by the training run).
`<mask:N>` in --prompt (or -1 in --prompt_ids) stands for N (one) mask tokens, which the
sampler fills in; with --gen_length=0 only those are filled. --chat wraps the prompt in
the chat template of the instruct models.

Batched mode: each line of --prompts_jsonl is {"prompt": TEXT or [ids], optional
SamplingParams fields (gen_length, steps, block_length, temperature, seed, ...)}; the flags
give the defaults (a line's seed defaults to --seed + its index). Every line is checked
first (a bad one is one `error:` line naming its number and field); then all run through
the serving engine (`llada_jax.serving.Engine`, --batch_size slots, continuous batching)
and --out (never overwritten) gets one JSON line per prompt, in order: {"line", "text",
"tokens", "finish_reason"}. Each answer is the one its prompt gets alone.

Calling the module, `llada_jax.generate(model, params, prompt, ...)`, calls the sampler
`llada_jax.sampling.generate`: the public API's `generate` and this command share the
name, and a module attribute cannot be both, so the module forwards the call.
"""

from __future__ import annotations

import os
import re
import sys
import types

import jax
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
    from llada_jax.sampling import sampler

    cfg = model.config
    steps = max(1, gen_length) if steps is None else steps  # 0 is an error (the sampler's), not "default"
    eot = tokenizer.eot_id if tokenizer is not None else cfg.eos_token_id
    if block_length is None:  # 0 is an error (the sampler's), as for steps
        block_length = cfg.block_size or gen_length
    out = sampler.generate(model, params, np.asarray([prompt_ids], np.int32), steps=steps, gen_length=gen_length,
                            block_length=block_length, temperature=temperature,
                            cfg_scale=cfg_scale, remasking=remasking,
                            logits_eos_inf=logits_eos_inf, confidence_eos_eot_inf=confidence_eos_eot_inf,
                            eot_id=eot, threshold=threshold,
                            rng=jax.random.PRNGKey(seed))
    ids = [int(i) for i in np.asarray(out)[0]]
    shown = ids if gen_length == 0 else ids[len(prompt_ids):]
    text = " ".join(map(str, shown)) if tokenizer is None else tokenizer.decode(shown)
    return ids, text


def read_jsonl(path: str, defaults: dict) -> list[tuple[int, object, dict]]:
    """(line number, prompt, SamplingParams fields) of each non-blank line; ValueError
    naming the line and the field otherwise."""
    from llada_jax.data import documents
    from llada_jax.sampling.params import FIELDS

    out = []
    for n, where, d in documents.jsonl_objects(path, lambda n: f"--prompts_jsonl={path!r} line {n}"):
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected an object {{\"prompt\": ...}}, got {type(d).__name__}")
        prompt = d.pop("prompt", None)
        ok = isinstance(prompt, str) and prompt or (isinstance(prompt, list) and prompt and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt))
        if not ok:
            raise ValueError(f"{where}: field 'prompt'={prompt!r}: expected a non-empty string or list of token ids")
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r}: expected 'prompt' or one of {FIELDS}")
        out.append((n, prompt, {**defaults, "seed": (defaults.get("seed", 0) + len(out)) % 2**31, **d}))
    if not out:
        raise ValueError(f"--prompts_jsonl={path!r}: no prompts")
    return out


def generate_jsonl(model, params, tokenizer, path: str, out_path: str, defaults: dict, *, slots: int = 8) -> int:
    """The batched mode (module docstring): returns the number of answers written."""
    import json
    import os

    from llada_jax.sampling.params import SamplingParams
    from llada_jax.serving.engine import Engine, canvas_length, positions_needed

    if os.path.exists(out_path):
        raise ValueError(f"--out={out_path!r} exists; give a new path (it is never overwritten)")
    cfg = model.config
    lines = read_jsonl(path, defaults)
    reqs = []
    for n, prompt, fields in lines:
        where = f"--prompts_jsonl={path!r} line {n}"
        if isinstance(prompt, str):
            if tokenizer is None:
                raise ValueError(f"{where}: field 'prompt' is text but this run has no tokenizer: give token ids")
            prompt = tokenizer.encode(prompt)
        if cfg.block_size and fields.get("block_length") is None:  # a block-causal model: its block size
            fields = {**fields, "block_length": cfg.block_size}
        try:
            reqs.append((prompt, SamplingParams.from_dict(fields)))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    for (n, _, _), (ids, p) in zip(lines, reqs):
        if len(ids) + p.gen_length > cfg.max_sequence_length:
            raise ValueError(f"--prompts_jsonl={path!r} line {n}: field 'prompt': {len(ids)} tokens + gen_length "
                             f"{p.gen_length}, expected <= max_sequence_length={cfg.max_sequence_length}")
    width = max(p.block_length for _, p in reqs)  # the engine's window: the widest block
    need = [min(cfg.max_sequence_length, positions_needed(len(ids), p, width, bool(cfg.block_size))) for ids, p in reqs]
    eot = tokenizer.eot_id if tokenizer is not None else cfg.eos_token_id
    engine = Engine(model, params, slots=slots, block_width=width, eot_id=eot,
                    buckets=sorted({max(width + 1, canvas_length(k, cfg.max_sequence_length)) for k in need}),
                    guidance=any(p.cfg_scale > 0 for _, p in reqs), cache=reqs[0][1].cache)
    for (n, _, _), (ids, p) in zip(lines, reqs):  # every line checked before any work
        try:
            engine.check(ids, p)
        except ValueError as e:
            raise ValueError(f"--prompts_jsonl={path!r} line {n}: {e}") from None
    done = engine.generate([ids for ids, _ in reqs], [p for _, p in reqs])
    with open(out_path, "x") as f:
        for (n, _, _), r in zip(lines, done):
            text = " ".join(map(str, r.tokens)) if tokenizer is None else tokenizer.decode(r.tokens)
            f.write(json.dumps(dict(line=n, text=text, tokens=r.tokens, finish_reason=r.finish_reason)) + "\n")
    return len(done)


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
    flags.DEFINE_string("prompts_jsonl", None, "batched mode: a JSONL file of {\"prompt\": ..., options}")
    flags.DEFINE_string("out", None, "batched mode: the JSONL file of answers (must not exist)")
    flags.DEFINE_integer("batch_size", 8, "batched mode: engine slots (requests run together)")
    flags.mark_flag_as_required("workdir")
    F = flags.FLAGS

    def run(_):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
        if (F.prompts_jsonl is None) != (F.out is None):
            raise ValueError("--prompts_jsonl and --out go together (the batched mode)")
        if F.prompts_jsonl is not None:
            if F.prompt is not None or F.prompt_ids is not None or F.chat:
                raise ValueError("--prompts_jsonl: the prompts come from the file (no --prompt/--prompt_ids/--chat)")
            if os.path.exists(F.out):  # before loading the model
                raise ValueError(f"--out={F.out!r} exists; give a new path (it is never overwritten)")
            defaults = dict(gen_length=F.gen_length, steps=F.steps, block_length=F.block_length,
                            temperature=F.temperature, cfg_scale=F.cfg_scale, remasking=F.remasking,
                            threshold=F.threshold, seed=F.seed, logits_eos_inf=F.logits_eos_inf,
                            confidence_eos_eot_inf=F.confidence_eos_eot_inf)
            read_jsonl(F.prompts_jsonl, defaults)  # a bad file fails before the model loads
            model, params, tok, step = load(F.workdir, F.block_size)
            n = generate_jsonl(model, params, tok, F.prompts_jsonl, F.out, defaults, slots=F.batch_size)
            print(f"# checkpoint step {step}: {n} answers in {F.out}")
            return
        model, params, tok, step = load(F.workdir, F.block_size)
        ids = encode_prompt(F.prompt, F.prompt_ids, tok, model.config.mask_token_id, F.chat)
        holes = sum(i == model.config.mask_token_id for i in ids)
        all_ids, text = sample(model, params, ids, tokenizer=tok, gen_length=F.gen_length,
                               steps=F.steps if F.steps is not None else (F.gen_length or holes),
                               block_length=F.block_length,
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
