"""Serve a model over an OpenAI-compatible HTTP API (FastAPI + uvicorn), with continuous
batching (`llada_jax.serving`).

    python -m llada_jax.serve --workdir=DIR [--host=127.0.0.1 --port=8000 --slots=8]
    python -m llada_jax.serve --hf=HF_DIR --buckets=256,512 --block_width=32 --cfg

    curl localhost:8000/v1/completions -d '{"model": "llada", "prompt": "2+2=", "max_tokens": 8}'

Every bucket's program is compiled before the port opens, so a running server compiles
nothing. SIGTERM (or Ctrl-C): the port closes, running requests finish (at most --grace
seconds), the process exits 0. Request fields and errors: llada_jax.serving.protocol.
"""

from __future__ import annotations


def load(workdir: str | None, hf: str | None):
    """(model, params, tokenizer or None, name) of a workdir's latest checkpoint or an HF directory."""
    import os

    if (workdir is None) == (hf is None):
        raise ValueError("expected exactly one of --workdir=DIR or --hf=DIR")
    if workdir is not None:
        from llada_jax.generate import load as load_workdir

        model, params, tok, _ = load_workdir(workdir)
        return model, params, tok, os.path.basename(os.path.normpath(workdir))
    from llada_jax.data.tokenizer import load_tokenizer
    from llada_jax.interop.import_hf import load_pretrained
    from llada_jax.model import build

    config, params = load_pretrained(hf)
    try:
        tok = load_tokenizer(hf)
    except (FileNotFoundError, ValueError):
        tok = None
    return build(config), params, tok, os.path.basename(os.path.normpath(hf))


def main(argv=None):
    from absl import flags

    from llada_jax import cli

    flags.DEFINE_string("workdir", None, "training workdir (its latest checkpoint)")
    flags.DEFINE_string("hf", None, "Hugging Face directory (config.json, safetensors, tokenizer)")
    flags.DEFINE_string("host", "127.0.0.1", "address to listen on")
    flags.DEFINE_integer("port", 8000, "port to listen on")
    flags.DEFINE_integer("slots", 8, "rows of the batch per bucket")
    flags.DEFINE_list("buckets", None, "canvas lengths (prompt + answer), default: max_sequence_length")
    flags.DEFINE_integer("block_width", 32, "the widest block_length a request may use")
    flags.DEFINE_integer("max_queue", 256, "queued requests before 429")
    flags.DEFINE_integer("max_tokens", 256, "the largest max_tokens a request may ask for")
    flags.DEFINE_integer("default_max_tokens", 16, "max_tokens of a request that gives none")
    flags.DEFINE_float("request_timeout", 600.0, "seconds before a request is dropped (504)")
    flags.DEFINE_float("grace", 30.0, "seconds running requests get to finish after SIGTERM")
    flags.DEFINE_bool("cfg", False, "carry cfg's unconditional copy (doubles the batch), so requests may set cfg")
    flags.DEFINE_enum("cache", None, ["dual"], "Fast-dLLM's approximate dual KV cache")
    flags.DEFINE_string("model_name", None, "the model id of /v1/models (default: the folder's name)")
    F = flags.FLAGS

    def run(_):
        import logging
        import signal
        import sys

        import uvicorn

        from llada_jax.serving.engine import Engine
        from llada_jax.serving.server import create_app

        model, params, tok, name = load(F.workdir, F.hf)
        buckets = [int(b) for b in F.buckets] if F.buckets else None
        width = model.config.block_size or F.block_width  # a block-causal model: its block size
        engine = Engine(model, params, slots=F.slots, buckets=buckets, block_width=width,
                        max_queue=F.max_queue, guidance=F.cfg, cache=F.cache,
                        eot_id=None if tok is None else tok.eot_id)
        if not 1 <= F.default_max_tokens <= F.max_tokens:
            raise ValueError(f"--default_max_tokens={F.default_max_tokens}: expected in [1, --max_tokens]")
        engine.warm_up()
        app = create_app(engine, tok, model_name=F.model_name or name, max_tokens=F.max_tokens,
                         default_max_tokens=F.default_max_tokens, request_timeout=F.request_timeout)
        print(f"serving {F.model_name or name} on http://{F.host}:{F.port} "
              f"({engine.slots} slots x buckets {list(engine.buckets)})", file=sys.stderr, flush=True)
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
        # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handler that was
        # there before it: a no-op one makes a drained shutdown exit 0.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        uvicorn.run(app, host=F.host, port=F.port, log_level="warning", timeout_graceful_shutdown=F.grace)
        print("drained, exiting", file=sys.stderr, flush=True)

    cli.run_absl(run, argv)


if __name__ == "__main__":
    main()
