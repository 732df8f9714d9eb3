"""A secure asyncua server for the collector's security tests (loopback, free port)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.node import Node
from asyncua.crypto.cert_gen import generate_private_key, generate_self_signed_app_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

CNC_NS = "urn:factory-edge:simulator:cnc"

POLICY_TYPES = {
    ("Basic256Sha256", "SignAndEncrypt"): ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ("Basic256Sha256", "Sign"): ua.SecurityPolicyType.Basic256Sha256_Sign,
    ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"):
        ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ("Aes256_Sha256_RsaPss", "Sign"): ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ("Aes256_Sha256_RsaPss", "SignAndEncrypt"):
        ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
}


class _Users(UserManager):
    """One user name and password; anonymous sessions are refused."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.logins: list[str] = []

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is not None and self.users.get(username) == password:
            self.logins.append(username)
            return User(role=UserRole.User, name=username)
        return None


def make_server_cert(directory: Path, uri: str = "urn:test:secure-cnc") -> tuple[Path, Path]:
    """A self-signed server certificate (DER) and key (PEM) for 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    key = generate_private_key()
    cert = generate_self_signed_app_certificate(
        key, "secure-cnc", {"organizationName": "test"},
        [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")],
        extended=[ExtendedKeyUsageOID.SERVER_AUTH], days=30)
    cert_path, key_path = directory / "server-cert.der", directory / "server-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class SecureServer:
    """The running server, its certificate and the variables tests write."""

    server: Server
    url: str
    cert_path: Path
    users: _Users
    parts: Node
    power: Node

    async def stop(self) -> None:
        await self.server.stop()


async def start_secure_server(
    port: int,
    directory: Path,
    policies: list[tuple[str, str]],
    users: dict[str, str] | None = None,
) -> SecureServer:
    """Serve ``Machines/cnc-01/PartsProducedInLifetime`` and ``.../Power`` over the given
    (policy, mode) pairs only, with user/password identity when ``users`` is given."""
    user_manager = _Users(users or {})
    server = Server(user_manager=user_manager if users else None)
    await server.init()
    url = f"opc.tcp://127.0.0.1:{port}/"
    server.set_endpoint(url)
    server.set_security_policy([POLICY_TYPES[p] for p in policies])
    if users:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    cert_path, key_path = make_server_cert(directory)
    await server.load_certificate(str(cert_path))
    await server.load_private_key(str(key_path))
    ns = await server.register_namespace(CNC_NS)
    folder = await server.nodes.objects.add_folder(ua.NodeId("Machines", ns),
                                                   ua.QualifiedName("Machines", ns))
    machine = await folder.add_object(ua.NodeId("cnc-01", ns), ua.QualifiedName("cnc-01", ns))
    parts = await machine.add_variable(ua.NodeId("cnc-01.Parts", ns),
                                       ua.QualifiedName("PartsProducedInLifetime", ns),
                                       ua.Variant(7, ua.VariantType.UInt32))
    power = await machine.add_variable(ua.NodeId("cnc-01.Power", ns),
                                       ua.QualifiedName("Power", ns),
                                       ua.Variant(0.0, ua.VariantType.Double))
    await server.start()
    return SecureServer(server, url, cert_path, user_manager, parts, power)
