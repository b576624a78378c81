"""The Gradio page of ``bmp demo``: the only module of bmp that imports gradio.

Inputs on the left (image, config, iterations, thresholds), outputs on the
right (status, people count, one overlay per iteration, per-stage times, the
people table and the COCO JSON download). Errors a visitor can cause or fix
(no image, not an image, too large, a missing checkpoint) are one line in the
status box, never a traceback.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

# Before gradio is imported: it reads this at import time. No usage reports leave the machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from ..config import ConfigError, LoopConfig  # noqa: E402
from ..images import ImageError  # noqa: E402
from ..weights import WeightsError  # noqa: E402
from .inference import PEOPLE_COLUMNS, LoopSettings  # noqa: E402
from .service import DemoInputError, DemoService, describe_error  # noqa: E402

logger = logging.getLogger(__name__)

#: Errors that are the visitor's input or the set-up, shown as they are.
EXPECTED_ERRORS = (DemoInputError, ImageError, WeightsError, ConfigError)

INTRO = """# BBox-Mask-Pose demo
Detect → pose → pose-prompted masks → black out the people found → detect again.
Upload an image (or pick a sample), choose a config and press **Run**. Overlay *k* shows the
people found up to iteration *k*, outlined in that iteration's colour."""

#: Characters that would turn a file or config name in a status line into markup.
_MARKDOWN = re.compile(r"([\\`*_\[\]<>#|~])")


def build_app(service: DemoService) -> gr.Blocks:
    """The page, bound to ``service`` (its configs, samples and model cache)."""
    default = service.default
    start = service.settings(default.name) if default is not None else None
    # delete_cache: uploads and downloads older than an hour go, hourly and at shutdown.
    with gr.Blocks(title="BBox-Mask-Pose demo", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="bmp-upload")
                sample = gr.Dropdown(choices=[p.name for p in service.samples], value=None,
                                     label="…or a sample image", elem_id="bmp-sample")
                config = gr.Dropdown(choices=[c.name for c in service.available],
                                     value=default.name if default else None, label="Config",
                                     elem_id="bmp-config")
                if service.unavailable_note():
                    with gr.Accordion("Configs that cannot run here", open=False):
                        gr.Markdown(service.unavailable_note())
                sliders = _sliders(start)
                run = gr.Button("Run", variant="primary", elem_id="bmp-run")
            with gr.Column(scale=2):
                status = gr.Markdown(_no_config_status(service), elem_id="bmp-status")
                count = gr.Markdown(elem_id="bmp-count")
                gallery = gr.Gallery(label="Overlay after each iteration", columns=2, height="auto",
                                     object_fit="contain", elem_id="bmp-gallery")
                times = gr.Dataframe(headers=["stage", "ms"], label="Time per stage", interactive=False,
                                     elem_id="bmp-times")
                people = gr.Dataframe(headers=list(PEOPLE_COLUMNS), label="People", interactive=False,
                                      elem_id="bmp-people")
                download = gr.File(label="COCO results (JSON, as bmp run writes results.json)",
                                   interactive=False, elem_id="bmp-json")

        # .input/.upload fire only on the visitor's action, so the two clear each other without looping.
        sample.input(lambda _: None, inputs=sample, outputs=upload)
        upload.upload(lambda _: None, inputs=upload, outputs=sample)
        config.input(lambda name: _slider_values(service, name), inputs=config, outputs=sliders)
        run.click(lambda *values: _run(service, *values), inputs=[upload, sample, config, *sliders],
                  outputs=[status, count, gallery, times, people, download])
    return app


def _sliders(start: LoopSettings | None) -> list[gr.Slider]:
    """Iterations and the loop's main thresholds, starting at the config's values."""
    s = start or LoopSettings.from_loop(LoopConfig())
    return [
        gr.Slider(1, 5, value=s.num_iters, step=1, label="Iterations", elem_id="bmp-iters"),
        gr.Slider(0.0, 1.0, value=s.det_score_thr, step=0.01, label="Detection score threshold",
                  info="keep detections with score above this"),
        gr.Slider(0.05, 1.0, value=s.det_nms_iou, step=0.01, label="Box NMS IoU",
                  info="greedy NMS among one iteration's detections"),
        gr.Slider(0.05, 1.0, value=s.oks_nms_thr, step=0.01, label="OKS-NMS threshold",
                  info="a new person is a duplicate of an earlier one above this OKS"),
        gr.Slider(0.0, 1.0, value=s.oks_kpt_thr, step=0.01, label="Keypoint threshold",
                  info="keypoints that count in OKS (and in the table)"),
    ]


def _slider_values(service: DemoService, name: str) -> list[Any]:
    """The sliders reset to a newly chosen config's own values."""
    try:
        s = service.settings(name)
    except EXPECTED_ERRORS:
        return [gr.skip()] * 5
    return [s.num_iters, s.det_score_thr, s.det_nms_iou, s.oks_nms_thr, s.oks_kpt_thr]


def _no_config_status(service: DemoService) -> str:
    if service.default is not None:
        return ""
    return ("**No config can run here**: their checkpoints are missing. "
            "Start `bmp demo --weights-dir DIR` with a folder that holds them.")


def _run(service: DemoService, upload: str | None, sample: str | None, config: str,
         iters: float, det_thr: float, nms_iou: float, oks_thr: float, kpt_thr: float) -> tuple[Any, ...]:
    settings = LoopSettings(int(iters), det_thr, nms_iou, oks_thr, kpt_thr)
    try:
        result, json_path = service.run(upload, sample, config, settings)
    except EXPECTED_ERRORS as exc:
        message = describe_error(exc)
        # The upload's name, not where Gradio stored it on the server.
        return _failed(message.replace(str(upload), Path(upload).name) if upload else message)
    except Exception as exc:  # a bug or a broken model: the log gets the traceback, the page one line
        logger.exception("bmp demo: the run failed")
        return _failed(f"the run failed: {type(exc).__name__}: {describe_error(exc)}")
    total_ms = sum(result.seconds.values()) * 1000
    status = (f"Ran **{_escape(config)}** on {_escape(result.device)} in {total_ms:.0f} ms "
              f"({_escape(result.name)}).")
    overlays = [(img, f"iteration {k}: {n} people so far")
                for k, (img, n) in enumerate(zip(result.overlays(), result.found_up_to(), strict=True), 1)]
    return (status, f"### {result.summary()}", overlays, result.stage_rows(), result.people_rows(),
            str(json_path))


def _failed(message: str) -> tuple[Any, ...]:
    """A failed run's outputs: the status line, the rest emptied, so that no
    overlay of an earlier image stands under the error."""
    return (f"**Error:** {_escape(message)}", "", [], None, None, None)


def _escape(text: str) -> str:
    return _MARKDOWN.sub(r"\\\1", text)


def launch(app: gr.Blocks, service: DemoService, host: str, port: int, share: bool = False,
           quiet: bool = False) -> gr.Blocks:
    """Serve the page from a thread and return at once; ``app.close()`` stops it."""
    from ..input_limits import resolve_limits

    # Refuse an oversized upload before it is stored (flags, else the defaults; a
    # config's own images.max_mb is applied per run).
    max_bytes = resolve_limits(None, None, service.options.max_image_mb).max_bytes
    app.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=True,
        allowed_paths=[str(service.options.results_root)], max_file_size=max_bytes,
        ssr_mode=False, quiet=quiet, show_error=False,
    )
    return app
