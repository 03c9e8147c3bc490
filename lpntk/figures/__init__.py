"""Plotting functions of the workflow's figures, one module per stage (matplotlib Agg, reproducible bytes)."""
