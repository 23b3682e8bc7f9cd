"""What every command line shares: absl flags (the one flag library of the commands), user
mistakes and flag errors as one `error: ...` line (exit status 1, no traceback), and the
`--config=FILE` flag with its `--config.section.field=value` overrides, the file executed
once; `--print_config` prints the resolved config instead of running the command
(`python -m llada_jax.config` lists every field and its meaning).

Commands with a config (train, rl, generate, ...) define their flags on absl's global
`flags.FLAGS` and run under `run_absl`; commands without one (export, import_hf,
prepare_data, repoint) define them on a fresh `flags.FlagValues` per call (`parse`), so
their `main(argv)` runs any number of times in one process.
"""

from __future__ import annotations

import contextlib
import os
import sys

# A user's mistake (a bad flag value, a missing file, a workdir of the wrong kind), as
# opposed to a bug: these exceptions become one line. Our own errors subclass ValueError.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


@contextlib.contextmanager
def user_errors(*extra):
    """Turn USER_ERRORS (and `extra` types) raised in the block into `error: ...` and exit 1."""
    try:
        yield
    except USER_ERRORS + tuple(extra) as e:
        msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.strerror}: {e.filename!r}"
        raise SystemExit(f"error: {' '.join(msg.split())}") from None


def _config_path(argv):
    """(path, index of the flag, number of argv entries it spans) of --config=PATH."""
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1], i, 1
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1], i, 2
    return None, None, 0


def check_overrides(config, argv):
    """Fail with the full field name on an override of a field the config lacks
    (`--config.optim.lrr=1`), before absl parses anything.

    This is the command line's check, not a config rule, so it stays here beside the flag
    parsing rather than in the config's rules (`llada_jax.config.rules`): it reads
    argv, which only the CLI has, and runs before absl parses the flags, so a misspelt field
    is named as one (with the fields its section has) for every command. The values themselves
    are checked by `config.rules` (train, plan) and `config.rules_rl` (RL) once parsed."""
    overrides = [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    for field in overrides:
        node, parts = config, field.split(".")
        for i, part in enumerate(parts):
            name = part[2:] if i == len(parts) - 1 and part.startswith("no") and part not in node else part
            if not hasattr(node, "keys") or name not in node:
                where = "config" + "".join("." + p for p in parts[:i])
                known = sorted(node.keys()) if hasattr(node, "keys") else []
                raise ValueError(f"--config.{field}: unknown field config.{field} "
                                 f"({where} has {', '.join(known)})")
            node = node[name]


HELP = {"--help", "-h", "--helpshort", "--helpfull", "-?"}


def define_config_flag(argv, default_path: str | None = None, help_text="experiment config file (configs/*.py)",
                       flag_values=None):
    """Load --config=PATH (or `default_path`) once, check the overrides, and define the
    absl flag `config` holding it (overridable as `--config.x.y=v`). Returns argv
    without --config=PATH, for app.run. ValueError / FileNotFoundError for a bad file."""
    import ml_collections
    from ml_collections import config_flags

    from llada_jax.config import load_config_file

    kw = {} if flag_values is None else {"flag_values": flag_values}
    path, i, span = _config_path(argv)
    if path is None:
        path = default_path
    if not path and HELP.intersection(argv):  # the flags are listed without a config file
        config_flags.DEFINE_config_dict("config", ml_collections.ConfigDict(), f"{help_text}, required", **kw)
        return argv
    if not path:
        raise ValueError("--config: expected an experiment config file, e.g. --config=configs/tiny.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config={path!r}: no such file")
    try:
        config = load_config_file(path)
    except (SyntaxError, ImportError, AttributeError, TypeError, NameError, ValueError) as e:
        raise ValueError(f"--config={path!r}: {type(e).__name__}: {e}") from None
    check_overrides(config, argv)
    argv = argv if i is None else argv[:i] + argv[i + span:]
    if "--print_config" in argv:
        print_config(config, argv)
    config_flags.DEFINE_config_dict("config", config, help_text, lock_config=True, sys_argv=argv, **kw)
    return argv


def print_config(config, argv):
    """Print the config that `--config=FILE --config.x.y=v ...` resolves to, one field a
    line with its meaning, and exit 0 without running the command (other flags ignored)."""
    from absl import flags
    from ml_collections import config_flags

    from llada_jax.config import describe

    fv, argv = flags.FlagValues(), [argv[0]] + [a for a in argv if a.startswith("--config.")]
    config_flags.DEFINE_config_dict("config", config, flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    print("\n".join(describe(fv.config)))
    raise SystemExit(0)


def flag_error(e, known=()) -> str:
    """The one `error: ...` line of an absl flag error `e`; an unknown flag's line lists the
    `known` flag names if given, else absl's suggestions."""
    from absl import flags

    if isinstance(e, flags.UnrecognizedFlagError):
        near = [n.strip() for n in str(e).partition("Did you mean: ")[2].rstrip(" ?").split(",") if n.strip()]
        listed = (f"the flags are --{', --'.join(sorted(known))}; " if known else
                  f"did you mean --{', --'.join(near)}? " if near else "")
        return f"error: --{e.flagname}: unknown flag ({listed}--help lists them)"
    msg = " ".join(str(e).split())
    return "error: " + (msg[len("flag "):] if msg.startswith("flag --") else msg)


def parse(define, argv=None, usage: str = "", required=()):
    """Parse a command's flags with absl on a fresh FlagValues: `define(fv)` defines them
    (`flags.DEFINE_*(..., flag_values=fv)`), `argv` are the arguments without the program
    name (default sys.argv[1:]). `--help`/`-h` prints `usage` and the flags, exit 0. An
    unknown flag, a bad value, a `required` flag not given or a positional argument is one
    `error: ...` line naming the flag, exit status 1. Returns the FlagValues."""
    from absl import flags

    fv = flags.FlagValues()
    define(fv)
    argv = [sys.argv[0]] + list(sys.argv[1:] if argv is None else argv)
    if HELP.intersection(argv[1:]):
        print(f"{usage}\n{fv.get_help()}" if usage else fv.get_help())
        raise SystemExit(0)
    try:
        rest = fv(argv)
    except flags.Error as e:
        # absl's own --flagfile and --undefok are no flags of the command's: not listed
        raise SystemExit(flag_error(e, [n for n in fv if n not in ("flagfile", "undefok")])) from None
    if rest[1:]:
        raise SystemExit(f"error: unexpected arguments {rest[1:]} (flags are given as --name=value)")
    missing = [f"--{name}" for name in required if not fv[name].present]
    if missing:
        raise SystemExit(f"error: {', '.join(missing)}: required (--help lists the flags)")
    return fv


def run_absl(main, argv=None):
    """absl.app.run(main) with USER_ERRORS and flag errors as `error: ...` lines, JAX's
    persistent compilation cache on (`llada_jax.compile_cache`) and the host memory policy
    of $LLADA_JAX_HOST_MEMORY applied (`llada_jax.host_memory`, before JAX starts its threads)."""
    from absl import app

    from llada_jax import compile_cache, host_memory

    def wrapped(args):
        with user_errors():
            host_memory.configure()
            compile_cache.enable()
            return main(args)

    argv = list(sys.argv if argv is None else argv)
    _help_lists_the_commands_flags(argv[0])
    app.run(wrapped, argv=argv, flags_parser=_parse_global_flags)


def _parse_global_flags(argv):
    """app.run's flag parsing, its errors as one `error: ...` line as `parse` gives them."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        raise SystemExit(flag_error(e)) from None


def _help_lists_the_commands_flags(script: str):
    """absl's --help lists the key flags of the running script; a command's flags are defined
    by the library function that parses them, so they are made the script's key flags."""
    from absl import flags

    for module, defined in flags.FLAGS.flags_by_module_dict().items():
        if module != script and module.split(".")[0] in ("llada_jax", "ml_collections"):
            for flag in defined:
                flags.FLAGS.register_key_flag_for_module(script, flag)
