"""``bmp demo``: the loop as an interactive web page (Gradio, ``pip install 'bmp[demo]'``).

Serves on http://127.0.0.1:7860 by default; ``--share`` (a public Gradio link,
which needs the network) is off unless asked for. Gradio is imported only
when the command runs, so the rest of bmp works without it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

#: What ``bmp demo`` prints, and exits 2 with, when Gradio is not installed.
NEEDS_GRADIO = "bmp demo needs Gradio: pip install 'bmp[demo]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..input_limits import add_limit_arguments
    from ..weights import add_trust_argument

    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default: 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument(
        "--weights-dir", action="append", default=[], metavar="DIR",
        help="folder with checkpoint files, searched before the cache (repeatable); "
        "only configs whose checkpoints are found are offered (nothing is downloaded)",
    )
    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE",
        help="a config to offer besides those in --configs-dir (repeatable); the first is preselected "
        "(default: bmp_lite)",
    )
    parser.add_argument(
        "--configs-dir", action="append", default=None, metavar="DIR",
        help="folder of loop configs to offer (repeatable; default: the repository's configs/)",
    )
    parser.add_argument(
        "--samples", action="append", default=[], metavar="DIR",
        help="folder of sample images to offer (repeatable), besides $BMP_SHARED/data/coco "
        "(BMP_SHARED: ../shared) when present",
    )
    parser.add_argument("--share", action="store_true",
                        help="also make a public gradio.live link (needs the network; off by default)")
    add_trust_argument(parser)
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted (SIGINT/SIGTERM end it through :func:`bmp.cli.main`)."""
    try:
        from .app import build_app, launch
    except ImportError as exc:
        # Not installed: the one line. Installed but broken (a dependency of its own missing): also why.
        print(NEEDS_GRADIO if exc.name == "gradio" else f"{NEEDS_GRADIO} ({exc})", file=sys.stderr)
        return 2
    from .catalog import repo_configs_dir
    from .service import DemoOptions, DemoService, describe_error, samples_folders

    for config in args.config:
        if not Path(config).is_file():
            raise FileNotFoundError(f"config file not found: {config}")
    with tempfile.TemporaryDirectory(prefix="bmp_demo_") as results_root:
        options = DemoOptions(
            results_root=Path(results_root), weights_dirs=list(args.weights_dir), device=args.device,
            config_folders=[Path(d) for d in (args.configs_dir or [repo_configs_dir()])],
            configs=[Path(c) for c in args.config], sample_folders=samples_folders(args.samples),
            max_image_pixels=args.max_image_pixels, max_image_mb=args.max_image_mb,
        )
        service = DemoService(options)
        app = build_app(service)
        try:
            try:
                launch(app, service, args.host, args.port, share=args.share)
            except OSError as exc:  # the port is taken, or the address is not this machine's
                print(f"bmp: error: cannot serve on {args.host}:{args.port}: {describe_error(exc)}",
                      file=sys.stderr)
                return 2
            print(f"bmp demo: {len(service.available)} of {len(service.choices)} configs can run here, "
                  f"{len(service.samples)} sample images; Ctrl-C stops")
            # Gradio's own blocking swallows Ctrl-C; waiting here lets SIGINT/SIGTERM end
            # the command as every bmp command ends (one line, exit 130/143, bmp.termination).
            while True:
                time.sleep(3600)
        finally:
            app.close()
