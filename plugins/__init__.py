"""First-party strategies of cfs, one method per module, each registered through the ``cfs``
entry-point group exactly as a third-party plugin is."""
