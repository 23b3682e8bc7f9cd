"""`python -m llada_jax.config [configs/x.py]` (`llada-config`): every config field, its value
and meaning. The command lives here, not in `schema`, so the schema never imports the CLI
helpers (which import the schema)."""

import sys

from llada_jax import cli
from llada_jax.config.schema import base_config, describe, load_config_file


def main(argv=None):
    args = list(sys.argv if argv is None else argv)[1:]
    with cli.user_errors():
        if len(args) > 1 or (args and args[0].startswith("-")):
            raise ValueError(f"arguments {args}: expected none or one config file (configs/*.py)")
        print("\n".join(describe(load_config_file(args[0]) if args else base_config())))


if __name__ == "__main__":
    main()
