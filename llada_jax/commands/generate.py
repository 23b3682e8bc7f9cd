"""Sample from the latest checkpoint of a training workdir (`llada_jax.generate`):

    llada-generate --workdir=DIR --prompt="def fib(n):" [--gen_length=64 --steps=64 ...]
    llada-generate --workdir=DIR --prompt="x = <mask:6> + 1"      # infill 6 tokens
    llada-generate --workdir=DIR --prompt_ids=5,9,-1,-1,7 --gen_length=0
    python -m llada_jax.generate ...   (the same command)"""

from __future__ import annotations

from llada_jax.commands import flags as flag_lib


def define(fv):
    from absl import flags

    from llada_jax.sampling import confidence

    kw = dict(flag_values=fv)
    flags.DEFINE_string("workdir", None, "training workdir (its latest checkpoint is used)", **kw)
    flags.DEFINE_string("prompt", None, "prompt text; <mask:N> marks N tokens to infill", **kw)
    flags.DEFINE_string("prompt_ids", None, "prompt as comma-separated token ids; -1 is a mask", **kw)
    flags.DEFINE_bool("chat", False, "wrap the prompt in the chat template", **kw)
    flags.DEFINE_integer("gen_length", 64, "tokens to generate after the prompt (0: only infill)", **kw)
    flags.DEFINE_integer("steps", None, "sampling steps (default: gen_length, or the number of masks)", **kw)
    flags.DEFINE_integer("block_length", None, "semi-autoregressive block length (default: gen_length)", **kw)
    flags.DEFINE_float("temperature", 0.0, "Gumbel noise temperature (0: greedy)", **kw)
    flags.DEFINE_float("cfg_scale", 0.0, "classifier-free guidance scale", **kw)
    flags.DEFINE_enum("remasking", "low_confidence", list(confidence.RULES), "remasking (confidence) rule", **kw)
    flags.DEFINE_float("threshold", None, "Fast-dLLM confidence threshold", **kw)
    flags.DEFINE_bool("logits_eos_inf", False, "forbid EOS as a prediction", **kw)
    flags.DEFINE_bool("confidence_eos_eot_inf", False, "give EOS/EoT zero confidence", **kw)
    flags.DEFINE_integer("seed", 0, "sampling seed", **kw)
    flags.DEFINE_bool("show_ids", False, "also print the token ids", **kw)
    return ("workdir",)


def main(argv=None):
    from llada_jax import generate as gen

    with flag_lib.running(argv, define, doc=__doc__) as F:
        model, params, tok, step = gen.load(F.workdir)
        mask_id = model.config.mask_token_id
        ids = gen.encode_prompt(F.prompt, F.prompt_ids, tok, mask_id, F.chat)
        holes = sum(i == mask_id for i in ids)
        all_ids, text = gen.sample(model, params, ids, tokenizer=tok, gen_length=F.gen_length,
                                   steps=F.steps or (F.gen_length or holes), block_length=F.block_length,
                                   temperature=F.temperature, cfg_scale=F.cfg_scale, remasking=F.remasking,
                                   threshold=F.threshold, seed=F.seed, logits_eos_inf=F.logits_eos_inf,
                                   confidence_eos_eot_inf=F.confidence_eos_eot_inf)
    print(f"# checkpoint step {step}")
    print(text)
    if F.show_ids:
        print("ids:", ",".join(map(str, all_ids)))


if __name__ == "__main__":
    main()
