"""The one flag library of every command (absl flags): user mistakes as one
`error: ...` line (exit status 1, no traceback), and the `--config=FILE` flag with its
`--config.section.field=value` overrides, the file executed once.

Every config command also takes:
- `--help` (without `--config` too): its flags, the config's fields among them;
- `--list_config_fields`: every config field with its value and meaning, then exit;
- `--print_config`: the resolved config of this command line (file and overrides), then
  exit without running.
"""

from __future__ import annotations

import contextlib
import os
import sys

# A user's mistake (a bad flag value, a missing file, a workdir of the wrong kind), as
# opposed to a bug: these exceptions become one line. Our own errors subclass ValueError.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
HELP = ("--help", "-h", "--helpfull", "--helpshort", "-?")


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

    This is the command line's check, not a config rule: it reads argv, which only the
    command line has, and runs before absl would report the flag as unknown, so a misspelt
    field is named as one (with the fields its section has) for every command. The values
    themselves are checked by `llada_jax.config.rules` once parsed."""
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


def load_config(argv, default_path: str | None = None):
    """(config, argv without --config=PATH): the experiment file of --config (or
    `default_path`); base_config() for --help or --list_config_fields without one."""
    from llada_jax.config import base_config, load_config_file

    path, i, span = _config_path(argv)
    path = path or default_path
    argv = argv if i is None else argv[:i] + argv[i + span:]
    if not path:
        if any(a in HELP or a == "--list_config_fields" for a in argv[1:]):
            return base_config(), argv
        raise ValueError("--config: expected an experiment config file, e.g. --config=configs/tiny.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config={path!r}: no such file")
    try:
        return load_config_file(path), argv
    except (SyntaxError, ImportError, AttributeError, TypeError, NameError, ValueError) as e:
        raise ValueError(f"--config={path!r}: {type(e).__name__}: {e}") from None


def define_config_flag(argv, default_path: str | None = None, help_text="experiment config file (configs/*.py)",
                       flag_values=None):
    """Load --config=PATH (or `default_path`) once, check the overrides, and define the
    absl flag `config` holding it (overridable as `--config.x.y=v`) with --print_config.
    --list_config_fields prints the fields and exits. Returns argv without --config=PATH,
    for app.run. ValueError / FileNotFoundError for a bad file."""
    from absl import flags
    from ml_collections import config_flags

    from llada_jax.config import describe

    config, argv = load_config(argv, default_path)
    if "--list_config_fields" in argv[1:]:
        print(describe(config))
        raise SystemExit(0)
    check_overrides(config, argv)
    kw = {} if flag_values is None else {"flag_values": flag_values}
    config_flags.DEFINE_config_dict("config", config, help_text, lock_config=True, sys_argv=argv, **kw)
    flags.DEFINE_bool("print_config", False, "print the resolved config (file and overrides) and exit", **kw)
    flags.DEFINE_bool("list_config_fields", False, "print every config field with its value and meaning, "
                      "and exit", **kw)
    return argv


def parse(argv, define, *, doc: str, config: bool = False, default_config: str | None = None,
          config_help: str = "experiment config file (configs/*.py)"):
    """The flags of one command, parsed: a new absl FlagValues (so a command can run many
    times in one process), `define(fv)` adding the command's flags and returning the names
    of those that are required, and with `config` the
    `--config` flag with its overrides, --print_config and --list_config_fields. `argv`:
    the arguments without the program name (default sys.argv[1:]). --help prints `doc`
    and the flags and exits 0; a bad flag is a ValueError (one `error: ...` line inside
    `user_errors`)."""
    from absl import flags

    argv = ["llada", *(sys.argv[1:] if argv is None else argv)]
    fv = flags.FlagValues()
    if config:
        argv = define_config_flag(argv, default_config, config_help, flag_values=fv)
    required = define(fv) or ()
    if any(a in HELP for a in argv[1:]):
        print(doc.strip() + "\n\nflags:\n" + fv.get_help())
        raise SystemExit(0)
    try:
        fv(argv)
    except flags.Error as e:
        raise ValueError(str(e)) from None
    if config and fv.print_config:
        from llada_jax.config import describe

        print(describe(fv.config))
        raise SystemExit(0)
    missing = [name for name in required if fv[name].value is None]
    if missing:
        raise ValueError(f"--{missing[0]}: required (see --help)")
    return fv


@contextlib.contextmanager
def running(argv, define, *, doc: str, errors=(), distributed: bool = False, **config_kw):
    """The body of a command: its flags parsed (`parse`), the common start-up
    (`commands.startup.start`), and USER_ERRORS (and `errors`) as one `error: ...` line."""
    from llada_jax.commands import startup

    with user_errors(*errors):
        fv = parse(argv, define, doc=doc, **config_kw)
        startup.start(distributed=distributed)
        yield fv


def run_absl(main, argv=None):
    """absl.app.run(main) with USER_ERRORS as `error: ...` lines, and --print_config."""
    from absl import app, flags

    def wrapped(args):
        if "print_config" in flags.FLAGS and flags.FLAGS.print_config:
            from llada_jax.config import describe

            print(describe(flags.FLAGS.config))
            raise SystemExit(0)
        with user_errors():
            return main(args)

    app.run(wrapped, argv=list(sys.argv if argv is None else argv))
