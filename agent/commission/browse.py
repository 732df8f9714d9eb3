"""``edge-agent browse``: an OPC UA server's address space, as a config needs it.

Prints the tree under a start node with each node's browse name, class, data type,
access for this session's user, current value and node id in the ``nsu=<namespace
URI>;...`` form the config uses (an index like ``ns=2`` can change when the server
restarts; the URI does not). Browse names carry a namespace alias (``cnc:Machines``):
the source's own ``namespaces`` when the connection comes from a config, otherwise one
derived from the URI and listed in the header, so a path copied from the tree works as
``--path`` and, with that alias in the source, as a signal's ``browse_path``.

``--toml`` prints ready-to-paste ``[machines.signals.<role>]`` (or ``meters``) tables
for chosen nodes instead of the tree.

The connection is the agent's: ``-c agent.toml [SOURCE]`` takes url, security, client
certificate, trust and credentials from that source, or the same settings come from
flags. Exit codes: 0 shown, 2 bad arguments or config, 1 the server could not be
reached or did not have the node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent.commission.table import format_table
from rules.errors import ConfigError, DeviceError, InputError

if TYPE_CHECKING:
    from agent.commission.opcua_walk import NodeView, Session
    from collectors.opcua import OpcUaSourceSpec

__all__ = [
    "DESCRIPTION",
    "MACHINE_ROLES",
    "METER_ROLES",
    "Snippet",
    "add_arguments",
    "guess_role",
    "namespace_aliases",
    "nsu_node_id",
    "parse_browse_path",
    "render_tree",
    "run",
    "toml_snippets",
]

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Show an OPC UA server's address space: browse names, node ids in the nsu=<namespace URI>
form the config uses, classes, data types, this user's access and current values. With
--toml, print [machines.signals.<role>] tables for chosen nodes instead.

The connection is the agent's: -c agent.toml [SOURCE] takes url, security, client
certificate, trust and credentials from that source; without -c give the URL and the
same settings as flags. Exit codes: 0 shown, 2 bad arguments or config, 1 the server
could not be reached or has no such node."""

MACHINE_ROLES = ("state", "parts_total", "parts_bad", "parts_good", "power_kw")
METER_ROLES = ("energy_kwh",)
"""Roles a snippet can be for; ``power_kw`` goes to a machine (a meter has it too)."""

_NODE_ID_RE = re.compile(r"^(nsu=|ns=\d+;|[isgb]=)")
_ROLE_HINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("parts_bad", ("scrap", "reject", "bad", "defect", "nok")),
    ("parts_good", ("good",)),
    ("parts_total", ("part", "piece", "produced", "count")),
    ("energy_kwh", ("energy", "kwh")),
    ("power_kw", ("power",)),
    ("state", ("state", "status", "mode")),
)
_GENERIC_WORDS = frozenset({"urn", "http", "https", "www", "com", "org", "net", "ua"})
_MACHINE_STATES = "off, idle, producing, setup, unplanned_down, planned_down"


# -- names ------------------------------------------------------------------------


def namespace_aliases(ns_array: Sequence[str], given: Mapping[str, str]) -> dict[str, str]:
    """``{namespace URI: alias}`` for every namespace but 0.

    ``given`` (alias -> URI, a source's ``namespaces``) wins; others get the last word
    of their URI (``urn:factory-edge:simulator:cnc`` -> ``cnc``) or ``ns<index>`` when
    that word is generic, long or taken. Deterministic, so the same server always
    gets the same aliases.
    """
    out: dict[str, str] = {}
    used: set[str] = set()
    for alias, uri in given.items():
        if uri not in out:
            out[uri] = alias
        used.add(alias)
    for index, uri in enumerate(ns_array):
        if index == 0 or uri in out:
            continue
        words = [w for w in re.findall(r"[A-Za-z][A-Za-z0-9]*", uri)
                 if w.lower() not in _GENERIC_WORDS]
        alias = words[-1].lower() if words else ""
        if not alias or len(alias) > 16 or alias in used or re.fullmatch(r"ns\d+", alias):
            alias = f"ns{index}"
        while alias in used:
            alias += "_"
        out[uri] = alias
        used.add(alias)
    return out


def nsu_node_id(node_id: str, ns_array: Sequence[str]) -> str:
    """asyncua's ``ns=2;s=x`` as ``nsu=<URI of namespace 2>;s=x``; namespace 0 as is."""
    match = re.match(r"^ns=(\d+);(.*)$", node_id, re.S)
    if match is None:
        return node_id
    index = int(match.group(1))
    if index == 0:
        return match.group(2)
    if index >= len(ns_array):
        return node_id
    return f"nsu={ns_array[index]};{match.group(2)}"


def _qualified(ns: int, name: str, ns_array: Sequence[str], aliases: Mapping[str, str]) -> str:
    if ns == 0:
        return name
    uri = ns_array[ns] if ns < len(ns_array) else None
    alias = aliases.get(uri) if uri is not None else None
    return f"{alias or ns}:{name}"


def format_browse_path(elements: Sequence[tuple[int, str]], ns_array: Sequence[str],
                       aliases: Mapping[str, str]) -> str:
    """``Objects/cnc:Machines/...``: the config's ``browse_path`` syntax."""
    return "/".join(_qualified(ns, name, ns_array, aliases) for ns, name in elements)


def parse_browse_path(text: str, ns_array: Sequence[str],
                      aliases: Mapping[str, str]) -> list[tuple[int, str]]:
    """``Objects/cnc:Machines`` -> ``[(0, "Objects"), (index of cnc, "Machines")]``.

    Like a signal's ``browse_path`` it starts below the Root folder; an element's prefix
    is an alias from ``aliases`` (URI -> alias) or a namespace index; none means
    namespace 0. InputError for an unknown alias, naming the known ones.
    """
    by_alias = {alias: uri for uri, alias in aliases.items()}
    out: list[tuple[int, str]] = []
    for element in text.strip().strip("/").split("/"):
        if not element:
            raise InputError(f"--path {text!r}: empty element")
        prefix, sep, name = element.partition(":")
        if not sep:
            out.append((0, element))
            continue
        if not name:
            raise InputError(f"--path {text!r}: element {element!r} has no name")
        if prefix.isdigit():
            out.append((int(prefix), name))
        elif prefix in by_alias and by_alias[prefix] in ns_array:
            out.append((list(ns_array).index(by_alias[prefix]), name))
        else:
            known = ", ".join(f"{a} = {u}" for u, a in aliases.items() if u in ns_array)
            raise InputError(f"--path {text!r}: unknown namespace alias {prefix!r} "
                             f"(this server's: {known or 'none'})")
    return out


def guess_role(browse_name: str) -> str | None:
    """The role a node's browse name suggests (``PartsScrapInLifetime`` -> parts_bad)."""
    lowered = browse_name.lower()
    for role, words in _ROLE_HINTS:
        if any(word in lowered for word in words):
            return role
    return None


# -- output ------------------------------------------------------------------------


def render_tree(root: NodeView, ns_array: Sequence[str], aliases: Mapping[str, str]
                ) -> list[str]:
    """The tree as aligned rows: node, class, type, access, value, node id."""
    rows: list[list[str]] = []
    footnotes: set[str] = set()

    def add(node: NodeView, prefix: str, branch: str) -> None:
        name = branch + _qualified(node.name_ns, node.name, ns_array, aliases)
        if node.below:
            name += f" [+{node.below}{'+' if node.more_capped else ''}]"
            footnotes.add("below")
        if node.note:
            name += f" ({node.note})"
        rows.append([name, node.node_class, node.data_type or "", node.access or "",
                     node.value if node.value is not None else "",
                     nsu_node_id(node.node_id, ns_array)])
        kids = node.children
        for i, child in enumerate(kids):
            last = i == len(kids) - 1 and not node.more
            add(child, prefix + ("   " if last else "│  "), prefix + ("└─ " if last else "├─ "))
        if node.more:
            rows.append([prefix + f"└─ … {node.more}{'+' if node.more_capped else ''} more "
                         "(--max-nodes)", "", "", "", "", ""])

    add(root, "", "")
    lines = format_table(["node", "class", "type", "access", "value", "node id"], rows)
    if "below" in footnotes:
        lines.append("[+N]: N children below --depth (browse deeper, or start there with "
                     "--path)")
    return lines


def _header(url: str, ns_array: Sequence[str], aliases: Mapping[str, str]) -> list[str]:
    lines = [f"{url}: namespaces (alias = URI)"]
    for index, uri in enumerate(ns_array):
        alias = aliases.get(uri, "") if index else "(none)"
        lines.append(f"  {index:>2}  {alias} = {uri}")
    return lines


@dataclass(frozen=True, slots=True)
class Snippet:
    """One node chosen for ``--toml``: what the signal table is built from."""

    role: str
    guessed: bool
    node_id: str
    browse_path: str | None
    browse_name: str
    node_class: str
    data_type: str | None
    value: str | None
    access: str | None
    namespaces: dict[str, str] = field(default_factory=dict)
    """alias -> URI the browse path needs."""


def toml_snippets(snippets: Sequence[Snippet], source_id: str, *,
                  source_block: Mapping[str, Any] | None = None,
                  configured_aliases: Mapping[str, str] | None = None) -> list[str]:
    """TOML lines to paste: one signal table per node, then the source's table (when the
    connection did not come from a config); hints only the operator can settle (the
    state map, units, a guessed role) are comments."""
    lines: list[str] = []
    needed: dict[str, str] = {}
    for snip in snippets:
        needed.update(snip.namespaces)
    if source_block is None and configured_aliases is not None:
        missing = {a: u for a, u in needed.items() if configured_aliases.get(a) != u}
        if missing:
            lines.append(f"# The browse_path lines need namespaces {_toml_value(missing)} in "
                         f'source "{source_id}".')
            lines.append("")
    for snip in snippets:
        owner = "meters" if snip.role in METER_ROLES else "machines"
        facts = ", ".join(x for x in (snip.data_type, snip.access and f"access {snip.access}",
                                      snip.value is not None and f"value {snip.value}") if x)
        lines.append(f"# {snip.browse_name}: {facts}; under the [[{owner}]] entry it belongs to")
        if snip.guessed:
            lines.append(f"# role {snip.role!r} guessed from the browse name: check it")
        lines.append(f"[{owner}.signals.{snip.role}]")
        lines.append(f"source = {_toml_value(source_id)}")
        lines.append(f"node = {_toml_value(snip.node_id)}")
        if snip.browse_path is not None:
            lines.append(f"# browse_path = {_toml_value(snip.browse_path)}   (instead of node)")
        if snip.role == "state":
            lines.append('# map = { "<raw value>" = "<state>", ... }   (raw values as text; '
                         f"states: {_MACHINE_STATES})")
        elif snip.role == "power_kw":
            lines.append('# engineering_unit = "W"   (if the node reports W: the role is kW)')
        elif snip.role == "energy_kwh":
            lines.append('# engineering_unit = "Wh"   (if the node reports Wh: the role is '
                         "kWh)")
        lines.append("")
    if source_block is not None:
        # Last, so the whole output can be pasted below a [[machines]] entry: the signal
        # tables belong to it, and a [[sources]] entry may stand anywhere in the file.
        lines += ["# The source these signals read from:", "[[sources]]"]
        block = dict(source_block)
        block["namespaces"] = dict(sorted(needed.items()))
        for key, value in block.items():
            lines.append(f"{key} = {_toml_value(value)}")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _toml_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # A JSON string is a valid TOML basic string (same escapes for quotes, backslashes,
    # control characters).
    return json.dumps(str(value), ensure_ascii=False)


# -- arguments and settings ------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``browse`` subcommand's options (for ``agent/cli.py``)."""
    parser.add_argument("target", nargs="?", metavar="URL|SOURCE",
                        help="opc.tcp://host:port, or with -c the id of an OPC UA source "
                             "(default: the config's only one)")
    parser.add_argument("-c", "--config", type=Path, default=None,
                        help="agent config: url, security, certificate and credentials "
                             "from the source")
    parser.add_argument("--path", default="Objects",
                        help="start node: a browse path such as Objects/cnc:Machines, or a "
                             "node id (nsu=URI;s=..., i=85); default Objects")
    parser.add_argument("--depth", type=int, default=3,
                        help="levels below the start node (default 3)")
    parser.add_argument("--max-nodes", type=int, default=500,
                        help="nodes shown at most (default 500)")
    parser.add_argument("--toml", nargs="+", metavar="[ROLE=]NODE", default=None,
                        help="print signal tables for these nodes (node ids or browse "
                             "paths; ROLE one of " + ", ".join(MACHINE_ROLES + METER_ROLES)
                             + ", guessed from the name when left out) instead of the tree")
    parser.add_argument("--security", metavar="POLICY,MODE", default=None,
                        help="e.g. Basic256Sha256,SignAndEncrypt (default None,None)")
    parser.add_argument("--cert", type=Path, default=None, help="client certificate (DER/PEM)")
    parser.add_argument("--key", type=Path, default=None, help="its private key (PEM)")
    parser.add_argument("--trust-dir", type=Path, default=None,
                        help="directory of trusted server certificates")
    parser.add_argument("--server-thumbprint", action="append", default=[], metavar="SHA",
                        help="pin the server certificate (SHA-1 or SHA-256); may be repeated")
    parser.add_argument("--username", default=None)
    parser.add_argument("--password-env", metavar="VAR", default=None,
                        help="environment variable holding the password")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per request (default: the source's timeout_s, or 5)")


_CONNECTION_FLAGS = ("security", "cert", "key", "trust_dir", "username", "password_env")


def _spec_from_flags(args: argparse.Namespace) -> OpcUaSourceSpec:
    from agent.config.common import resolve_secret
    from collectors.opcua import OpcUaSourceSpec
    from collectors.opcua import security as sec

    policy, mode = "None", "None"
    if args.security is not None:
        policy, sep, mode = args.security.partition(",")
        if not sep:
            raise InputError(f"--security {args.security!r}: give POLICY,MODE, e.g. "
                             "Basic256Sha256,SignAndEncrypt")
        if policy != "None":
            try:
                sec.policy_class(policy)
            except ConfigError:
                raise InputError(f"--security: unknown policy {policy!r}; known: None, "
                                 f"{', '.join(sec.POLICIES)}") from None
        if mode not in ("None", "Sign", "SignAndEncrypt"):
            raise InputError(f"--security: unknown mode {mode!r}; known: None, Sign, "
                             "SignAndEncrypt")
        if (policy == "None") != (mode == "None"):
            raise InputError("--security: policy and mode must both be None or both be set")
    secure = mode != "None"
    if secure and (args.cert is None or args.key is None):
        raise InputError("--security with a secure mode needs --cert and --key (the agent's "
                         "client certificate; 'edge-agent certs' creates one)")
    if not secure and (args.cert or args.key or args.trust_dir or args.server_thumbprint):
        raise InputError("--cert, --key, --trust-dir and --server-thumbprint need --security")
    for thumb in args.server_thumbprint:
        try:
            sec.normalize_thumbprint(thumb)
        except ValueError as err:
            raise InputError(f"--server-thumbprint: {err}") from None
    try:
        password = resolve_secret(None, args.password_env, "--password-env")
    except ValueError as err:
        raise InputError(str(err)) from None
    return OpcUaSourceSpec(
        id=_source_id_for(args.target), url=args.target, tags=(),
        timeout_s=args.timeout if args.timeout is not None else 5.0,
        username=args.username, password=password, security_policy=policy,
        security_mode=mode, certificate=args.cert, private_key=args.key,
        trust_dir=args.trust_dir, server_thumbprints=tuple(args.server_thumbprint))


def _source_id_for(url: str) -> str:
    host = re.sub(r"^opc\.tcp://", "", url).split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return "opcua-" + (re.sub(r"[^A-Za-z0-9_.\-]+", "-", host).strip("-") or "server")


def _spec_from_config(path: Path, source_id: str | None, timeout: float | None
                      ) -> tuple[OpcUaSourceSpec, dict[str, str]]:
    """The source's connection as the agent builds it, plus its namespace aliases.

    Only the ``[agent]`` section and that one source are validated, so a config still
    being written (machines without all their roles yet) can be used to browse.
    """
    from pydantic import ValidationError

    from agent.config.common import resolve_secret
    from agent.config.load import read_toml, validation_errors
    from agent.config.model import AgentSection, OpcUaSourceSection
    from collectors.opcua import OpcUaSourceSpec

    raw = read_toml(path)
    sources = raw.get("sources", [])
    if not isinstance(sources, list):
        raise ConfigError([("sources", "must be a list of tables ([[sources]])")],
                          source=str(path))
    candidates = [(i, s) for i, s in enumerate(sources)
                  if isinstance(s, dict) and s.get("type") == "opcua"]
    if source_id is not None:
        chosen = [(i, s) for i, s in candidates if s.get("id") == source_id]
        if not chosen:
            ids = ", ".join(str(s.get("id")) for _, s in candidates) or "none"
            raise ConfigError([("sources", f"no OPC UA source {source_id!r} (OPC UA sources: "
                                f"{ids})")], source=str(path))
    elif len(candidates) != 1:
        ids = ", ".join(str(s.get("id")) for _, s in candidates) or "none"
        raise ConfigError([("sources", f"name the OPC UA source to browse (OPC UA sources: "
                            f"{ids})")], source=str(path))
    else:
        chosen = candidates
    index, body = chosen[0]
    try:
        src = OpcUaSourceSection.model_validate(body)
    except ValidationError as err:
        where = f'sources[{index}] "{body.get("id")}"'
        problems = [(f"{where}: {place}" if place else where, msg)
                    for place, msg in validation_errors(body, err)]
        raise ConfigError(problems, source=str(path)) from None
    try:
        agent = AgentSection.model_validate(raw.get("agent", {}))
    except ValidationError as err:
        problems = [(f"agent.{place}" if place else "agent", msg)
                    for place, msg in validation_errors(raw.get("agent"), err)]
        raise ConfigError(problems, source=str(path)) from None
    pki_dir = src.pki_dir
    if pki_dir is None and src.security_mode != "None":
        pki_dir = agent.state_dir / "pki" / src.id
    try:
        password = resolve_secret(None, src.password_env, f"sources {src.id} password_env")
    except ValueError as err:
        raise ConfigError([(f'sources[{index}] "{src.id}"', str(err))], source=str(path)) \
            from None
    spec = OpcUaSourceSpec(
        id=src.id, url=src.url, tags=(), namespaces=dict(src.namespaces),
        timeout_s=timeout if timeout is not None else src.timeout_s,
        session_timeout_s=src.session_timeout_s, username=src.username, password=password,
        security_policy=src.security_policy, security_mode=src.security_mode,
        pki_dir=pki_dir, certificate=src.certificate, private_key=src.private_key,
        application_uri=src.application_uri, trust_dir=src.trust_dir,
        server_thumbprints=tuple(src.server_thumbprints))
    return spec, dict(src.namespaces)


def _parse_toml_args(items: Sequence[str]) -> list[tuple[str | None, str]]:
    roles = MACHINE_ROLES + METER_ROLES
    out: list[tuple[str | None, str]] = []
    for item in items:
        prefix, sep, rest = item.partition("=")
        if sep and prefix in roles:
            if not rest:
                raise InputError(f"--toml {item!r}: no node after {prefix}=")
            out.append((prefix, rest))
        elif sep and re.fullmatch(r"[a-z_]+", prefix) and not _NODE_ID_RE.match(item):
            raise InputError(f"--toml {item!r}: unknown role {prefix!r}; roles: "
                             f"{', '.join(roles)}")
        else:
            out.append((None, item))
    return out


def _check(args: argparse.Namespace) -> None:
    if args.depth < 0 or args.depth > 50:
        raise InputError("--depth: give 0..50 levels")
    if not 1 <= args.max_nodes <= 100_000:
        raise InputError("--max-nodes: give 1..100000")
    if args.timeout is not None and not 0 < args.timeout <= 120:
        raise InputError("--timeout: give 0 < seconds <= 120")
    if args.config is None:
        if args.target is None:
            raise InputError("give the server's opc.tcp://host:port URL, or -c agent.toml")
        if not re.match(r"^opc\.tcp://[^/\s:]+(:\d+)?(/\S*)?$", args.target) \
                and not re.match(r"^opc\.tcp://\[[0-9A-Fa-f:.]+\](:\d+)?(/\S*)?$", args.target):
            raise InputError(f"{args.target!r} is not an opc.tcp://host:port URL")
    else:
        if args.target is not None and args.target.startswith("opc.tcp://"):
            raise InputError("with -c give the source id, not a URL (the URL comes from the "
                             "source)")
        given = [f"--{name.replace('_', '-')}" for name in _CONNECTION_FLAGS
                 if getattr(args, name)] + (["--server-thumbprint"]
                                            if args.server_thumbprint else [])
        if given:
            raise InputError(f"{', '.join(given)}: with -c the connection settings come from "
                             "the source")


# -- running -------------------------------------------------------------------------


async def _start_node(session: Session, text: str, aliases: Mapping[str, str]) -> NodeView:
    if _NODE_ID_RE.match(text.strip()):
        try:
            nodeid = session.parse_node_id(text)
        except ValueError as err:
            raise InputError(str(err)) from None
        except LookupError as err:
            raise DeviceError(str(err)) from None
    else:
        elements = parse_browse_path(text, session.ns_array, aliases)
        try:
            nodeid = await session.resolve_path(elements, text)
        except LookupError as err:
            raise DeviceError(str(err)) from None
    try:
        return await session.node(nodeid)
    except LookupError as err:
        raise DeviceError(str(err)) from None


async def _snippet(session: Session, role: str | None, text: str,
                   aliases: Mapping[str, str]) -> Snippet:
    view = await _start_node(session, text, aliases)
    ns = session.ns_array
    if view.node_class != "Variable":
        raise InputError(f"--toml {text!r}: {view.name!r} is not a Variable but "
                         f"{view.node_class}: a signal reads a variable's value")
    guessed = role is None
    if role is None:
        role = guess_role(view.name)
        if role is None:
            raise InputError(f"--toml {text!r}: cannot tell the role of {view.name!r} from its "
                             f"name; give it as ROLE=NODE (roles: "
                             f"{', '.join(MACHINE_ROLES + METER_ROLES)})")
    elements = await session.path_of(view.nodeid)
    path = format_browse_path(elements, ns, aliases) if elements else None
    needed = {aliases[ns[i]]: ns[i] for i, _ in elements or [] if 0 < i < len(ns)}
    return Snippet(role, guessed, nsu_node_id(view.node_id, ns), path,
                   _qualified(view.name_ns, view.name, ns, aliases), view.node_class,
                   view.data_type, view.value, view.access, needed)


async def _browse(args: argparse.Namespace, spec: OpcUaSourceSpec,
                  configured: dict[str, str] | None, out: TextIO) -> None:
    from agent.commission.opcua_walk import connect

    async with connect(spec) as session:
        aliases = namespace_aliases(session.ns_array, configured or {})
        if args.toml is not None:
            snippets = [await _snippet(session, role, text, aliases)
                        for role, text in _parse_toml_args(args.toml)]
            block = None
            if configured is None:
                block = {"id": spec.id, "type": "opcua", "url": spec.url}
                if spec.secure:
                    block.update({"security_policy": spec.security_policy,
                                  "security_mode": spec.security_mode})
            lines = toml_snippets(snippets, spec.id, source_block=block,
                                  configured_aliases=configured)
        else:
            root = await _start_node(session, args.path, aliases)
            shown = await session.walk(root, args.depth, args.max_nodes)
            lines = _header(spec.url, session.ns_array, aliases)
            lines.append("")
            lines += render_tree(root, session.ns_array, aliases)
            lines.append(f"{shown} node{'s' if shown != 1 else ''} shown (--depth "
                         f"{args.depth}, --max-nodes {args.max_nodes})")
    for line in lines:
        print(line, file=out)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run with the namespace parsed by :func:`add_arguments`."""
    stdout, stderr = out or sys.stdout, err or sys.stderr
    try:
        _check(args)
        if args.toml is not None:
            _parse_toml_args(args.toml)
        if args.config is not None:
            spec, configured = _spec_from_config(args.config, args.target, args.timeout)
        else:
            spec, configured = _spec_from_flags(args), None
        asyncio.run(_browse(args, spec, configured, stdout))
    except ConfigError as exc:
        print(exc.render(), file=stderr)
        return EXIT_USAGE
    except InputError as exc:
        print(f"edge-agent browse: {exc}", file=stderr)
        return EXIT_USAGE
    except DeviceError as exc:
        print(f"edge-agent browse: {' '.join(str(exc).split())}", file=stderr)
        return EXIT_RUNTIME
    return EXIT_OK
