"""Subcommands beyond ``bench``/``list``/``plugins``, one module each (see cfs.cli)."""
