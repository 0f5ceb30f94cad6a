"""The ptcopy command line (typer + rich). It talks to ptcopyd over D-Bus only
(ptcopy.cli._client) and never imports the engine."""
