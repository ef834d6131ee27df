"""`nabla serve`: run the service with uvicorn."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nabla", description="Nabla, gradients as a service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service (settings also from NABLA_* variables)")
    serve.add_argument("--host", help="address to listen on (NABLA_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (NABLA_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (NABLA_WORKERS, default 1)")
    args = parser.parse_args(argv)

    # Command-line flags win over the environment; workers read the same variables.
    for name in ("host", "port", "workers"):
        value = getattr(args, name)
        if value is not None:
            os.environ[f"NABLA_{name.upper()}"] = str(value)
    from service.server import serve
    from service.settings import Settings

    serve(Settings())
    return 0


if __name__ == "__main__":
    sys.exit(main())
