"""The command lines, one module each, all built the same way: a thin parser (the one
flag library, `flags`: absl flags on a fresh FlagValues, `--config=FILE` with
`--config.x.y=v` overrides, `--help` without `--config`, `--list_config_fields`,
`--print_config`, user mistakes as one `error: ...` line) over library functions, after
the common start-up (`startup.start`). Each is a console script (`llada-NAME`, setup.py)
and `python -m llada_jax.NAME`:

    train         training.loop.train_and_evaluate      (--config, --workdir)
    rl            rl.loop.train_rl                      (--config, --workdir)
    plan          plan.plan                             (--config, --devices)
    generate      generate.load / sample                (--workdir, --prompt, ...)
    export        interop.export.export_workdir         (--workdir, --out, ...)
    import_hf     interop.import_hf.import_to_workdir   (--src, --workdir)
    prepare_data  data.prepare.prepare                  (--inputs, --out, ...)
    evaluation    lm-eval's own command line            (`llada-eval`)
    demo          demo.run_demo                         (--config, --workdir, --fast)

`main(argv)` of each takes the arguments without the program name (default
sys.argv[1:]) and can run many times in one process.
"""
