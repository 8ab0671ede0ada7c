"""The command-line entry points, one module per command group."""
