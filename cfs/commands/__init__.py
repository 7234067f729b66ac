"""``cfs`` subcommands, one module each, registered through ``cfs_add_commands`` like a
third party's (see :mod:`cfs.commands.base`)."""
