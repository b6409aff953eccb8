"""`python -m services.gateway`: the REST gateway alone, configured from the environment
(HTTP_PORT, SCRIPTS_ADDR, WATCHER_ADDR, ...; see settings.py).

`python -m services.gateway tokens create --identity alice [--admin] | list | revoke ID`
administers API tokens in MONGODB_URI's api_tokens collection (services/gateway/tokens.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from cadpipe.adapters import mongo
from cadpipe.callers import InvalidIdentity
from cadpipe.grpc_server import serve_until_signalled
from cadpipe.logs import configure_logging
from cadpipe.settings import LoggingSettings, MongoSettings, load_settings
from services.gateway.bootstrap import start
from services.gateway.settings import Settings
from services.gateway.tokens import MongoTokens


class TokensSettings(MongoSettings, LoggingSettings):
    """What the tokens command reads: the gateway's MongoDB (MONGODB_URI, required here)."""


def tokens(args: argparse.Namespace) -> int:
    """The admin command's output is its product: written to stdout, not logged."""
    settings = load_settings(TokensSettings, "gateway-tokens")
    client, db = mongo.connect(settings)
    try:
        store = MongoTokens(db)
        store.ensure_indexes()
        if args.action == "create":
            try:
                token, stored = store.create(args.identity, admin=args.admin)
            except InvalidIdentity as error:
                sys.stderr.write(f"--identity: {error}\n")
                return 2
            sys.stdout.write(
                f"{token}\n"
                f"# token id {stored.token_id} for {stored.identity}"
                f"{' (admin)' if stored.admin else ''}: shown once, stored hashed\n"
            )
        elif args.action == "list":
            for item in store.list():
                sys.stdout.write(
                    f"{item.token_id}\t{item.identity}\t{'admin' if item.admin else 'user'}\t"
                    f"{item.created_at.isoformat()}\t{'revoked' if item.revoked else 'active'}\n"
                )
        elif not store.revoke(args.token_id):
            sys.stderr.write(f"no token has the id {args.token_id!r}\n")
            return 1
        else:
            sys.stdout.write(f"revoked {args.token_id}\n")
        return 0
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.gateway")
    commands = parser.add_subparsers(dest="command")
    admin = commands.add_parser("tokens", help="create, list or revoke API tokens (MONGODB_URI)")
    actions = admin.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new token, printed once")
    create.add_argument("--identity", required=True, help="who the token speaks for")
    create.add_argument("--admin", action="store_true", help="may call admin routes")
    actions.add_parser("list", help="every token's id, identity, role, creation, state")
    revoke = actions.add_parser("revoke", help="refuse a token from now on")
    revoke.add_argument("token_id")
    args = parser.parse_args()
    if args.command == "tokens":
        configure_logging("gateway-tokens")
        sys.exit(tokens(args))
    configure_logging("gateway")
    asyncio.run(serve_until_signalled(start(load_settings(Settings, "gateway"))))


if __name__ == "__main__":
    main()
