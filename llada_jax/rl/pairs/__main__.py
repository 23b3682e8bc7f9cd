"""`python -m llada_jax.rl.pairs --config=... --policy=DIR --out=FILE` (`llada-rl-pairs`): VRPO pairs
from a policy's own scored samples. The command is `llada_jax.rl.sample_pairs`, which imports this
package's file format; it lives apart so the format never imports the command."""

from llada_jax.rl.sample_pairs import main

if __name__ == "__main__":
    main()
