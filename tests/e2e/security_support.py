"""A nats-server with the production users and permissions (``infra/nats/accounts.conf``).

Shared by the security tests: the server on loopback with a password per user, provisioned by the
operator as the compose ``provision`` job does (the services' users may not create streams).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from labelloop.natsserver import EmbeddedNats
from labelloop_console.credentials import password_file, write_credentials
from labelloop_console.permissions import PASSWORD_VARIABLES

ACCOUNTS = Path(__file__).resolve().parents[2] / "infra" / "nats" / "accounts.conf"
NS = "labelloop"  # accounts.conf names the default namespace's subjects
USERS = PASSWORD_VARIABLES
PASSWORDS = {var: f"pw-{user}-9c1e7d{len(user)}" for user, var in USERS.items()}


def node_secrets(folder: Path, routes: Sequence[str]) -> Path:
    """What ``labelloop secrets`` writes for the nodes, for :data:`PASSWORDS` and these routes:
    the folder nats-prod.conf includes (``./secrets``), to copy beside each node's config."""
    credentials = folder / "credentials"
    credentials.mkdir(mode=0o700, parents=True)
    for variable, password in PASSWORDS.items():  # kept by write_credentials: it hashes these
        (credentials / password_file(variable)).write_text(password, encoding="utf-8")
    write_credentials(credentials, routes)
    return credentials / "nats"


def secured_server(folder: Path) -> EmbeddedNats:
    """Start the server in ``folder`` (its log in ``folder/nats.log``) and provision it."""
    shutil.copy(ACCOUNTS, folder / "accounts.conf")
    config = folder / "nats.conf"
    config.write_text(
        "server_name: security-test\nmax_payload: 8MB\ninclude ./accounts.conf\n", encoding="utf-8"
    )
    server = EmbeddedNats(
        config_file=config,
        store_dir=folder / "js",
        log_file=folder / "nats.log",
        env=PASSWORDS,  # nats-server substitutes $NATS_..._PASSWORD from its environment
    ).start()
    try:
        provision(server.url)
    except RuntimeError:
        server.cleanup()
        raise
    return server


def provision(nats_url: str, *, replicas: int = 1) -> None:
    """What the compose ``provision`` job does: ``labelloop-service --provision`` as the operator
    (the services' users may not create streams)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
    env.update(
        {
            "LABELLOOP_NATS_USER": "operator",
            "LABELLOOP_NATS_PASSWORD": PASSWORDS[USERS["operator"]],
            "LABELLOOP_NATS_URL": nats_url,
            "LABELLOOP_NAMESPACE": NS,
            "LABELLOOP_STREAM_REPLICAS": str(replicas),
        }
    )
    binary = str(Path(sys.executable).parent / "labelloop-service")
    done = subprocess.run([binary, "--provision"], env=env, capture_output=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"provisioning failed: {done.stderr.decode(errors='replace')}")


def url_for(server: EmbeddedNats, user: str) -> str:
    return f"nats://{user}:{PASSWORDS[USERS[user]]}@127.0.0.1:{server.port}"
