"""`python -m llada_jax.train --config=FILE --workdir=DIR [--config.x.y=v ...]`.

The loop is `llada_jax.training.loop`; this module only runs its command line, so it
is executed once (no train <-> loop import cycle)."""

from llada_jax.training.loop import run_cli

if __name__ == "__main__":
    run_cli()
