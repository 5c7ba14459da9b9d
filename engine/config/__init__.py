"""The training config: its typed schema, files in and out, the defaults that follow other settings,
and the rulebook every way into training runs (schema, io, flat_import, defaults, rules, machine)."""
