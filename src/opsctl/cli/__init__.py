"""The Typer CLI: thin commands that parse options and call the engine."""
