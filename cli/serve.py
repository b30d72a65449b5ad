"""``tdc serve``: the console, the HTTP receiver and /metrics, served by Uvicorn; and
``tdc serve --hash-password``, which makes the hashes ``TDC_WEB_USERS`` takes."""

from __future__ import annotations

import argparse
import getpass
import sys


def cmd_serve(args: argparse.Namespace) -> int:
    if args.hash_password:
        return _hash_password()
    import uvicorn

    from settings import get_settings
    from web.app import create_app

    settings = get_settings()
    app = create_app()
    print(f"tdc serve: console at http://{args.host}:{args.port}/ ({len(settings.web_users)} users), "
          f"receiver for {len(settings.receiver_tokens)} sources, /metrics "
          f"{'on' if settings.metrics_token else 'off (TDC_METRICS_TOKEN is not set)'}", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, proxy_headers=args.proxy_headers,
                forwarded_allow_ips=args.forwarded_allow_ips, server_header=False)
    return 0


def _hash_password() -> int:
    from web.auth import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if password != getpass.getpass("again: "):
            print("tdc: the two passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("tdc: a password may not be empty", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "serve", help="the web console, the HTTP receiver and /metrics",
        description="Console users come from TDC_WEB_USERS (NAME:HASH,...; make a hash with --hash-password), "
                    "receiver tokens from TDC_RECEIVER_TOKENS (SOURCE=TOKEN,...), the metrics token from "
                    "TDC_METRICS_TOKEN, the session key from TDC_WEB_SECRET.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--proxy-headers", action="store_true",
                        help="trust X-Forwarded-* from --forwarded-allow-ips (behind a TLS-terminating proxy)")
    parser.add_argument("--forwarded-allow-ips", default="127.0.0.1")
    parser.add_argument("--hash-password", action="store_true",
                        help="read a password (prompted, or one line of stdin) and print its hash for TDC_WEB_USERS")
    parser.set_defaults(run=cmd_serve)
