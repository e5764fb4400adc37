"""The production NATS credentials: a password file per user, bcrypt hashes for the nodes.

``labelloop secrets DIR`` writes, for ``docker-compose.yml``:

* ``nats_<name>_password``: one random password per NATS user (the services, ``producer``,
  ``operator``, ``system``), mounted as a compose secret into the one container that logs in
  with it (``LABELLOOP_NATS_PASSWORD_FILE``);
* ``nats_route_password``: what the cluster's nodes present to each other on their routes;
* ``nats/accounts.conf``: the production users and permissions (what ``infra/nats/accounts.conf``
  holds, from the same code) with each password as its bcrypt hash, so a node holds no password
  (nats-server resolves no ``$VARIABLE`` across include files, so the hashes are written in);
* ``nats/routes.conf``: the route user (its password hashed) and the routes to every node with
  the route password, included in the ``cluster`` block of ``nats-prod.conf``.

Passwords that exist are kept (a rerun never rotates them behind a running deployment); the
hashes are derived again from them on every run.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

import bcrypt

from labelloop.streams import Namespace
from labelloop_console.permissions import PASSWORD_VARIABLES, accounts_conf

__all__ = ["COMPOSE_ROUTES", "ROUTE_USER", "password_file", "write_credentials"]

COMPOSE_ROUTES = ("nats-1:6222", "nats-2:6222", "nats-3:6222")
"""The cluster's route addresses in ``docker-compose.yml``."""

ROUTE_USER = "route"
_COST = 11  # bcrypt work factor: ~0.1 s a check on this class of machine, once per connection


def password_file(variable: str) -> str:
    """``NATS_BRIDGE_PASSWORD`` -> ``nats_bridge_password``: the file (and compose secret)."""
    return variable.lower()


def write_credentials(
    directory: Path, routes: Sequence[str] = COMPOSE_ROUTES, namespace: str = "labelloop"
) -> list[Path]:
    """Write the credentials into ``directory``; returns the password files it created."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # the files inside are readable: containers read them as other users
    nodes = directory / "nats"
    nodes.mkdir(mode=0o700, exist_ok=True)
    created: list[Path] = []
    accounts = accounts_conf(Namespace(namespace))
    for variable in PASSWORD_VARIABLES.values():
        password = _password(directory / password_file(variable), created)
        reference = re.compile(rf"password: \${variable}\b")
        accounts, count = reference.subn(f'password: "{_hash(password)}"', accounts)
        assert count == 1, f"accounts.conf names {variable} once"
    _write(
        nodes / "accounts.conf",
        "# Written by `labelloop secrets`: the passwords are bcrypt hashes.\n" + accounts,
    )
    route = _password(directory / "nats_route_password", created)
    urls = "".join(f"  nats-route://{ROUTE_USER}:{route}@{address}\n" for address in routes)
    _write(
        nodes / "routes.conf",
        "# Route authentication (labelloop secrets), included in nats-prod.conf's cluster block:"
        " a node accepts routes that present the route password, and presents it to the others."
        f'\nauthorization {{\n  user: {ROUTE_USER}\n  password: "{_hash(route)}"\n}}\n'
        f"routes: [\n{urls}]\n",
    )
    return created


def _password(path: Path, created: list[Path]) -> str:
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    password = secrets.token_hex(24)
    _write(path, password + "\n")
    created.append(path)
    return password


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(_COST)).decode()


def _write(path: Path, text: str) -> None:
    """Readable by every user (a container's user reads its bind-mounted secret); the directory
    (0700) is what keeps them from the host's other users."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.chmod(temporary, 0o644)
    temporary.replace(path)
