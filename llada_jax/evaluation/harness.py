"""lm-evaluation-harness adapter for LLaDA models (the official `eval_llada.py`, in JAX).

Registers the model `llada_jax` with lm-eval. lm-eval 0.4 has no plugin discovery for
models, so the command line goes through this module, which registers the model and then
runs lm-eval's own CLI with the same arguments:

    python -m llada_jax.evaluation --model llada_jax --tasks arc_easy --batch_size 8 \
        --model_args workdir=DIR,mc_num=128,cfg=0.5,is_check_greedy=False
    python -m llada_jax.evaluation --model llada_jax --model_args pretrained=HF_DIR,gen_length=256,\
steps=256,block_length=32 --tasks gsm8k

workdir: a training (or `llada_jax.import_hf`) workdir: run.json + checkpoints/.
pretrained: a Hugging Face directory (config.json, safetensors, tokenizer files).
Options of the official adapter: mc_num, batch_size, cfg, is_check_greedy (likelihood
tasks); steps, gen_length, block_length, remasking (generation tasks). Also: temperature,
seed, add_bos (prepend BOS to every context, as the published tokenizer does), max_rows
(rows per forward pass when requests are batched).

- `loglikelihood`: the Monte Carlo estimate of `llada_jax.objectives.likelihood` (mc_num
  samples in batches of batch_size, stratified masked counts), batched across requests of
  the same (context, continuation) token lengths and data parallel over the local devices
  (the parameters replicated, each device estimating its share of a chunk's requests; each
  request draws from its own key, so the numbers are those of one device); `is_greedy` by
  greedy one-token-per-step unmasking of the continuation (False when is_check_greedy is off).
- `generate_until`: the serving engine (`llada_jax.serving.Engine`, batch_size slots,
  continuous batching: a request leaves at the block holding its EOS/EoT and the next
  takes its slot; request i samples with seed + i); the text is cut at the first
  EOS/EoT and then at the first stop sequence. Each answer is the one its prompt gets
  alone. The engine's slots are split over the devices when batch_size is a multiple of
  their count (a bidirectional model; else, and for the greedy check, the first device's
  copy of the parameters).

Both show a progress bar on stderr (tqdm: requests done, requests/s) unless lm-eval passes
disable_tqdm.
- `loglikelihood_rolling`: not supported (NotImplementedError, see there).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

import flax.linen as nn
from llada_jax.sampling import sampler
from llada_jax.sampling.params import SamplingParams
from llada_jax.serving.engine import Engine, canvas_length, positions_needed
from llada_jax.objectives.likelihood import mc_nll
from llada_jax.model import build

log = logging.getLogger(__name__)
MODEL_NAME = "llada_jax"
# The model_args LLaDAEvalHarness takes, and the keys lm-eval itself adds (accepted, unused).
MODEL_ARGS = ("workdir", "pretrained", "mc_num", "batch_size", "cfg", "is_check_greedy", "steps", "gen_length",
              "block_length", "remasking", "temperature", "seed", "add_bos", "max_rows")
LM_EVAL_ARGS = ("device", "max_batch_size")


def load_model(workdir: str | None = None, pretrained: str | None = None):
    """(LLaDAConfig, params on the default device, Tokenizer) of a workdir or an HF directory."""
    from llada_jax.data.tokenizer import load_tokenizer

    if (workdir is None) == (pretrained is None):
        raise ValueError("llada_jax: give exactly one of model_args workdir=DIR (training workdir) "
                         "or pretrained=DIR (Hugging Face directory)")
    if workdir is not None:
        from llada_jax.checkpoint.load import load_workdir
        from llada_jax.checkpoint.manager import run_info

        from llada_jax.checkpoint.workdir import tokenizer_path

        tok_path = tokenizer_path(run_info(workdir), workdir)  # checked against its recorded sha256
        if not tok_path:
            raise ValueError(f"workdir={workdir!r}: run.json names no tokenizer; evaluation needs text")
        w = load_workdir(workdir, tokenizer=False)
        config, params = w.config, w.params
        log.info("llada_jax: restored step %d of %s", w.step, workdir)
    else:
        from llada_jax.interop.import_hf import load_pretrained

        config, params = load_pretrained(pretrained)
        tok_path = pretrained
    return config, params, load_tokenizer(tok_path)


def progress(total: int, desc: str, disable: bool = False):
    """A tqdm bar on stderr counting requests, with their rate (requests/s)."""
    if disable or not total:
        return contextlib.nullcontext(_NoBar())
    from tqdm import tqdm

    return tqdm(total=total, desc=f"llada_jax {desc}", unit=" requests", dynamic_ncols=True)


class _NoBar:
    def update(self, n=1):
        pass


def cut_at_stop(text: str, stops) -> str:
    """`text` up to the earliest occurrence of any stop sequence."""
    cut = len(text)
    for s in stops or ():
        if s:
            i = text.find(s)
            if i >= 0:
                cut = min(cut, i)
    return text[:cut]


def _flag(v) -> bool:
    if isinstance(v, str):
        if v.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected a boolean, got {v!r}")
        return v.lower() in ("true", "1")
    return bool(v)


@register_model(MODEL_NAME)
class LLaDAEvalHarness(LM):
    """lm-eval model. Build from model_args (workdir= or pretrained=), or in Python from
    an in-memory `model`, `params` and `tokenizer`. `devices` (Python only; default
    jax.local_devices()): the devices the likelihood requests are split over."""

    def __init__(self, workdir=None, pretrained=None, *, model: nn.Module | None = None, params=None,
                 tokenizer=None, devices=None, mc_num=128, batch_size=32, cfg=0.0, is_check_greedy=True, steps=128,
                 gen_length=128, block_length=128, remasking="low_confidence", temperature=0.0, seed=1234,
                 add_bos=False, max_rows=512, **ignored):
        super().__init__()
        # The options first: a bad one is named before the model is loaded.
        unknown = sorted(k for k, v in ignored.items() if v is not None and k not in LM_EVAL_ARGS)
        if unknown:  # a misspelt option must not silently evaluate with the default
            raise ValueError(f"llada_jax: unknown model_args {', '.join(f'{k}={ignored[k]!r}' for k in unknown)}; "
                             f"expected some of {', '.join(MODEL_ARGS)}")
        if str(batch_size).startswith("auto"):
            raise ValueError("llada_jax: batch_size=auto is not supported; give an integer")
        self.mc_num, self.batch_size = int(mc_num), int(batch_size)
        if self.mc_num < 1 or self.batch_size < 1 or self.mc_num % self.batch_size:
            raise ValueError(f"llada_jax: mc_num={mc_num} must be a positive multiple of batch_size={batch_size}")
        self.cfg, self.is_check_greedy = float(cfg), _flag(is_check_greedy)
        self.steps, self.gen_length, self.block_length = int(steps), int(gen_length), int(block_length)
        for name in ("steps", "gen_length", "block_length"):  # 0 means nothing (the sampler's rule, early)
            if getattr(self, name) < 1:
                raise ValueError(f"llada_jax: model_args {name}={getattr(self, name)}: expected an integer >= 1")
        self.remasking, self.temperature, self.add_bos = remasking, float(temperature), _flag(add_bos)
        self.seed, self.max_rows = int(seed), int(max_rows)
        if model is not None:
            if params is None or tokenizer is None:
                raise ValueError("llada_jax: an in-memory model needs params and tokenizer too")
            self.model, self.tokenizer = model, tokenizer
        else:
            config, params, self.tokenizer = load_model(workdir, pretrained)
            self.model = build(config)
        # Data parallel: a 1-D mesh of the devices; the parameters replicated on each.
        self.mesh = Mesh(np.asarray(list(devices or jax.local_devices())), ("data",))
        self.params = jax.device_put(params, NamedSharding(self.mesh, PartitionSpec()))
        # the first device's replica (a view, no copy) for the engine and the greedy check
        self.params_one = jax.tree_util.tree_map(lambda a: a.addressable_shards[0].data, self.params)
        self.rows = NamedSharding(self.mesh, PartitionSpec("data"))
        self.mask_id = self.model.config.mask_token_id
        self.max_length = self.model.config.max_sequence_length

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict, additional_config=None):
        """model_args (a string, or the dict `lm-eval run` passes) win over lm-eval's own
        --batch_size/--device (the official adapter's batch_size is the Monte Carlo batch,
        a model argument)."""
        args = dict(arg_dict or {})
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**args, **extra)

    # --- tokenization -----------------------------------------------------------------

    @property
    def tokenizer_name(self) -> str:
        return os.path.basename(self.tokenizer.path or "llada_jax")

    def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
        return self.tokenizer.chat_text(chat_history, add_generation_prompt=add_generation_prompt)

    def _encode_context(self, text: str) -> list[int]:
        return ([self.tokenizer.bos_id] if self.add_bos else []) + self.tokenizer.encode(text)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of (context, continuation) as the official adapter splits them: trailing
        spaces of the context move to the continuation, the pair is encoded whole and the
        continuation is what follows the context's tokens. An empty context becomes [EOS];
        a pair longer than the model's maximum loses context tokens from the left."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        whole = self._encode_context(context + continuation)
        ctx = self._encode_context(context)
        cont = whole[len(ctx):]
        if not cont:
            raise ValueError(f"llada_jax: continuation {continuation!r} encodes to no tokens")
        ctx = ctx or [self.tokenizer.eos_id]
        room = self.max_length - len(cont)
        if room < 1:
            raise ValueError(f"llada_jax: continuation of {len(cont)} tokens leaves no room for context "
                             f"in max_sequence_length={self.max_length}")
        return ctx[-room:], cont

    # --- likelihood -------------------------------------------------------------------

    def _groups(self, pairs):
        """Indices of the pairs grouped by (context length, continuation length), cut into
        chunks of at most max_rows // batch_size requests."""
        by_shape = defaultdict(list)
        for i, (ctx, cont) in enumerate(pairs):
            by_shape[(len(ctx), len(cont))].append(i)
        per_chunk = max(1, self.max_rows // self.batch_size)
        for shape, idx in sorted(by_shape.items()):
            for s in range(0, len(idx), per_chunk):
                yield shape, idx[s:s + per_chunk]

    def loglikelihoods(self, pairs, keys, disable_tqdm: bool = True) -> np.ndarray:
        """Monte Carlo log-likelihood estimates of token pairs, request i drawing with keys[i];
        each chunk's requests split over the mesh's devices."""
        out = np.zeros(len(pairs))
        n_dev = self.mesh.size
        with progress(len(pairs), "loglikelihood", disable_tqdm) as bar:
            for (p_len, _), idx in self._groups(pairs):
                # pad the chunk to a power of two (few compiles), at least one request per device,
                # with copies of its first request
                size = max(1 << (len(idx) - 1).bit_length(), n_dev)
                size += -size % n_dev
                pad = idx + [idx[0]] * (size - len(idx))
                seqs = np.asarray([pairs[i][0] + pairs[i][1] for i in pad], np.int32)
                typed = jnp.issubdtype(keys[0].dtype, jax.dtypes.prng_key)  # new-style keys travel as data
                raw = np.stack([np.asarray(jax.random.key_data(keys[i]) if typed else keys[i]) for i in pad])
                ks = jax.device_put(raw, self.rows)
                ks = jax.random.wrap_key_data(ks) if typed else ks
                losses = mc_nll(self.model, self.params, jax.device_put(seqs, self.rows), ks,
                                prompt_len=p_len, batch_size=self.batch_size,
                                num_batches=self.mc_num // self.batch_size, cfg_scale=self.cfg,
                                mask_id=self.mask_id)
                out[idx] = -np.asarray(losses)[:len(idx)]
                bar.update(len(idx))
        return out

    def greedy_matches(self, pairs) -> np.ndarray:
        """Whether greedy one-token-per-step unmasking of each continuation reproduces it."""
        out = np.zeros(len(pairs), bool)
        if not self.is_check_greedy:
            return out
        for (p_len, c_len), idx in self._groups(pairs):
            prompts = np.asarray([pairs[i][0] for i in idx], np.int32)
            targets = np.asarray([pairs[i][1] for i in idx], np.int32)
            gen = sampler.generate(self.model, self.params_one, prompts, steps=c_len, gen_length=c_len,
                                    block_length=c_len, temperature=0.0, cfg_scale=self.cfg,
                                    mask_id=self.mask_id)
            out[idx] = np.all(np.asarray(gen)[:, p_len:] == targets, axis=1)
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        pairs = [self.encode_pair(*r.args[:2]) for r in requests]
        base = jax.random.PRNGKey(self.seed)
        keys = [jax.random.fold_in(base, i) for i in range(len(pairs))]
        ll = self.loglikelihoods(pairs, keys, disable_tqdm)
        greedy = self.greedy_matches(pairs)
        return [(float(a), bool(g)) for a, g in zip(ll, greedy)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "llada_jax: loglikelihood_rolling (perplexity tasks such as wikitext) is not supported for "
            "masked diffusion models: they have no left-to-right factorisation of a text's likelihood, "
            "only an ELBO bound of the likelihood; use multiple-choice or generation tasks")

    # --- generation -------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False):
        prompts = [self._encode_context(r.args[0]) or [self.tokenizer.eos_id] for r in requests]
        until = []
        for r in requests:
            kw = r.args[1] if len(r.args) > 1 and isinstance(r.args[1], dict) else {}
            stops = kw.get("until") or []
            until.append([stops] if isinstance(stops, str) else list(stops))
        block_size = getattr(self.model.config, "block_size", 0)  # block-causal: its grid and block size
        block = block_size or self.block_length
        room = self.max_length - self.gen_length - max(block_size - 1, 0)
        prompts = [p[-room:] for p in prompts]
        base = SamplingParams(gen_length=self.gen_length, block_length=block, steps=self.steps,
                              temperature=self.temperature, cfg_scale=self.cfg, remasking=self.remasking)
        need = sorted({canvas_length(positions_needed(len(p), base, block, bool(block_size)), self.max_length)
                       for p in prompts})
        # data parallel over the mesh where the slots split evenly (a bidirectional model)
        split = not block_size and self.batch_size % self.mesh.size == 0
        engine = Engine(self.model, self.params if split else self.params_one, slots=self.batch_size, buckets=need,
                        block_width=block, guidance=self.cfg > 0, eot_id=self.tokenizer.eot_id,
                        eos_ids={self.tokenizer.eos_id, self.tokenizer.eot_id}, mesh=self.mesh if split else None)
        # Longest first: a bucket's requests run together, so each lane fills before the next.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        done = _run_engine(engine, [prompts[i] for i in order],
                           [base.replace(seed=(self.seed + i) % 2**31) for i in order], disable_tqdm)
        texts = [""] * len(prompts)
        for i, r in zip(order, done):
            texts[i] = cut_at_stop(self.tokenizer.decode(r.tokens), until[i])
        return texts


def _run_engine(engine, prompts, params, disable_tqdm):
    """`engine.generate(prompts, params)` (every request checked first, all queued, stepped
    to completion here), with the progress bar counting the finished requests."""
    for p, q in zip(prompts, params):
        engine.check(p, q)
    engine.max_queue = max(engine.max_queue, len(prompts))
    reqs = [engine.submit(p, q) for p, q in zip(prompts, params)]
    with progress(len(reqs), "generate_until", disable_tqdm) as bar:
        finished = 0
        while finished < len(reqs):
            engine.step()
            now = sum(r.done.is_set() for r in reqs)
            bar.update(now - finished)
            finished = now
    return reqs


def main(argv=None):
    """lm-eval's command line with the `llada_jax` model registered."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    from llada_jax import cli

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    with cli.user_errors():
        cli_evaluate()
