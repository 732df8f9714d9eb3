"""``edge-agent``: the command line. Exit codes: 0 success, 2 bad usage or invalid
config/input, 1 runtime failure."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from agent import __version__
from agent.aio import run_until_signal
from agent.logs import config_secrets, install_redaction, setup_logging
from rules.errors import ConfigError, EdgeAgentError, InputError

log = logging.getLogger("agent")

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edge-agent", description=__doc__)
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="the production agent")
    run.add_argument("-c", "--config", type=Path, required=True)
    run.add_argument("--record", type=Path, help="also write every sample to this JSON Lines log")

    chk = sub.add_parser("check-config", help="validate a config file")
    chk.add_argument("-c", "--config", type=Path, required=True)
    chk.add_argument("--ingest", action="store_true", help="the file is an ingest config")

    ing = sub.add_parser("ingest", help="platform side: MQTT -> InfluxDB")
    ing.add_argument("-c", "--config", type=Path, required=True)

    kpi = sub.add_parser("kpi", help="recompute KPI records offline from a sample log")
    kpi.add_argument("--input", type=Path, required=True, help="sample log (JSON Lines), - = stdin")
    kpi.add_argument("-c", "--config", type=Path, required=True)

    rep = sub.add_parser(
        "report", help="a period's KPIs against a baseline period",
        description="Sum a period's KPI records and compare them with a baseline period: "
                    "reduction = (baseline - current) / baseline. Periods are START/END, "
                    "END exclusive: dates (local midnight in --timezone) or timestamps.")
    src = rep.add_mutually_exclusive_group(required=True)
    src.add_argument("--records", type=Path, action="append", metavar="FILE",
                     help="KPI records, JSON Lines as `edge-agent kpi` writes them "
                          "(- = stdin); may be repeated")
    src.add_argument("--influx", type=Path, metavar="INGEST_TOML",
                     help="read the records from the InfluxDB of this ingest config")
    rep.add_argument("--period", required=True, help="the period to report, e.g. "
                                                     "2026-10-01/2026-11-01")
    rep.add_argument("--baseline", required=True, help="the period to compare it with")
    rep.add_argument("--window", default="1h",
                     help="which records to sum: a KPI window size or 'shift' (default 1h)")
    rep.add_argument("--site", help="site id (default: the only site in the records)")
    who = rep.add_mutually_exclusive_group()
    who.add_argument("--line", help="report this line (default: the whole site)")
    who.add_argument("--machine", help="report this machine")
    rep.add_argument("--timezone", default="UTC",
                     help="zone of dates and of timestamps without an offset (default UTC)")
    rep.add_argument("--format", choices=["text", "json"], default="text")

    demo = sub.add_parser("demo", help="simulators + broker + agent (+ InfluxDB), live view")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds and print a summary")
    demo.add_argument("--machines", type=int, default=2)
    demo.add_argument("--window", default="10s", help="KPI window length (default 10s)")
    demo.add_argument("--state-dir", type=Path, default=None)
    demo.add_argument("--broker", choices=["auto", "mosquitto", "embedded"], default="auto",
                      help="auto: Mosquitto when installed, else an embedded MQTT 3.1.1 broker")

    from agent.certs_cmd import add_certs_arguments

    add_certs_arguments(sub.add_parser(
        "certs", help="create or show the OPC UA client certificate a server must trust"))

    from simulators.cli import add_sim_arguments

    add_sim_arguments(sub.add_parser("sim", help="run a simulator standalone"))
    return p


def _cmd_run(args: argparse.Namespace) -> int:
    from agent.config import load_agent_config
    from agent.runtime import Agent

    cfg = load_agent_config(args.config)
    install_redaction(config_secrets(cfg))
    agent = Agent(cfg, record_path=args.record, config_path=args.config)
    log.info("edge-agent %s: site %s, %d machines, %d meters, %d sources", __version__,
             cfg.site.id, len(cfg.machines), len(cfg.meters), len(cfg.sources))

    async def main(stop: asyncio.Event) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, agent.request_reload)
        await agent.run(stop)

    asyncio.run(run_until_signal(main))
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    if args.ingest:
        from agent.ingest.config import load_ingest_config

        icfg = load_ingest_config(args.config)
        print(f"{args.config}: ok: ingest from {icfg.mqtt.host}:{icfg.mqtt.port} "
              f"into {icfg.influxdb.url} bucket {icfg.influxdb.bucket}")
        return EXIT_OK
    from agent.config import load_agent_config

    cfg = load_agent_config(args.config)
    tags = sum(1 for m in cfg.machines for s in m.signals.model_dump().values() if s) + sum(
        1 for mt in cfg.meters for s in mt.signals.model_dump().values() if s)
    print(f"{args.config}: ok: site {cfg.site.id}, {len(cfg.lines)} lines, "
          f"{len(cfg.machines)} machines, {len(cfg.meters)} meters, {len(cfg.sources)} sources, "
          f"{tags} signals (+ presets), windows {', '.join(cfg.kpi.windows)}")
    return EXIT_OK


def _cmd_ingest(args: argparse.Namespace) -> int:
    from agent.health import IngestStatus, serve_health
    from agent.ingest.config import load_ingest_config
    from agent.ingest.service import IngestService

    icfg = load_ingest_config(args.config)
    install_redaction(config_secrets(icfg))
    service = IngestService(icfg)

    async def main(stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(service.run(), name="ingest")
            health = None
            if icfg.health.enabled:
                health = tg.create_task(serve_health(icfg.health.host, icfg.health.port,
                                                     IngestStatus(service)), name="health")
            await stop.wait()
            task.cancel()
            if health is not None:
                health.cancel()

    asyncio.run(run_until_signal(main))
    return EXIT_OK


def _cmd_kpi(args: argparse.Namespace) -> int:
    from agent.config import load_agent_config
    from agent.offline import recompute

    cfg = load_agent_config(args.config, kpi_only=True)
    if str(args.input) == "-":
        recompute(cfg, sys.stdin, sys.stdout, "<stdin>")
        return EXIT_OK
    try:
        with args.input.open(encoding="utf-8") as fh:
            recompute(cfg, fh, sys.stdout, str(args.input))
    except FileNotFoundError:
        raise InputError(f"{args.input}: file not found") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{args.input}: not UTF-8 text ({err.reason})") from None
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from agent import report

    tz = report.parse_timezone(args.timezone)
    request = report.ReportRequest(
        window=args.window,
        current=report.parse_period(args.period, tz, "--period"),
        baseline=report.parse_period(args.baseline, tz, "--baseline"),
        site=args.site, line=args.line, machine=args.machine)
    report.check_window(args.window)
    if args.influx is not None:
        from agent.ingest.config import load_ingest_config

        settings = load_ingest_config(args.influx).influxdb
        install_redaction(config_secrets(settings))
        records = report.read_influx_records(settings, request)
    else:
        records = []
        for path in args.records:
            if str(path) == "-":
                records += report.read_jsonl_records([("<stdin>", sys.stdin)])
                continue
            try:
                with path.open(encoding="utf-8") as fh:
                    records += report.read_jsonl_records([(str(path), fh)])
            except FileNotFoundError:
                raise InputError(f"{path}: file not found") from None
            except UnicodeDecodeError as err:
                raise InputError(f"{path}: not UTF-8 text ({err.reason})") from None
    report.write_report(report.build_report(records, request), request, args.format)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo
    from rules.spec import window_length_ms

    try:
        window_length_ms(args.window)
    except ValueError as err:
        raise InputError(f"--window: {err}") from None
    if args.machines < 1 or args.machines > 200:
        raise InputError("--machines: give 1 to 200 simulated machines")
    if args.duration is not None and args.duration <= 0:
        raise InputError("--duration: give a positive number of seconds")

    return run_demo(duration_s=args.duration, machines=args.machines, window=args.window,
                    state_dir=args.state_dir, broker=args.broker)


def _cmd_sim(args: argparse.Namespace) -> int:
    from simulators.cli import run_from_args

    return run_from_args(args)


def _cmd_certs(args: argparse.Namespace) -> int:
    from agent.certs_cmd import run_certs_from_args

    return run_certs_from_args(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _cmd_run,
    "check-config": _cmd_check,
    "ingest": _cmd_ingest,
    "kpi": _cmd_kpi,
    "report": _cmd_report,
    "demo": _cmd_demo,
    "sim": _cmd_sim,
    "certs": _cmd_certs,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-agent`` console script."""
    args = _parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        print(err.render(), file=sys.stderr)
        return EXIT_USAGE
    except InputError as err:
        print(f"edge-agent: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return EXIT_OK
    except EdgeAgentError as err:
        log.error("%s", err)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
