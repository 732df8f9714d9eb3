"""``edge-agent certs``: create or show the OPC UA client certificates.

A secure OPC UA server only talks to clients whose certificate it trusts, so before the
first secure connect an operator needs the certificate file, its thumbprint and the
application URI to hand to the server's administrator. This command creates the
certificate and key where the agent would (so the running agent uses the same pair) and
prints that information. With ``--show`` nothing is created.

Exit codes: 0 success, 2 bad usage or invalid config, 1 the files could not be written.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from agent.config import load_agent_config
from agent.config.model import OpcUaSourceSection
from collectors.opcua.security import describe, ensure_client_certificate
from rules.errors import ConfigError

__all__ = ["add_certs_arguments", "run_certs", "run_certs_from_args"]

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class _Target:
    label: str
    pki_dir: Path
    application_uri: str | None
    certificate: Path | None = None
    private_key: Path | None = None
    trust_dir: Path | None = None


def add_certs_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``certs`` subcommand's options (for ``agent/cli.py``)."""
    parser.add_argument("-c", "--config", type=Path, default=None,
                        help="agent config: one certificate per secure OPC UA source")
    parser.add_argument("--source", default=None, help="only this OPC UA source id")
    parser.add_argument("--pki-dir", type=Path, default=None,
                        help="without a config: the directory of the certificate")
    parser.add_argument("--application-uri", default=None,
                        help="without a config: URI to put into a new certificate "
                             "(default urn:<hostname>:factory-edge-agent)")
    parser.add_argument("--show", action="store_true",
                        help="only show existing certificates, create nothing")


def run_certs_from_args(args: argparse.Namespace, out: TextIO | None = None,
                        err: TextIO | None = None) -> int:
    """Run with the namespace parsed by :func:`add_certs_arguments`."""
    return run_certs(args.config, source=args.source, pki_dir=args.pki_dir,
                     application_uri=args.application_uri, show_only=args.show,
                     out=out, err=err)


def _targets(config: Path, source: str | None) -> list[_Target]:
    cfg = load_agent_config(config)
    found: list[_Target] = []
    for src in cfg.sources:
        if not isinstance(src, OpcUaSourceSection):
            continue
        if source is not None and src.id != source:
            continue
        if src.security_mode == "None" and source is None:
            continue
        pki = src.pki_dir or cfg.agent.state_dir / "pki" / src.id
        found.append(_Target(f"source {src.id} ({src.url}, {src.security_policy}/"
                             f"{src.security_mode})", pki, src.application_uri,
                             src.certificate, src.private_key, src.trust_dir or pki / "trusted"))
    if source is not None and not found:
        raise ConfigError([("--source", f"no OPC UA source {source!r} in {config}")])
    return found


def run_certs(
    config: Path | None = None,
    *,
    source: str | None = None,
    pki_dir: Path | None = None,
    application_uri: str | None = None,
    show_only: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Create (unless ``show_only``) and print the client certificates.

    With ``config``: one per OPC UA source that uses security (or the one named by
    ``source``), at the path the agent uses. Without: the one in ``pki_dir``.
    """
    stdout = out or sys.stdout
    stderr = err or sys.stderr
    try:
        if config is not None:
            if pki_dir is not None or application_uri is not None:
                raise ConfigError([("certs", "--pki-dir and --application-uri are taken from "
                                    "the config when -c is given")])
            targets = _targets(config, source)
            if not targets:
                print(f"no OPC UA source in {config} uses security; nothing to do", file=stdout)
                return EXIT_OK
        elif pki_dir is not None:
            targets = [_Target(str(pki_dir), pki_dir, application_uri,
                               trust_dir=pki_dir / "trusted")]
        else:
            raise ConfigError([("certs", "give -c CONFIG or --pki-dir DIR")])
        for i, target in enumerate(targets):
            info = ensure_client_certificate(
                target.pki_dir, target.application_uri, cert_path=target.certificate,
                key_path=target.private_key, create=not show_only)
            if target.trust_dir is not None and not show_only:
                target.trust_dir.mkdir(parents=True, exist_ok=True)
            if i:
                print(file=stdout)
            print(f"# {target.label}", file=stdout)
            print(describe(info, trust_dir=target.trust_dir), file=stdout)
    except ConfigError as exc:
        print(f"edge-agent certs: {exc}", file=stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"edge-agent certs: {exc}", file=stderr)
        return EXIT_RUNTIME
    return EXIT_OK
