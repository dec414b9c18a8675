"""Command line entry point."""

import click

from metrictank import __version__


@click.group()
@click.version_option(__version__, prog_name="metrictank")
def main() -> None:
    """metrictank-py: Kafka-fed metrics ingest, byte-compatible with Metrictank."""
