"""The HTML report renders in a real browser: every inlined image decodes and the plot and examples are on screen.

Headless Chromium (Debian's ``chromium`` package) opens the report from disk. ``--dump-dom`` on a copy with a small
added script reads each ``<img>``'s ``naturalWidth`` after the load event (the report itself stays script-free and
self-contained); ``--screenshot`` of the untouched report checks that the pixels of the plot and the examples show.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.chromium

PLOT_BLUE = (0x44, 0x77, 0xAA)
EXAMPLE_COLOURS = ((230, 20, 200), (20, 200, 60))
WINDOW = (1100, 1500)

#: Run after the load event: record what the browser decoded, in the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const found = Array.from(document.images, (img) => ({
    alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight}));
  const out = document.createElement("pre");
  out.id = "image-probe";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>"""


def chromium_command(user_data: Path) -> list[str]:
    """Headless Chromium that touches no network and no profile outside ``user_data``."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("headless Chromium not found: `apt-get install -y chromium` (Debian) to run the report checks")
    return [
        executable,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={user_data}",
    ]


def run_chromium(tmp_path: Path, *args: str) -> str:
    command = [*chromium_command(tmp_path / "chromium-profile"), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(command)} failed: {result.stderr[-2000:]}"
    return result.stdout


class _ProbeReader(HTMLParser):
    """The JSON text of ``<pre id="image-probe">`` in a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.inside = tag == "pre" and ("id", "image-probe") in attrs

    def handle_endtag(self, tag: str) -> None:
        self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.text += data


def decoded_images(report: Path, tmp_path: Path) -> list[dict[str, object]]:
    """Each ``<img>`` of ``report`` as the browser decoded it: alt, complete, natural width and height."""
    probed = tmp_path / f"{report.stem}-probe.html"
    probed.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    reader = _ProbeReader()
    reader.feed(dom)
    assert reader.text, f"the probe script did not run; DOM starts: {dom[:500]}"
    return list(json.loads(reader.text))


def write_example_report(folder: Path) -> tuple[Path, dict[str, tuple[int, int]]]:
    """A report with a metrics dict, one matplotlib plot and two example arrays; returns it and each image's
    (width, height) by alt text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from facekit.report import write_report

    figure, axis = plt.subplots(figsize=(4, 2.5), dpi=100)
    axis.bar(range(5), [3, 5, 2, 6, 4], color=np.array(PLOT_BLUE) / 255, width=0.9)
    axis.set_title("identity distances")
    plot = folder / "identity-test.png"
    figure.savefig(plot)
    plt.close(figure)
    examples = []
    for colour in EXAMPLE_COLOURS:
        image = np.empty((90, 140, 3), np.uint8)
        image[:] = colour
        image[:, :20] = np.linspace(0, 255, 90, dtype=np.uint8)[:, None, None]  # a gradient strip: not a flat PNG
        examples.append(image)
    metrics = {"photos": 6, "normalized": 5, "judges": {"dlib-resnet": {"identity_pass_rate": 0.8}}}
    report = write_report(folder / "report.html", "chromium check", metrics, examples, [plot])
    sizes = {"identity-test": (400, 250), "example 0": (140, 90), "example 1": (140, 90)}
    return report, sizes


def colour_count(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    return int((np.abs(pixels.astype(int) - np.array(colour)).max(axis=-1) <= tolerance).sum())


def test_every_image_decodes(tmp_path: Path) -> None:
    report, sizes = write_example_report(tmp_path)
    assert "<script" not in report.read_text(encoding="utf-8")  # the report itself stays script-free
    images = decoded_images(report, tmp_path)
    assert {str(i["alt"]) for i in images} == set(sizes)
    for image in images:
        assert image["complete"] and int(str(image["width"])) > 0, image
        assert (image["width"], image["height"]) == sizes[str(image["alt"])], image


def test_a_broken_image_is_caught(tmp_path: Path) -> None:
    """The probe is not vacuous: an image whose data does not decode reports naturalWidth 0."""
    report, _ = write_example_report(tmp_path)
    text = report.read_text(encoding="utf-8")
    start = text.index("src='data:image/png;base64,", text.index("alt='example 1'")) + len("src='")
    end = text.index("'", start)
    broken = tmp_path / "broken.html"
    broken.write_text(text[:start] + "data:image/png;base64,bm90IGEgcG5n" + text[end:], encoding="utf-8")
    widths = {str(i["alt"]): i["width"] for i in decoded_images(broken, tmp_path)}
    assert widths["example 1"] == 0 and widths["example 0"] == 140


def test_plot_and_examples_show_on_screen(tmp_path: Path) -> None:
    from PIL import Image

    report, _ = write_example_report(tmp_path)
    shot = tmp_path / "screenshot.png"
    width, height = WINDOW
    run_chromium(tmp_path, f"--window-size={width},{height}", f"--screenshot={shot}", report.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (height, width, 3)
    assert pixels.std() > 20, "the screenshot is blank"
    # Five bars of the plot, 0.9 wide: thousands of pixels of its blue at 100 dpi.
    assert colour_count(pixels, PLOT_BLUE) > 5000
    for colour in EXAMPLE_COLOURS:
        # 120 x 90 flat-colour pixels per example at natural size (max-width 280 px leaves them unscaled).
        assert colour_count(pixels, colour) >= 0.9 * 120 * 90, colour
