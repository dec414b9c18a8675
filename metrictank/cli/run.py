"""`metrictank run`: one instance in the foreground, with the signal handling and systemd notification that a
service manager relies on to stop it without losing writes."""

from __future__ import annotations

import signal
import threading

import click

from metrictank.cli._common import _load


@click.command()
@click.option(
    "--config",
    "config_paths",
    type=click.Path(dir_okay=False),
    multiple=True,
    help="TOML configuration file; repeat it to layer files (a later one overrides an earlier one key by key).",
)
def run(config_paths: tuple[str, ...]) -> None:
    """Run an instance in the foreground; SIGTERM demotes it, drains writes and exits.

    Under systemd (Type=notify) it reports READY=1 once the node is ready, pings the watchdog and sends
    STOPPING=1 on shutdown.

    \b
    Examples:
      metrictank run --config /etc/metrictank/mt1.toml
      MT_CLUSTER_PRIMARY_NODE=true metrictank run --config mt.toml
      metrictank run --config base.toml --config plan/read-0.toml   # a fragment of `cluster plan`
    """
    cfg = _load(list(config_paths) or None)
    from metrictank.instance import Instance
    from metrictank.logsetup import setup_logging
    from metrictank.systemd import SystemdNotifier

    setup_logging(cfg.log.level, cfg.log.format)
    inst = Instance(cfg)
    notifier = getattr(inst, "systemd", None)
    monitor_stop = threading.Event()
    if notifier is None:
        # The instance does not drive the notifier from its main loop: do it from here, once a second.
        notifier = SystemdNotifier()
        if notifier.enabled:

            def monitor() -> None:
                while not monitor_stop.wait(1.0):
                    notifier.tick(inst.node)

            threading.Thread(target=monitor, name="systemd-notify", daemon=True).start()

    def _graceful(signum, _frame):
        click.echo(f"signal {signum}: stopping (demote, drain, exit)", err=True)
        notifier.stopping()
        inst.stop_event.set()

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    inst.start()
    try:
        inst.run()
    finally:
        monitor_stop.set()
        notifier.stopping()
        with notifier.keepalive(limit=cfg.store.drain_timeout + 60):
            if inst.node.primary:
                inst.node.set_primary(False)
            inst.stop()
