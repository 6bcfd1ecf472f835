"""The ``sight-core`` command: ``doctor``, ``demo``, ``servers``, ``bench`` and ``audit``.

Exit codes: 0 success, 1 a check or rule failed, 2 bad usage or configuration, 130 interrupted
(Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from sight_core.errors import ConfigurationError

__all__ = ["main"]


_SERVICES = ("postgres", "redis", "neo4j", "llm")


def _print_checks(results: Sequence[object]) -> bool:
    """One line per service; a failure's line names the variable that configures it."""
    from sight_core.health import SERVICE_VARIABLES, CheckResult

    healthy = True
    for result in results:
        assert isinstance(result, CheckResult)
        if result.ok:
            latency = f"{result.latency_ms:7.1f} ms" if result.latency_ms else "       -  "
            print(f"  ok    {result.service:<9} {latency}  {result.version}  ({result.target})")
        else:
            healthy = False
            error = " ".join(str(result.error).split())  # one line, whatever the driver said
            print(
                f"  FAIL  {result.service:<9} {error} ({result.target}); "
                f"set {SERVICE_VARIABLES[result.service]} or --skip {result.service}"
            )
    return healthy


def _skipped(values: Sequence[str] | None) -> set[str]:
    names = {n.strip() for v in values or () for n in v.split(",") if n.strip()}
    unknown = sorted(names - set(_SERVICES))
    if unknown:
        raise ConfigurationError(
            f"--skip {','.join(unknown)}: unknown service; accepted: {', '.join(_SERVICES)}"
        )
    return names


def _doctor(args: argparse.Namespace) -> int:
    from sight_core.health import run_checks
    from sight_core.settings import PLATFORM_ENV_ALIASES, SightSettings

    class PlatformSettings(SightSettings):
        env_aliases = PLATFORM_ENV_ALIASES

    skip = _skipped(args.skip)
    settings = PlatformSettings() if args.platform_aliases else SightSettings()
    if not args.quiet:
        print("effective configuration (secrets masked):")
        print(json.dumps(settings.redacted(), indent=2, default=str))
    print("services:" + (f" (skipped: {', '.join(sorted(skip))})" if skip else ""))
    results = asyncio.run(run_checks(settings, timeout=args.timeout, skip=skip))
    healthy = _print_checks(results)
    if not healthy:
        failed = ", ".join(r.service for r in results if not r.ok)
        print(f"unhealthy: {failed}", file=sys.stderr)
    return 0 if healthy else 1


def _demo(args: argparse.Namespace) -> int:
    from sight_core._demo import run_demo

    return run_demo(
        provider=args.provider,
        external=args.external,
        personas=args.personas,
        latency=args.latency,
    )


def _servers(args: argparse.Namespace) -> int:
    from sight_core._demo import run_servers

    return run_servers()


def _bench(args: argparse.Namespace) -> int:
    from sight_core._bench import run_bench

    return run_bench(areas=args.area, quick=args.quick, as_json=args.json)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sight-core", description="Sight platform infrastructure: checks, demo, benchmarks."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    doctor = sub.add_parser(
        "doctor", help="show settings; check PostgreSQL, Redis, Neo4j and the LLM key"
    )
    doctor.add_argument("--timeout", type=float, default=3.0, help="seconds per service check")
    doctor.add_argument("--quiet", action="store_true", help="don't print the configuration")
    doctor.add_argument(
        "--skip",
        action="append",
        metavar="SERVICE",
        help=f"don't check a service your app does not use ({', '.join(_SERVICES)}); "
        "repeat or comma-separate",
    )
    doctor.add_argument(
        "--platform-aliases",
        action="store_true",
        help="also read DATABASE_URL, REDIS_URL, NEO4J_URI and GOOGLE_API_KEY, as a service "
        "whose settings set env_aliases = PLATFORM_ENV_ALIASES does",
    )
    doctor.set_defaults(handler=_doctor)

    demo = sub.add_parser("demo", help="run the end-to-end scenario on embedded servers")
    demo.add_argument("--provider", choices=("fake", "google"), default="fake")
    demo.add_argument(
        "--external",
        action="store_true",
        help="use the servers configured by SIGHT_* settings instead of starting embedded ones",
    )
    demo.add_argument("--personas", type=int, default=20)
    demo.add_argument(
        "--latency", type=float, default=2.0, help="fake model latency per call, seconds"
    )
    demo.set_defaults(handler=_demo)

    servers = sub.add_parser(
        "servers",
        help="start embedded PostgreSQL, Redis and Bolt; print the export SIGHT_... lines",
    )
    servers.set_defaults(handler=_servers)

    bench = sub.add_parser("bench", help="run the benchmarks/ suite and print ratio tables")
    bench.add_argument("area", nargs="*", help="areas to run (default: all)")
    bench.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    bench.add_argument("--json", action="store_true", help="print JSON rows")
    bench.set_defaults(handler=_bench)

    audit = sub.add_parser(
        "audit", help="find performance anti-patterns in a service tree", add_help=False
    )
    audit.add_argument("rest", nargs=argparse.REMAINDER)
    audit.set_defaults(handler=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sight-core`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["audit"]:
        from sight_core.audit import main as audit_main

        return audit_main(args_list[1:])
    args = _parser().parse_args(args_list)
    try:
        code: int = args.handler(args)
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the commands clean up on the way out; no traceback
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
