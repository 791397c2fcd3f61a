"""``python -m m365sim``: run the simulator until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from m365sim.config import ConfigError
from m365sim.server import ServerOptions, serve


def parse_args(argv: list[str] | None = None) -> ServerOptions:
    parser = argparse.ArgumentParser(prog="python -m m365sim", description="Local Microsoft 365 simulator (HTTPS)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--state-dir", default=".sim", help="CA, certificates, sim.json (default .sim)")
    parser.add_argument("--config", default=None, help="scenario JSON (default: built-in scenario)")
    parser.add_argument("--seed", type=int, default=None, help="override the scenario seed")
    args = parser.parse_args(argv)
    return ServerOptions(
        host=args.host,
        port=args.port,
        state_dir=Path(args.state_dir),
        config_file=Path(args.config) if args.config else None,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    options = parse_args(argv)
    try:
        asyncio.run(serve(options))
    except (ConfigError, json.JSONDecodeError, OSError) as exc:
        print(f"m365sim: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
