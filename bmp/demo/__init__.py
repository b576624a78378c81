"""``bmp demo``: the loop in a web page (Gradio, the ``bmp[demo]`` extra).

- :mod:`bmp.demo.catalog`: which configs can run offline, sample images;
- :mod:`bmp.demo.inference`: models cached per (config, device), one image
  through the loop as ``bmp run`` runs it, overlays per iteration, COCO JSON;
- :mod:`bmp.demo.app`: the Gradio page, the only module that imports gradio;
- :mod:`bmp.demo.cli`: the ``bmp demo`` subcommand.

Nothing here is imported by ``import bmp``, and only :mod:`bmp.demo.app` needs Gradio.
"""
