"""``edge-agent``: the command line. Exit codes: 0 success, 2 bad usage or invalid
config/input, 1 runtime failure."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from agent import __version__
from rules.errors import ConfigError, EdgeAgentError, InputError

if TYPE_CHECKING:
    from agent.ingest.config import IngestConfig

log = logging.getLogger("agent")

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class _LazySubParsers(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands whose options are added only once the command is chosen.

    Some commands take their options from modules that import asyncua or pymodbus
    (seconds of start-up on a small industrial PC); ``--help`` and the other commands
    must not pay for them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deferred: dict[str, Callable[[argparse.ArgumentParser], None]] = {}

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        if isinstance(values, Sequence) and values:
            populate = self.deferred.pop(str(values[0]), None)
            if populate is not None:
                populate(self.choices[str(values[0])])
        super().__call__(parser, namespace, values, option_string)


def _add_certs(cmd: argparse.ArgumentParser) -> None:
    from agent.certs_cmd import add_certs_arguments

    add_certs_arguments(cmd)


def _add_sim(cmd: argparse.ArgumentParser) -> None:
    from simulators.cli import add_sim_arguments

    add_sim_arguments(cmd)


def _command_module(module: str) -> Callable[[argparse.ArgumentParser], None]:
    """A deferred populate for a command whose module gives ``DESCRIPTION``,
    ``add_arguments(parser)`` and ``run(args)``: imported only when the command is chosen."""

    def populate(cmd: argparse.ArgumentParser) -> None:
        impl = importlib.import_module(module)
        cmd.description = impl.DESCRIPTION
        impl.add_arguments(cmd)
        cmd.set_defaults(handler=impl.run)

    return populate


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edge-agent", description=__doc__)
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser,
                           action=_LazySubParsers)
    assert isinstance(sub, _LazySubParsers)

    run = sub.add_parser("run", help="the production agent")
    run.add_argument("-c", "--config", type=Path, required=True)
    run.add_argument("--record", type=Path, help="also write every sample to this JSON Lines log")

    chk = sub.add_parser("check-config", help="validate a config file")
    chk.add_argument("-c", "--config", type=Path, required=True)
    chk.add_argument("--ingest", action="store_true", help="the file is an ingest config")
    chk.add_argument("--file-only", action="store_true",
                     help="check the file alone, not this host's environment variables and "
                          "files (for a config checked away from where it runs)")

    ing = sub.add_parser("ingest", help="platform side: MQTT -> InfluxDB")
    ing.add_argument("-c", "--config", type=Path, required=True)

    kpi = sub.add_parser("kpi", help="recompute KPI records offline from a sample log")
    kpi.add_argument("--input", type=Path, required=True, help="sample log (JSON Lines), - = stdin")
    kpi.add_argument("-c", "--config", type=Path, required=True)

    rep = sub.add_parser(
        "report", help="a period's KPIs against a baseline period and the plan's targets",
        description="Sum a period's KPI records and compare them with a baseline period and "
                    "with targets (default: the provincial plan's, -30 %% by 2020 and -50 %% "
                    "by 2025 for operating cost, production cycle and defect rate; energy "
                    "and CO2 per good unit down), with an energy baseline regression, trend "
                    "charts and the windows behind every sum. Periods are START/END, END "
                    "exclusive: dates (local midnight in --timezone) or timestamps.")
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
                     help="which records to sum: a KPI window size, 1d, 1w, 1mo or 'shift' "
                          "(default 1h)")
    rep.add_argument("--site", help="site id (default: the only site in the records)")
    who = rep.add_mutually_exclusive_group()
    who.add_argument("--line", help="report this line (default: the whole site)")
    who.add_argument("--machine", help="report this machine")
    rep.add_argument("--timezone", default="UTC",
                     help="the site's zone: of dates, of timestamps without an offset, of "
                          "the 1d/1w/1mo windows and of the charts' days (default UTC)")
    rep.add_argument("--format", choices=["text", "json", "csv", "html", "pdf", "xlsx"],
                     default=None,
                     help="default: from the --out file's suffix, else text; pdf is printed "
                          "from the html by headless Chromium")
    rep.add_argument("--out", type=Path, metavar="FILE",
                     help="write the report to FILE (needed for pdf and xlsx; default stdout)")
    rep.add_argument("--lang", choices=["zh", "en"], default=None,
                     help="report language (default: zh when --timezone is a mainland-China "
                          "zone such as Asia/Shanghai, else en)")
    rep.add_argument("--targets", type=Path, metavar="TOML",
                     help="the site's own targets, added to or replacing the plan's defaults "
                          "(see docs/reports.md)")

    demo = sub.add_parser("demo", help="simulators + broker + agent (+ InfluxDB), live view")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds and print a summary")
    demo.add_argument("--machines", type=int, default=2)
    demo.add_argument("--window", default="10s", help="KPI window length (default 10s)")
    demo.add_argument("--state-dir", type=Path, default=None)
    demo.add_argument("--broker", choices=["auto", "mosquitto", "embedded"], default="auto",
                      help="auto: Mosquitto when installed, else an embedded MQTT 3.1.1 broker")

    for name, summary, populate in (
        ("certs", "create or show the OPC UA client certificate a server must trust",
         _add_certs),
        ("sim", "run a simulator standalone", _add_sim),
        ("browse", "an OPC UA server's nodes: ids, types, values; signal snippets",
         _command_module("agent.commission.browse")),
        ("modbus-read", "read Modbus registers, decoded as every type and order",
         _command_module("agent.commission.modbus_read")),
        ("init", "write a commented starter config",
         _command_module("agent.commission.starter")),
        ("test", "read every configured signal once and show what it gives",
         _command_module("agent.commission.probe")),
        ("propose-thresholds", "power thresholds for a machine without a controller, from "
         "a sample log", _command_module("agent.propose")),
    ):
        raw = name in ("browse", "modbus-read", "init", "test")
        sub.add_parser(name, help=summary, formatter_class=argparse.RawDescriptionHelpFormatter
                       if raw else argparse.HelpFormatter)
        sub.deferred[name] = populate
    return p


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from agent.aio import on_signal, run_until_signal
    from agent.config import load_run_config
    from agent.logs import config_secrets, install_redaction
    from agent.runtime import Agent

    cfg = load_run_config(args.config)
    install_redaction(config_secrets(cfg))
    agent = Agent(cfg, record_path=args.record, config_path=args.config)
    log.info("edge-agent %s: site %s, %d machines, %d meters, %d sources", __version__,
             cfg.site.id, len(cfg.machines), len(cfg.meters), len(cfg.sources))

    async def main(stop: asyncio.Event) -> None:
        on_signal("SIGHUP", agent.request_reload)  # POSIX only; Windows has no SIGHUP
        await agent.run(stop)

    asyncio.run(run_until_signal(main))
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    """The checks ``run`` (or ``ingest``) makes before it starts, and nothing more: both
    load through the same function, so a file that passes here starts there."""
    host = not args.file_only
    unchecked = "" if host else " (environment variables and files not checked)"
    if args.ingest:
        from agent.config import load_ingest_run_config

        icfg = load_ingest_run_config(args.config, host=host)
        print(f"{args.config}: ok: ingest from {icfg.mqtt.host}:{icfg.mqtt.port} "
              f"into {icfg.influxdb.url} bucket {icfg.influxdb.bucket}{unchecked}")
        return EXIT_OK
    from agent.config import load_run_config

    cfg = load_run_config(args.config, host=host)
    tags = sum(1 for m in cfg.machines for s in m.signals.model_dump().values() if s) + sum(
        1 for mt in cfg.meters for s in mt.signals.model_dump().values() if s)
    from datetime import UTC, datetime

    from agent.config.calendars import describe
    from rules.windows import describe_windows

    explained = "; ".join(describe_windows(cfg.kpi.windows, cfg.site.timezone,
                                           datetime.now(UTC).year))
    print(f"{args.config}: ok: site {cfg.site.id}, {len(cfg.lines)} lines, "
          f"{len(cfg.machines)} machines, {len(cfg.meters)} meters, {len(cfg.sources)} sources, "
          f"{tags} signals (+ presets), windows {', '.join(cfg.kpi.windows)} ({explained}), "
          f"{describe(cfg)}{unchecked}")
    return EXIT_OK


def _cmd_ingest(args: argparse.Namespace) -> int:
    import asyncio

    from agent.aio import on_signal, run_until_signal
    from agent.config import load_ingest_run_config
    from agent.health import IngestStatus, serve_health
    from agent.ingest.service import IngestService
    from agent.logs import config_secrets, install_redaction

    icfg = load_ingest_run_config(args.config)
    install_redaction(config_secrets(icfg))
    service = IngestService(icfg)

    async def main(stop: asyncio.Event) -> None:
        on_signal("SIGHUP", lambda: _ingest_reload_requested(
            args.config, icfg, load_ingest_run_config))
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


def _ingest_reload_requested(path: Path, running: IngestConfig,
                             load: Callable[[Path], IngestConfig]) -> None:
    """SIGHUP (``systemctl reload``): the ingest keeps running as it is and says so.

    Its broker session and database client cannot be swapped in place, and a restart
    loses nothing (unacknowledged messages stay with the broker), so a restart applies
    changes. The file is checked now, so the operator knows whether that restart will work.
    """
    try:
        changed = load(path) != running
    except ConfigError as err:
        place, message = err.errors[0] if err.errors else ("", str(err))
        more = f" (and {len(err.errors) - 1} more)" if len(err.errors) > 1 else ""
        first = f"{place}: {message}" if place else message
        state = f"{path} now fails its checks, fix it before restarting: {first}{more}"
    except Exception as err:  # a handler must never take the ingest down
        state = f"cannot check {path}: {err}"
    else:
        state = (f"{path} has changed and passes its checks" if changed
                 else f"{path} is unchanged")
    log.warning("SIGHUP: ingest config reload is not supported; restart to apply changes "
                "(%s)", state)


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
    from agent import report, reporting
    from agent.logs import config_secrets, install_redaction
    from agent.reporting.i18n import default_lang

    tz = report.parse_timezone(args.timezone)
    fmt = args.format or reporting.format_for(args.out)
    if args.out is None and fmt in reporting.BINARY_FORMATS:
        raise InputError(f"--out: --format {fmt} writes a file; name it with --out FILE")
    if args.out is not None and not args.out.parent.is_dir():
        raise InputError(f"--out: {args.out.parent} is not a directory")
    targets = reporting.load_targets(args.targets)
    request = report.ReportRequest(
        window=args.window,
        current=report.parse_period(args.period, tz, "--period"),
        baseline=report.parse_period(args.baseline, tz, "--baseline"),
        site=args.site, line=args.line, machine=args.machine, timezone=args.timezone)
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
    built = reporting.build_demonstration(
        records, request, timezone=args.timezone, lang=args.lang or default_lang(args.timezone),
        targets=targets, targets_source=None if args.targets is None else str(args.targets))
    reporting.write(built, fmt, args.out)
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
    "browse": lambda args: int(args.handler(args)),
    "modbus-read": lambda args: int(args.handler(args)),
    "init": lambda args: int(args.handler(args)),
    "test": lambda args: int(args.handler(args)),
    "propose-thresholds": lambda args: int(args.handler(args)),
}


def _leaves(err: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, as a TaskGroup raises them."""
    if isinstance(err, BaseExceptionGroup):
        return [leaf for sub in err.exceptions for leaf in _leaves(sub)]
    return [err]


def _failed(err: BaseException, debug: bool) -> int:
    """Report what ended a command and choose its exit code.

    A config or input problem (exit 2) is printed as it is, the same whether
    ``check-config`` or a starting ``run`` found it. A runtime failure (exit 1) is one
    log line: a project error or an operating-system error (a port in use, a directory
    not writable) says what failed; anything else is a bug, logged as one line that asks
    for ``--log-level debug``, which logs its traceback.
    """
    import asyncio

    leaves = [e for e in _leaves(err) if not isinstance(e, asyncio.CancelledError)]
    configs = [e for e in leaves if isinstance(e, ConfigError)]
    inputs = [e for e in leaves if isinstance(e, InputError)]
    if configs or inputs:
        for problem in configs:
            print(problem.render(), file=sys.stderr)
        for bad in inputs:
            print(f"edge-agent: {bad}", file=sys.stderr)
        return EXIT_USAGE
    if all(isinstance(e, KeyboardInterrupt | BrokenPipeError) for e in leaves):
        return EXIT_OK
    seen: set[str] = set()
    for leaf in leaves:
        if isinstance(leaf, KeyboardInterrupt | BrokenPipeError):
            continue
        if isinstance(leaf, EdgeAgentError | OSError):
            line = str(leaf) or type(leaf).__name__
            if line not in seen:
                seen.add(line)
                log.error("%s", line)
        elif debug:
            log.error("unexpected %s: %s", type(leaf).__name__, leaf, exc_info=leaf)
        else:
            log.error("unexpected %s: %s (a bug: rerun with --log-level debug for the "
                      "traceback and report it)", type(leaf).__name__, leaf)
    return EXIT_RUNTIME


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-agent`` console script.

    No command ends in a traceback: the exception groups of ``run``, ``ingest`` and
    ``demo`` (one TaskGroup each) are unwrapped, and each failure reported as one line.
    """
    args = _parser().parse_args(argv)
    from agent.logs import setup_logging  # after parsing: --help needs no logging

    setup_logging(args.log_level, args.log_format)
    try:
        return COMMANDS[args.command](args)
    except (Exception, KeyboardInterrupt, BaseExceptionGroup) as err:
        return _failed(err, args.log_level == "debug")


if __name__ == "__main__":
    sys.exit(main())
