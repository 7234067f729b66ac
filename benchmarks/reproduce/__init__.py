"""Scripts that regenerate the rows of REPRODUCIBILITY.md's ledger (one JSON per row)."""
