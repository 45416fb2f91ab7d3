"""``brandguard serve``: run the HTTP service with uvicorn; ``brandguard serve create-key ROLE``.

The CLI wires this in with :func:`add_arguments` and :func:`run`; ``python -m brandguard.serve``
works too. Every runtime knob is explicit (host, port, workers, threads) and overrides the
matching ``BRANDGUARD_*`` environment variable. The default host is loopback: exposing the
service is a deliberate choice.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Same meanings as brandguard.cli.main's exit codes (kept here so this module imports nothing heavy).
EXIT_OK, EXIT_USAGE, EXIT_ARTIFACT = 0, 2, 3

# CLI flag -> Settings field, for the values that override the environment.
_OVERRIDES = {"bundle": "bundle", "registry": "registry", "deployment": "deployment", "leads_db": "leads_db", "media_dir": "media_dir",
              "brand_info": "brand_info", "threads": "threads",
              "device": "device", "regions": "region_mode", "max_batch": "max_batch", "max_files": "max_files",
              "batch_window_ms": "batch_window_ms", "queue_size": "queue_size",
              "max_upload_bytes": "max_upload_bytes", "max_pixels": "max_pixels",
              "request_timeout": "request_timeout_s", "decode_threads": "decode_threads",
              "max_inflight": "max_inflight", "retry_after": "retry_after_s", "depth": "depth",
              "audit_share": "audit_share", "max_inflight_per_key": "max_inflight_per_key",
              "body_timeout": "body_timeout_s", "body_min_rate": "body_min_rate",
              "body_rate_grace": "body_rate_grace_s", "max_json_bytes": "max_json_bytes",
              "decode_budget_bytes": "decode_budget_bytes", "large_decode_bytes": "large_decode_bytes",
              "large_decode_threads": "large_decode_threads", "public_metrics": "public_metrics"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``brandguard serve`` (unset ones fall back to BRANDGUARD_* variables, then defaults)."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: loopback only)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes (default 1); each loads its own copy of the bundle")
    parser.add_argument("--threads", type=int, default=1,
                        help="ONNX Runtime / FAISS / OpenCV threads per worker (default 1)")
    parser.add_argument("--bundle", type=Path, default=None, help="indexed bundle folder [BRANDGUARD_BUNDLE]")
    parser.add_argument("--registry", type=Path, default=None,
                        help="model registry: serve its deployment's current version [BRANDGUARD_REGISTRY]")
    parser.add_argument("--deployment", default=None, help="registry deployment (default: default)")
    parser.add_argument("--leads-db", type=Path, default=None,
                        help="SQLite file of leads, complaints and API keys [BRANDGUARD_LEADS_DB]")
    parser.add_argument("--media-dir", type=Path, default=None,
                        help="thumbnails and originals of flagged listings (default: media/ beside --leads-db)")
    parser.add_argument("--brand-info", type=Path, default=None,
                        help='brands.json, as `brandguard scan --brand-info`: {brand: {"authorised_sellers": [...], '
                             '"reference_prices": {sku: price}, "default_price": p}}; a checked listing of an '
                             'authorised seller is not a lead, and leads get the same risk as scanned ones '
                             '[BRANDGUARD_BRAND_INFO]')
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--regions", choices=("full", "grid"), default=None)
    parser.add_argument("--depth", choices=("fast", "thorough", "auto"), default=None,
                        help="default depth of a check (default auto; see `brandguard scan --help`); a request "
                             "may send its own depth field")
    parser.add_argument("--audit-share", type=float, default=None,
                        help="auto depth: random share of other checks sent through the local stage")
    parser.add_argument("--max-batch", type=int, default=None, help="images per inference batch")
    parser.add_argument("--max-files", type=int, default=None, help="images per /v1/check/batch request")
    parser.add_argument("--batch-window-ms", type=float, default=None, help="how long a batch waits to fill")
    parser.add_argument("--queue-size", type=int, default=None, help="images waiting for inference before 503")
    parser.add_argument("--max-inflight", type=int, default=None,
                        help="images admitted at once (decode + queue + inference), counted once their request's "
                             "body has arrived; more → 503")
    parser.add_argument("--max-inflight-per-key", type=int, default=None,
                        help="requests of one API key inside at once, body upload included (default 8); more → 429")
    parser.add_argument("--retry-after", type=int, default=None, help="Retry-After seconds sent with 503 and 429")
    parser.add_argument("--body-timeout", type=float, default=None,
                        help="seconds a request body may take to arrive (default 30); longer → 408")
    parser.add_argument("--body-min-rate", type=int, default=None,
                        help="bytes/s a body must keep up after the grace period (default 4096; 0: none); "
                             "slower → 408")
    parser.add_argument("--body-rate-grace", type=float, default=None,
                        help="seconds before --body-min-rate applies (default 1)")
    parser.add_argument("--max-json-bytes", type=int, default=None, help="JSON request bodies; larger → 413")
    parser.add_argument("--decode-budget-bytes", type=int, default=None,
                        help="per request: header-declared decoded bytes of its images (default 768 MiB); images "
                             "past it are answered inconclusive (decode_budget)")
    parser.add_argument("--large-decode-bytes", type=int, default=None,
                        help="images declaring more decoded bytes than this (default 64 MiB) decode in their own lane")
    parser.add_argument("--large-decode-threads", type=int, default=None,
                        help="threads of the large-image decode lane (default 1)")
    parser.add_argument("--public-metrics", action=argparse.BooleanOptionalAction, default=None,
                        help="serve /metrics, /openapi.json, /docs and /readyz's details without a key (they show "
                             "model and index hashes, index size, request counts). Default: yes when --host is "
                             "loopback, otherwise an admin key is needed")
    parser.add_argument("--max-upload-bytes", type=int, default=None, help="per image; larger → 413")
    parser.add_argument("--max-pixels", type=int, default=None)
    parser.add_argument("--request-timeout", type=float, default=None, help="seconds to wait for a verdict, decoding included; longer → 504")
    parser.add_argument("--decode-threads", type=int, default=None, help="threads of the ordinary decode lane (default 2)")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    parser.add_argument("--no-access-log", action="store_true", help="no per-request JSON log lines")
    sub = parser.add_subparsers(dest="serve_command", metavar="ACTION")
    k = sub.add_parser("create-key", help="create an API key and print its token (shown only this once)",
                       description="Create an API key. ROLE is admin, scanner or brand:<name>. The token is "
                                   "printed once on stdout; only its sha256 is stored.")
    k.add_argument("role")
    k.add_argument("--leads-db", type=Path, default=argparse.SUPPRESS,
                   help="SQLite file of leads and keys [BRANDGUARD_LEADS_DB]")
    k.add_argument("--label", default="", help="a note to recognise the key by")


def build_settings(args: argparse.Namespace):
    """Settings from the environment, overridden by whatever flags were given.

    Ops data (``public_metrics``) left unset by flag and environment is public only when the
    service listens on loopback: for any other ``--host`` it is made ``False``.
    """
    from brandguard.serve.settings import Settings, is_loopback

    overrides = {field: getattr(args, flag) for flag, field in _OVERRIDES.items()
                 if getattr(args, flag, None) is not None}
    settings = Settings(**overrides)
    if settings.public_metrics is None and not is_loopback(getattr(args, "host", "127.0.0.1")):
        settings = settings.model_copy(update={"public_metrics": False})
    return settings


def _create_key(args: argparse.Namespace) -> int:
    from brandguard.errors import InputError
    from brandguard.cases.leads import LeadStore

    db = getattr(args, "leads_db", None) or os.environ.get("BRANDGUARD_LEADS_DB") or "brandguard-leads.sqlite"
    store = LeadStore(db)
    try:
        token, key = store.create_key(args.role, label=args.label)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        store.close()
    print(f"created key {key.key_id} for role {key.role} in {db}; the token below is shown only once",
          file=sys.stderr)
    print(token)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted (or create a key). Returns a brandguard exit code."""
    if getattr(args, "serve_command", None) == "create-key":
        return _create_key(args)
    try:
        import fastapi  # noqa: F401 - only to give a clear message when the extra is missing
        import uvicorn
        from pydantic import ValidationError
    except ImportError as exc:
        print(f"error: the service needs the serve extra (pip install 'brandguard[serve]'): {exc}", file=sys.stderr)
        return EXIT_USAGE

    try:
        settings = build_settings(args)
    except ValidationError as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.workers < 1 or args.threads < 1:
        print("error: --workers and --threads must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    from brandguard.cases.risk import load_brand_info
    from brandguard.errors import InputError

    try:  # read now, so a bad file is one line and exit 2, not a failed startup
        load_brand_info(settings.brand_info)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from brandguard.serve.logs import log_config

    # Logs are JSON lines; the guard logs each request, so uvicorn's text access log stays off.
    common = dict(host=args.host, port=args.port, loop="asyncio", http="h11", lifespan="on",
                  log_level=args.log_level, access_log=False, timeout_keep_alive=5,
                  log_config=log_config(args.log_level, access=not args.no_access_log),
                  timeout_graceful_shutdown=10, server_header=False, proxy_headers=False)
    if args.workers > 1:
        # Worker processes rebuild the app from the environment: hand every setting over there.
        for name, value in settings.model_dump().items():
            if value is not None:
                os.environ[f"BRANDGUARD_{name.upper()}"] = str(value)
        try:
            uvicorn.run("brandguard.serve.app:app_from_env", factory=True, workers=args.workers, **common)
        except KeyboardInterrupt:
            pass
        return EXIT_OK
    from brandguard.serve.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), workers=1, **common))
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully, then re-raises the captured SIGINT: a normal stop.
        pass
    # uvicorn returns without raising when the lifespan (bundle loading) fails.
    return EXIT_OK if server.started else EXIT_ARTIFACT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brandguard.serve", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(max(1, args.threads))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
