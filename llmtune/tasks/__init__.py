"""One module per command, each with `run(cfg, ...) -> dict`; the CLI imports them lazily."""
