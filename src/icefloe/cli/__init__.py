"""The ``icefloe`` command line (typer + rich); imported only by the console script."""
