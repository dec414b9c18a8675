"""The `metrictank` command: run an instance, steer nodes, generate load, read the store, check configuration.

One module per command group, as Metrictank keeps one folder per tool under cmd/: run, config, node, cluster,
fakemetrics, schema, store; what several groups share is in _common.

Exit codes are for scripts, the same for every command:
  0  success (for `node status`: the node is ready)
  1  refused, or not in the asked state (promotion refused, node not ready, demoted but not drained,
     no primary or two primaries in `cluster members`, HTTP 401/4xx)
  2  usage or configuration error (click's own usage errors are 2 as well)
  3  a node, Kafka or the store could not be reached
Heavy modules (numpy, Kafka, Cassandra drivers) are imported inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import click

from metrictank import __version__
from metrictank.cli import cluster as _cluster
from metrictank.cli import config as _config
from metrictank.cli import fakemetrics as _fakemetrics
from metrictank.cli import node as _node
from metrictank.cli import run as _run
from metrictank.cli import schema as _schema
from metrictank.cli import store as _store
from metrictank.cli._common import EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE
from metrictank.cli.cluster import cluster_problems
from metrictank.cli.config import check_config, sample_toml
from metrictank.cli.fakemetrics import PARTITIONERS, SHAPES
from metrictank.cli.node import node_table

__all__ = [
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "PARTITIONERS",
    "SHAPES",
    "check_config",
    "cluster_problems",
    "main",
    "node_table",
    "sample_toml",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="metrictank")
def main() -> None:
    """metrictank-py: Kafka-fed metrics ingest, byte-compatible with Metrictank.

    \b
    Exit codes: 0 ok, 1 refused / not in the asked state, 2 usage or configuration error,
    3 node, Kafka or store unreachable.
    """


main.add_command(_run.run)
main.add_command(_config.config)
main.add_command(_node.node)
main.add_command(_cluster.cluster)
main.add_command(_fakemetrics.fakemetrics)
main.add_command(_schema.schema)
main.add_command(_store.store)
