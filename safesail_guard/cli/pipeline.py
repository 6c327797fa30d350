"""Pipeline commands (placeholder until written)."""
import typer


def register(app: typer.Typer) -> None:
    """Attach pipeline commands to the main app."""
    return None
