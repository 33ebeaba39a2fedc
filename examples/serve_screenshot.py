"""A screenshot of the ``facekit serve`` page with results shown: docs/serve.png.

Starts a real server on a free loopback port, opens the page in headless Chromium (Playwright driving Debian's
Chromium: no browser download), picks the bundled warm-cast example (the CC BY London face shipped with facekit, so
the figure can be shipped too), waits for the normalized face and the 3-D avatar on the viewer's canvas, and saves
the page, its colours reduced to a palette to keep the file small.

    python examples/serve_screenshot.py --overwrite [--out FILE] [--sfm PATH]     # default: docs/serve.png

Needs the facekit-serve plugin's extras: Playwright (pip) and Debian's Chromium (apt-get install -y chromium).
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from _common import REPO, add_figure_out, add_overwrite, data_root, figure_path
from facekit_serve.testing import running_server
from PIL import Image

if TYPE_CHECKING:
    from playwright.sync_api import ViewportSize

VIEWPORT: ViewportSize = {"width": 1280, "height": 1100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_figure_out(parser, REPO / "docs" / "serve.png")
    parser.add_argument("--sfm", default=None, help="sfm_shape_3448.bin (default: DATA/sfm/)")
    add_overwrite(parser)
    args = parser.parse_args()
    out = figure_path(parser, args.out, args.overwrite)
    from playwright.sync_api import expect, sync_playwright

    sfm = args.sfm or str(data_root() / "sfm" / "sfm_shape_3448.bin")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("headless Chromium not found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="facekit-serve-shot-") as folder:
        with running_server(Path(folder), ["--sfm", sfm], stop_seconds=60) as server:
            url = server.url
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=chromium,
                    args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
                )
                page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
                page.goto(url)
                page.get_by_role("button", name="face warm cast").click()
                expect(page.locator("#status")).to_contain_text("1 face found", timeout=120_000)
                canvas = page.locator("#avatar canvas").first
                canvas.wait_for(timeout=60_000)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:  # until the avatar is on the canvas (not one flat colour)
                    shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), np.float64)
                    if shot[shot.shape[0] // 4 : -shot.shape[0] // 4].std() > 15:
                        break
                    page.wait_for_timeout(250)
                page.evaluate("window.scrollTo(0, 0)")  # the example's click scrolls the page
                page.wait_for_timeout(500)
                png = page.screenshot(full_page=False)
                browser.close()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    out.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB, {image.width} x {image.height})")


if __name__ == "__main__":
    main()
