"""The page of ``facekit serve``: a Gradio Blocks app over :class:`facekit_serve.engine.Engine`.

One page: upload or drop a photo (or pick an example) -> the photo with its faces (choose one when there are several),
the normalized face with its landmarks, the adjusted photo (before | after), the 3-D avatar in an interactive viewer
with its GLB and OBJ, the attributes, and, when several shipped models are installed, their comparison.

Why Gradio: its frontend is bundled in the wheel (the 3-D viewer, Babylon.js, included), so the page works with the
network unplugged; its queue bounds how many requests run at once and how many wait; its per-session heartbeat tells
the server when a visitor closes the page, so their upload can be deleted then. Nothing is fetched from a CDN and no
telemetry is sent: ``offline_environment`` sets Gradio's and huggingface_hub's switches before Gradio is imported
(``tests/plugins/test_facekit_serve.py`` watches every request the browser makes); see
:mod:`facekit_serve.offline`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABCMeta
from collections import OrderedDict
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from facekit_serve.offline import offline_environment

offline_environment()  # before gradio and huggingface_hub are imported: they read these switches on import

import gradio as gr  # noqa: E402

from facekit.errors import FacekitError  # noqa: E402
from facekit_serve.engine import VISITOR_AVATAR_NOTE  # noqa: E402

log = logging.getLogger(__name__)

#: Seconds between the cache sweeps of Gradio's own copies of files (uploads and results), and the age at which
#: a copy is deleted. An upload is deleted as soon as its session ends; this is the backstop for sessions whose
#: end the server never hears of.
CACHE_SWEEP = (300, 3600)
#: The events that process a photo (an upload, a face chosen) share one concurrency limit, --concurrency.
CONCURRENCY_GROUP = "facekit-photo"
#: The buttons of every result image: Gradio's default adds "Share", which works only on Hugging Face Spaces (it
#: raised "Must be on Spaces to share" on a page that promises the photo stays on this server).
IMAGE_BUTTONS: list[Any] = ["download", "fullscreen"]
#: Room in Gradio's upload folder for its copies of results (normalized faces, avatars), beyond the photos.
RESULT_FOLDER_BYTES = 512 << 20
#: Sessions whose end the page remembers (the latest), so that a request still running for a closed page drops
#: what it made: far more pages than could close while one request runs.
ENDED_SESSIONS = 4096
#: What a page whose session has ended is told when it sends a photo (its results would be dropped at once).
SESSION_ENDED = "This page's session has ended (closed, or its connection was lost): reload the page to go on."
#: :class:`FaceChooser`'s value for a face asked of a session that holds no photo (it offers no face): a page still
#: open across a server restart or after its session ended, or a program that sent no photo first.
NO_PHOTO_SENT = -1
#: What a page open across a server restart is told when a face is chosen: the new server holds none of its photos.
PHOTO_GONE = "The server has restarted since this photo was sent and no longer holds it: please upload it again."
#: What a program calling /choose_face before /analyze is told.
NO_FACE_TO_CHOOSE = "There is no face to choose: send a photo first (/analyze)."
#: What a visitor is told when the server itself fails on their photo (the traceback goes to the server's log), with
#: the exception's class name after it.
SERVER_FAILED = "Something went wrong on the server while processing this photo (the server log says what)."

#: The page's styles. Gradio 6.31 gives a list of several files a "Remove this file" button even when the list is not
#: interactive: on the avatar's downloads it took the GLB or the OBJ off the page for good (interactive=False keeps
#: it off single files only). A problem's red is lighter in dark mode (Gradio marks the body ``dark``): the light
#: scheme's #b00020 on the dark background was 2.6:1, below WCAG AA's 4.5:1.
#: The attributes' numbers stay on one line; their column heads may wrap, or on a 375 px phone the table was wider
#: than its box (the photo's column cut at the screen's edge).
#: While a photo is processed, the status box shows the progress alone, with room for its bar: Gradio draws the
#: progress over the box's earlier line, faded ("Waiting for a photo." or the last photo's), and in a box one line
#: high the two were written over each other ("Waiting ffinding and normalizing the faces - 10.0%"), the bar cut off.
#: The line goes at once (Gradio fades it over 0.15 s, which held its visibility that long too); the room is there
#: whether or not a photo is processed, so that the faces below do not move while one is made.
#: The models' comparison starts below its label: on a phone the picture fills the box's width, and the label and
#: buttons, drawn over its top, hid the names of its columns ("photo (aligned)", "dlib").
ERROR_CSS = """
#comparison img { margin-top: 1.9rem; }
#status { min-height: 4.5em; }
#status .pending { visibility: hidden; transition: none; }
#status .error { color: #b00020; font-weight: 600; }
.dark #status .error { color: #ff8a80; }
#status p { margin: 0.2em 0; }
#status code { overflow-wrap: anywhere; white-space: normal; }
#attributes th, #attributes td { word-break: normal; overflow-wrap: normal; }
#attributes td:not(:first-child) { white-space: nowrap; }
#avatar-files .label-clear-button { display: none; }
"""

#: The 3-D viewer's canvas, for screen readers (Babylon.js gives it no name).
AVATAR_CANVAS_LABEL = "The 3-D avatar: drag to turn it, scroll to zoom"

#: Run when the page loads, and again whenever the page changes, since Gradio draws its parts as they arrive:
#: - the status box is a live region, so a screen reader says "1 face found" or a problem when it appears (Gradio's
#:   Markdown has no such option, and Blocks takes no script of its own since Gradio 6);
#: - the 3-D viewer's canvas keeps its place in the Tab order: Babylon.js gives it tabindex 1 when it draws the
#:   avatar and again on every pointer move, which put it before everything else on the page (the first Tab after a
#:   result jumped from the top of the page to the viewer at the bottom); it gets a name, too;
#: - the faces to choose from are one radio group named by its label: Gradio gives each option a name of its own and
#:   the group none, so a screen reader said "face 2, radio button, 1 of 1" without saying what it chooses, and the
#:   arrow keys, which move through a radio group, did nothing;
#: - a file's download link is named by the file ("Download IMG_1234-normalized.png, 15.9 KB"): Gradio's link reads
#:   out as its size alone ("15.9 KB down arrow").
PAGE_JS = """() => {
  const mend = () => {
    const status = document.getElementById("status");
    if (status && status.getAttribute("aria-live") !== "polite") {
      status.setAttribute("role", "status");
      status.setAttribute("aria-live", "polite");
    }
    for (const canvas of document.querySelectorAll("#avatar canvas")) {
      if (canvas.tabIndex > 0) canvas.tabIndex = 0;
      if (!canvas.hasAttribute("aria-label")) {
        canvas.setAttribute("role", "img");
        canvas.setAttribute("aria-label", AVATAR_CANVAS_LABEL);
      }
    }
    const faces = document.getElementById("faces");
    const legend = faces && faces.querySelector("[data-testid='block-info']");
    if (legend && faces.getAttribute("role") !== "radiogroup") {
      legend.id = "faces-label";
      faces.setAttribute("role", "radiogroup");
      faces.setAttribute("aria-labelledby", legend.id);
    }
    for (const option of document.querySelectorAll("#faces input[type=radio]")) {
      if (option.name !== "faces") option.name = "faces";
    }
    for (const link of document.querySelectorAll(".file-preview a[download]")) {
      const size = link.textContent.replace("\\u21e3", "").replace(/\\s+/g, " ").trim();
      const name = `Download ${link.getAttribute("download")}` + (size ? `, ${size}` : "");
      if (link.getAttribute("aria-label") !== name) link.setAttribute("aria-label", name);
    }
  };
  mend();
  new MutationObserver(mend).observe(document.body, {
    childList: true, subtree: true, characterData: true,
    attributes: true, attributeFilter: ["tabindex", "download", "name"]
  });
}""".replace("AVATAR_CANVAS_LABEL", json.dumps(AVATAR_CANVAS_LABEL))

#: What each result image shows, for screen readers (without it Gradio marks an image decorative: alt="").
ALT_TEXT = {
    "detections": "The photo with a box around each face found",
    "normalized": "The normalized face: frontal, neutral expression, evenly lit, its predicted landmarks in green",
    "renders": "The 3-D avatar rendered turned 30 degrees one way, facing the camera, and 30 degrees the other way",
    "adjusted": "The photo with its white balance and exposure adjusted from the face",
    "before-after": "The photo before and after the adjustment, side by side",
    "skin": "The skin region that was measured, outlined on the normalized face and on the photo",
    "comparison": "The normalized faces each model makes of this photo, side by side",
}


def result_image(elem_id: str, label: str, **options: Any) -> Any:
    """An output image of the page: a file path, its :data:`ALT_TEXT` for screen readers, download and full-screen
    buttons (no Share)."""
    return gr.Image(
        label=label, type="filepath", elem_id=elem_id, alt_text=ALT_TEXT[elem_id], buttons=IMAGE_BUTTONS, **options
    )


def _path_only(self: Any, payload: Any) -> Any:
    """:class:`PhotoUpload` hands over an uploaded file: its path (Gradio's own for what the page does not use)."""
    if self.type != "filepath" or self.file_types:
        return gr.File._process_single_file(self, payload)
    from gradio.utils import NamedString

    return NamedString(payload.path)


# The photo input: Gradio's File (the page and its API see a File) that hands the handler the uploaded file's path
# without more. Gradio 6.31's File made an empty temporary file in its folder for every file it handed over and
# kept it: neither a page closing nor its cache sweep deleted it (they delete the files Gradio lists, and it is not
# listed), so a server had one more file there for every photo sent until it stopped (helper-89: 200 requests, 200
# empty files). A class, not a method replaced on one component: Gradio makes a page's component anew from its class
# when a handler updates it (an example chosen). Made by ABCMeta without Gradio's ComponentMeta.__new__, which adds
# nothing to a subclass without its own __init__ or events but writes a .pyi stub beside the defining module.
PhotoUpload: Any = ABCMeta.__new__(
    type(gr.File),
    "PhotoUpload",
    (gr.File,),
    {
        "__module__": __name__,
        "__doc__": "Gradio's File that hands over the uploaded file's path alone (see above).",
        "_process_single_file": _path_only,
        "get_block_name": lambda self: "file",
        "get_block_class": lambda self: "file",
    },
)


def _offered_only(self: Any, payload: Any) -> Any:
    """:class:`FaceChooser` refuses a face it does not offer in a line of its own (Gradio's own refusal for it); a
    face asked of a session that holds no photo is :data:`NO_PHOTO_SENT`, which the handler answers in the words of
    its caller (the page or a program)."""
    offered = [value for _, value in self.choices]
    if payload is not None and payload not in offered:
        if not offered:
            return NO_PHOTO_SENT
        listed = ", ".join(repr(value) for value in offered)
        raise gr.Error(f"{payload!r} is not a face of this photo: choose one of {listed}.", print_exception=False)
    return gr.Radio.preprocess(self, payload)


# The face chooser: Gradio's Radio that refuses a value it does not offer without a traceback. Gradio 6.31's Radio
# checks the value against its choices before the handler runs and raises a gr.Error that prints its traceback, so
# every wrong value a program sent to /choose_face (gradio_client's predict("face 9", api_name="/choose_face"))
# wrote 25 lines into the server's log; the caller, not the server, is wrong (as :func:`problem`). The page only
# sends what it offers, but a page still open across a server restart sends a face of a photo the new server never
# saw, whose session offers none: that was refused as a program's, in a toast naming the API's /analyze, with
# "Error" on every output (helper-234). Made as :class:`PhotoUpload` is (a class: Gradio makes it anew when analyze
# sets its choices).
FaceChooser: Any = ABCMeta.__new__(
    type(gr.Radio),
    "FaceChooser",
    (gr.Radio,),
    {
        "__module__": __name__,
        "__doc__": "Gradio's Radio that refuses a value it does not offer in one line (see above).",
        "preprocess": _offered_only,
        "get_block_name": lambda self: "radio",
        "get_block_class": lambda self: "radio",
    },
)


def status_error(message: str) -> str:
    """A problem as the status box shows it: plain words, marked so that it stands out."""
    return f'<p class="error">⚠ {escape(message)}</p>'


def from_page(request: Any) -> bool:
    """Whether ``request`` comes from the page itself (``x-gradio-user: app``), not a program calling its API."""
    headers = getattr(request, "headers", None) or {}
    return bool(headers.get("x-gradio-user") == "app")


def problem(request: Any, message: str) -> str:
    """A problem with a request, as its caller gets it: the page itself (``x-gradio-user: app``) shows the
    :func:`status_error` returned in its status box; a program calling the page's API (gradio_client sends
    ``x-gradio-user: api``, a plain REST call no such header) gets an error it can catch (``gr.Error``:
    gradio_client raises it), not a success whose status box holds an HTML message. Not printed as a traceback: it
    is the visitor's photo, not the server, that is wrong (the server's own failures are logged where caught)."""
    if not from_page(request):
        raise gr.Error(message, print_exception=False) from None
    return status_error(message)


def face_choices(count: int, found: int) -> list[str]:
    labels = [f"face {i + 1}" + (" (largest)" if i == 0 else "") for i in range(count)]
    # More found than offered: the last label says so ("face 8 (of 12 found)" read as "face 8 of 12").
    return labels if found <= count else [*labels[:-1], f"face {count} (the {count} largest of {found} found)"]


def number(value: Any, digits: int) -> str:
    """A table cell: ``value`` with ``digits`` decimals, or "-" where there is none (None, NaN: a grey photo's skin
    tone; the page showed "nan")."""
    if value is None or value != value:
        return "-"
    return f"{value:.{digits}f}"


def attributes_markdown(result: Any) -> str:
    """The attributes as a table: normalized face beside the photo."""
    from facekit.apps.attributes import RATIOS

    if not result.attributes:
        return escape(result.attributes_note) or "No attributes."
    face, photo = result.attributes, result.photo_attributes
    ita = face["ita_degrees"]
    tone = f"ITA {ita:.1f}° ({face['ita_category']})" if ita == ita else "undefined"  # NaN: no colour to measure
    lines = [
        f"**Skin tone**: {tone}, measured on the normalized face (cheeks and forehead, median CIELAB under D65).",
        "",
        "| measure | normalized face | photo |",
        "|---|---|---|",
        f"| ITA (degrees) | {number(face['ita_degrees'], 1)} | {number(photo.get('ita_degrees'), 1)} |",
        f"| L* | {number(face['L'], 1)} | {number(photo.get('L'), 1)} |",
        f"| b* | {number(face['b'], 1)} | {number(photo.get('b'), 1)} |",
    ]
    for name, (_, _, description) in RATIOS.items():
        lines.append(f"| {description} | {number(face[name], 3)} | {number(photo.get(name), 3)} |")
    lines += ["", "The photo's numbers follow its light, pose and expression; the normalized face's should not."]
    if result.attributes_note:  # e.g. a grey photo: no skin tone
        lines += ["", escape(result.attributes_note[0].upper() + result.attributes_note[1:]) + "."]
    return "\n".join(lines)


#: The adjusted download, as `facekit adjust` writes it (helper-67: "in its own format" was untrue for TIFF, BMP, GIF).
FULL_SIZE_NOTE = (
    "The full-size photo is below as {kind}, with the photo's colour profile and EXIF (a JPEG stays a JPEG; other "
    "formats are written as PNG)."
)


def adjust_markdown(result: Any) -> str:
    record = result.correction
    full_size = FULL_SIZE_NOTE.format(kind=Path(result.adjusted_full).suffix[1:].upper())
    if record.get("face", {}).get("monochrome"):  # as `facekit adjust`: exposure only (helper-67: the note said more)
        exposure = (
            f"x{record['gains_rgb'][1]:.3f} in linear light"
            if "gains_rgb" in record
            else f"{(record.get('shift_ycrcb') or [0.0])[0]:+.1f} grey levels"
        )
        return (
            f"A black-and-white photo: only its exposure was corrected ({exposure}); it stays black-and-white, "
            "since the face's colour would tint it. " + full_size
        )
    if "gains_rgb" in record:  # von Kries gains in linear light (the default, as `facekit adjust`)
        red, green, blue = record["gains_rgb"]
        fused = record.get("face", {}).get("fuse")
        if fused == "agreement":
            weights = record["face"].get("fuse_weights", {})
            agreed = [name for name, weight in weights.items() if name != "face" and weight >= 0.5]
            mixed = (
                f"averaged with {', '.join(agreed)}, which agreed with it"
                if agreed
                else "alone: no global estimate agreed with it"
            )
            fused_how = f" (the face's white balance {mixed}; the exposure is the face's)"
        else:
            fused_how = (
                f" (the face's white balance averaged with {fused}'s; the exposure is the face's)" if fused else ""
            )
        how = f"R x{red:.3f}, G x{green:.3f}, B x{blue:.3f} in linear light" + fused_how
    else:  # the paper's YCrCb map
        shift = record.get("shift_ycrcb") or [0.0, 0.0, 0.0]
        how = f"exposure (Y) {shift[0]:+.1f}, white balance (Cr, Cb) {shift[1]:+.1f}, {shift[2]:+.1f} grey levels"
    return (
        f"Each channel of the photo was moved: {how}. The photo's face is mapped onto the normalized face's even, "
        "neutral colour (paper Sec. 7.4). " + full_size
    )


def status_markdown(analysis: Any, result: Any, labels: list[str], name: str, took: float) -> str:
    """The status line: the visitor's own file ``name`` (a cached analysis may be another visitor's upload of the
    same bytes, under their name) and the ``took`` seconds of this request."""
    found = analysis.faces_found
    faces = f"{found} face{'s' if found != 1 else ''} found"
    if found > 1:
        faces += f"; showing face {result.index + 1} (choose another below)"
    shown = name.replace("`", "'")
    return f"`{shown}`: {analysis.size[0]} x {analysis.size[1]} px, {faces}. Model: {labels[0]}. Done in {took:.1f} s."


def build_app(engine: Any, examples: list[Path] | None = None, max_upload_mb: float = 20.0) -> Any:
    """The Blocks app over ``engine``; the caller queues and launches it (:func:`launch`)."""
    has_compare = bool(engine.others)
    no_avatar_note = VISITOR_AVATAR_NOTE if engine.avatar_note else ""  # the reason is the console's
    # Every output of a face's results, in the order the handlers return them.
    with gr.Blocks(title="facekit", analytics_enabled=False, delete_cache=CACHE_SWEEP) as demo:
        uploads = SessionUploads(demo)
        current = gr.State(None)  # the sha256 of the upload this session shows
        glb = gr.State(None)  # its avatar's GLB, given to the viewer again when its tab opens (see below)
        gr.Markdown(
            "# facekit: the normalized face of a photo\n"
            "Upload or drop a photo with a face. facekit finds the faces, turns the chosen one into a frontal, "
            "neutral, evenly lit *normalized face* (Cole et al., CVPR 2017), and from it adjusts the photo's "
            "colours, builds a 3-D avatar and measures skin tone and face shape. Photos up to "
            f"{max_upload_mb:g} MB; they stay on this server and are deleted when you close the page."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                upload = PhotoUpload(label="Photo (JPEG, PNG, WebP)", type="filepath", elem_id="upload", height=120)
                if examples:
                    gr.Examples(
                        examples=[[str(path)] for path in examples],
                        inputs=[upload],
                        label="Or try an example (a London set face, CC BY 4.0, DeBruine & Jones 2017)",
                        example_labels=[path.stem.replace("-", " ") for path in examples],
                    )
                status = gr.Markdown("Waiting for a photo.", elem_id="status")
                chooser = FaceChooser(label="Faces (largest first)", type="index", visible=False, elem_id="faces")
            with gr.Column(scale=1):
                detections = result_image("detections", label="Detected faces", height=360)
            with gr.Column(scale=1):
                normalized = result_image(
                    "normalized", label="Normalized face, predicted landmarks in green", height=360
                )
                # Downloads only (interactive=False): an editable File's 7 px "x" removed a result for good (helper-67).
                normalized_file = gr.File(
                    label="Normalized face at the model's size (PNG)", elem_id="normalized-file", interactive=False
                )
        # Without the Surrey model the avatar tab holds only a note: the page opens on the adjusted photo instead.
        with gr.Tabs(selected="adjust-tab" if engine.avatar_note else "avatar-tab", elem_id="result-tabs"):
            with gr.Tab("3-D avatar", id="avatar-tab") as avatar_tab:
                avatar_note = gr.Markdown(no_avatar_note, elem_id="avatar-note")
                with gr.Row():
                    viewer = gr.Model3D(
                        label="Avatar (drag to turn, scroll to zoom)",
                        elem_id="avatar",
                        clear_color=(0.5, 0.5, 0.5, 1.0),
                        camera_position=(90, 90, 0.35),
                        height=400,
                    )
                    with gr.Column():
                        renders = result_image("renders", label="Renders at -30, 0 and +30 degrees")
                        avatar_files = gr.File(
                            label="Download: GLB, OBJ + MTL + texture (zip). Surrey Face Model: non-commercial use",
                            file_count="multiple",
                            elem_id="avatar-files",
                            interactive=False,
                        )
            with gr.Tab("Adjusted photo", id="adjust-tab"):
                adjust_note = gr.Markdown(elem_id="adjust-note")
                with gr.Row():
                    adjusted = result_image("adjusted", label="Adjusted photo")
                    pair = result_image("before-after", label="Before | after")
                adjusted_file = gr.File(label="Adjusted photo, full size", elem_id="adjusted-file", interactive=False)
            with gr.Tab("Attributes", id="attributes-tab"):
                with gr.Row():  # the table keeps a readable width: on a phone the row wraps (columns)
                    with gr.Column(min_width=340):
                        attributes = gr.Markdown(elem_id="attributes")
                    with gr.Column(min_width=240):
                        attributes_image = result_image(
                            "skin", label="Skin region on the normalized face | on the photo"
                        )
            with gr.Tab("Compare models", id="compare-tab", visible=has_compare):
                compare_note = gr.Markdown(engine_compare_note(engine, None), elem_id="compare-note")
                comparison = result_image("comparison", label="Models compared")

        face_outputs = [
            detections,
            normalized,
            normalized_file,
            adjust_note,
            adjusted,
            pair,
            adjusted_file,
            avatar_note,
            viewer,
            renders,
            avatar_files,
            attributes,
            attributes_image,
            compare_note,
            comparison,
            glb,
        ]

        def values(result: Any | None) -> list[Any]:
            """``face_outputs``' values for ``result`` (None: cleared)."""
            if result is None:
                cleared: list[Any] = [None] * len(face_outputs)
                cleared[face_outputs.index(avatar_note)] = no_avatar_note
                return cleared

            def text(path: Path | None) -> str | None:
                return None if path is None else str(path)

            return [
                text(result.detections),
                text(result.normalized),
                text(result.normalized_png),
                adjust_markdown(result),
                text(result.adjusted),
                text(result.before_after),
                text(result.adjusted_full),
                escape(result.avatar_note) if result.avatar_note else "",
                text(result.avatar_glb),
                text(result.avatar_renders),
                [str(p) for p in result.avatar_files] or None,
                attributes_markdown(result),
                text(result.attributes_image),
                engine_compare_note(engine, result),
                text(result.comparison),
                text(result.avatar_glb),
            ]

        empty = values(None)
        names: dict[tuple[str, str], str] = {}  # (session, upload sha256) -> the name this visitor gave it
        # Results the engine's cache dropped while pages still show them, by upload: their served copies wait for
        # those sessions to end or show another photo (before: they stayed until Gradio's hourly sweep, the
        # visitor's full-size photo too).
        waiting: list[tuple[str, set[str], list[Path]]] = []
        waiting_lock = threading.Lock()
        ended: OrderedDict[str, None] = OrderedDict()  # the latest sessions that ended, oldest first (see analyze)

        def shown() -> set[Path]:
            """Served copies of results the cache dropped that pages still show (the waiting list)."""
            with waiting_lock:
                return {copy for _, _, copies in waiting for copy in copies}

        def evicted(files: list[Path], holders: set[str], sha256: str) -> None:
            copies = served_copies(files)
            if not holders:
                delete_unused_copies(copies, engine, shown())
                return
            with waiting_lock:
                waiting.append((sha256, set(holders), copies))

        engine.on_evict = evicted

        def let_go(session: str, keep: str | None = None) -> int:
            """``session`` ended (``keep`` None) or shows the upload ``keep`` now, whose results replaced what it
            showed before: the results only it showed go, and their served copies (those its dropped cache entries
            made, named while their files exist, before release deletes them, and those of evicted results it
            still showed). The same bytes uploaded again since are cached anew, with results of the same content:
            their served copies are the same files, and that page still shows them (delete_unused_copies keeps
            those). Before, a page kept every photo it had sent until it closed (helper-89: one page or API client
            sending 150 photos, 1.15 MB and 13 files more in Gradio's folder per photo, towards the folder's cap
            past which every visitor's upload is refused). Returns how many results were dropped."""
            with waiting_lock:  # (handlers run on several threads)
                for sha256, holders, _ in waiting:
                    if sha256 != keep:
                        holders.discard(session)
                done = [copies for _, holders, copies in waiting if not holders]
                waiting[:] = [entry for entry in waiting if entry[1]]
                for key in [key for key in names if key[0] == session and key[1] != keep]:
                    del names[key]
            gone = [copy for copies in done for copy in copies]
            dropped = engine.release(session, lambda files: gone.extend(served_copies(files)), keep)
            delete_unused_copies(gone, engine, shown())  # the cache's files hashed once, not per entry
            return len(dropped)

        def analyze(path: str | None, request: gr.Request, progress: Any = gr.Progress()) -> list[Any]:  # noqa: B008
            """Upload -> every result for its largest face. Problems with the photo are shown as a message."""
            hidden = gr.update(choices=[], value=None, visible=False)
            if path is None:
                return [None, hidden, "Waiting for a photo.", *empty]
            began = time.perf_counter()
            session = request.session_hash or ""
            uploads.remember(session, path)

            def tell(fraction: float, text: str) -> None:
                progress(fraction, desc=text)

            try:
                # The photo is decoded once: its largest face's full-size download is made from the same array.
                with engine.analyzing(path, Path(path).name, tell) as analysis:
                    engine.hold(analysis.sha256, session)
                    with waiting_lock:
                        closed = session in ended
                    if closed:  # the page closed while its photo was read: its end found nothing held: drop it now
                        engine.release(session)
                        uploads.forget(session)  # (remembered above, after the end forgot the session's uploads)
                    else:  # downloads named for it
                        result = engine.result(analysis.sha256, 0, tell, name=Path(path).name)
            except Exception as error:  # a server answers every request; the log has an unexpected one's traceback
                # The page shows no results now: what it showed and the photos it sent before this one go (before:
                # they stayed until the page closed). This one stays while the page's upload box shows it, a link
                # to download it (helper-91: deleted here, the link answered 404); the next photo or the end takes it.
                let_go(session)
                uploads.forget(session, keep=path)
                if isinstance(error, FacekitError):
                    return [None, hidden, problem(request, str(error)), *empty]
                log.exception("facekit serve: processing %s failed", Path(path).name)
                return [None, hidden, problem(request, f"{SERVER_FAILED} {type(error).__name__}"), *empty]
            if closed:
                # A page still open whose session ended (Gradio's heartbeat does not reconnect after a lost
                # connection) is told so, rather than shown 'Waiting for a photo.' for every photo it sends.
                return [None, hidden, problem(request, SESSION_ENDED), *empty]
            choices = face_choices(len(analysis.faces), analysis.faces_found)
            chooser_update = gr.update(choices=choices, value=choices[0], visible=len(choices) > 1)
            with waiting_lock:  # (handlers run on several threads)
                names[(session, analysis.sha256)] = Path(path).name
            let_go(session, keep=analysis.sha256)  # this page shows this photo's results now, not its earlier ones
            uploads.forget(session, keep=path)  # nor the photos it sent before this one
            status = status_markdown(analysis, result, engine.labels, Path(path).name, time.perf_counter() - began)
            return [analysis.sha256, chooser_update, status, *values(result)]

        def choose(
            sha256: str | None,
            index: int | None,
            request: gr.Request,
            progress: Any = gr.Progress(),  # noqa: B008
        ) -> list[Any]:
            """Another face of the same upload (cached once made)."""
            if index == NO_PHOTO_SENT:  # (see FaceChooser)
                with waiting_lock:
                    closed = (request.session_hash or "") in ended
                gone = SESSION_ENDED if closed else PHOTO_GONE if from_page(request) else NO_FACE_TO_CHOOSE
                return [problem(request, gone), *empty]
            if sha256 is None or index is None:
                return ["Waiting for a photo.", *empty]
            began = time.perf_counter()
            with waiting_lock:
                given = names.get((request.session_hash or "", sha256))
            try:
                result = engine.result(sha256, int(index), lambda f, text: progress(f, desc=text), name=given or "")
            except Exception as error:  # as analyze (before: Gradio's bare "Error" on every output, the status
                if isinstance(error, FacekitError):  # still "showing face 1" beside face 2 chosen)
                    return [problem(request, str(error)), *empty]
                log.exception("facekit serve: face %d of %s failed", int(index) + 1, given or "a photo")
                return [problem(request, f"{SERVER_FAILED} {type(error).__name__}"), *empty]
            analysis = engine.cached(sha256)
            if analysis is None:
                gone = "This photo is no longer in the server's memory. Please upload it again."
                return [problem(request, gone), *empty]
            return [
                status_markdown(analysis, result, engine.labels, given or "this photo", time.perf_counter() - began),
                *values(result),
            ]

        def session_ended(request: gr.Request) -> None:
            session = request.session_hash or ""
            with waiting_lock:  # (handlers run on several threads)
                ended[session] = None  # before the release below: a request holding after it sees this
                while len(ended) > ENDED_SESSIONS:
                    ended.popitem(last=False)
            deleted = uploads.forget(session)
            dropped = let_go(session)
            log.info("session ended: %d upload(s) deleted, %d result(s) dropped", deleted, dropped)

        def received(path: str | None, request: gr.Request) -> None:
            """An upload is this session's as soon as it arrives, before its analysis waits in the queue: another
            page that sent the same photo (one file under its content's hash) and closes meanwhile leaves it."""
            if path is not None:
                uploads.remember(request.session_hash or "", path)

        upload.upload(received, inputs=[upload], queue=False, show_progress="hidden", api_visibility="private")
        # One concurrency group: --concurrency counts photos being processed, whichever event runs them (each
        # event had its own limit, so a face choice ran beside another visitor's upload at --concurrency 1).
        upload.change(
            analyze,
            inputs=[upload],
            outputs=[current, chooser, status, *face_outputs],
            api_name="analyze",
            show_progress="full",
            concurrency_id=CONCURRENCY_GROUP,
        )
        # A face chosen while the one before is being made is made after it (Gradio's default for an input event
        # dropped it: the chooser said face 3 while the page showed face 2); of several, the last.
        chooser.input(
            choose,
            inputs=[current, chooser],
            outputs=[status, *face_outputs],
            api_name="choose_face",
            concurrency_id=CONCURRENCY_GROUP,
            trigger_mode="always_last",
        )
        # Gradio 6.31's Model3D given a file while its tab is hidden never loads its viewer (the viewer's loader is
        # cancelled by a second, identical update): opening the tab clears it and gives the file again.
        avatar_tab.select(lambda: None, outputs=[viewer], queue=False, show_progress="hidden").then(
            lambda path: path, inputs=[glb], outputs=[viewer], queue=False, show_progress="hidden"
        )
        demo.unload(session_ended)
    return demo


def engine_compare_note(engine: Any, result: Any | None) -> str:
    base = (
        f"The same face through each shipped model ({', '.join(engine.labels)}); the first column is the photo aligned "
        "into the first model's frame. `facekit explore compare` measures consistency over many photos."
    )
    note = getattr(result, "comparison_note", "")
    return base + (f" {escape(note)}" if note else "")


# ------------------------------------------------------------------------------------------------ uploads by session


class SessionUploads:
    """The files each session of one page uploaded (only files Gradio received as uploads, never an example), so
    that they are deleted when the session ends."""

    def __init__(self, demo: Any) -> None:
        self.demo = demo
        #: session -> {path: the file it uploaded there, as :func:`file_identity` says}
        self._by_session: dict[str, dict[str, tuple[int, int] | None]] = {}
        self._lock = threading.Lock()

    def remember(self, session: str, path: str) -> None:
        """Record that ``session`` uploaded ``path``."""
        with self._lock:  # (one lock with forget: an upload is remembered before its file can be deleted, or after)
            if str(path) in self.demo.upload_file_set:
                mine = self._by_session.setdefault(session, {})
                identity = file_identity(Path(path))
                if mine.get(str(path), identity) != identity:  # the same bytes sent again: Gradio wrote a new file
                    del mine[str(path)]  # there, which arrived after the uploads sent since the first (see forget)
                mine[str(path)] = identity

    def forget(self, session: str, keep: str | None = None) -> int:
        """Delete the files ``session`` uploaded (and their folders, when empty), except those another session
        uploaded too (Gradio keeps an upload under its content's hash: two pages sending one photo share the
        file, and the other's request may still be waiting for it), and those sent again since: Gradio writes the
        same bytes to the same path, a new file, which a request that has not yet claimed it waits for (before: it
        answered "The upload did not arrive"). With ``keep``, the upload the session's page shows now, only those
        that arrived before it: the page shows them no more, and one that arrived since may wait in the queue
        (before: a page kept every photo it sent until it closed). Returns how many were deleted."""
        deleted = 0
        with self._lock:
            if keep is None:
                paths = self._by_session.pop(session, {})
            else:
                mine = self._by_session.get(session, {})
                arrived = list(mine)  # in the order they arrived (a request claiming its file keeps its place)
                earlier = arrived[: arrived.index(keep)] if keep in mine else []
                paths = {path: mine.pop(path) for path in earlier}
            shared = set().union(*self._by_session.values()) if self._by_session else set()
            for path, uploaded in paths.items():
                file = Path(path)
                if path in shared or file_identity(file) != uploaded:
                    continue
                self.demo.upload_file_set.discard(path)
                try:
                    file.unlink()
                    deleted += 1
                except FileNotFoundError:
                    continue
                try:
                    file.parent.rmdir()  # Gradio keeps each upload in a folder of its own
                except OSError:
                    pass
        return deleted


def file_identity(file: Path) -> tuple[int, int] | None:
    """Which file is at ``file`` now (its inode and modification time; None: none): a file Gradio moves there
    anew is another."""
    try:
        stat = file.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def served_copies(files: list[Path]) -> list[Path]:
    """Where Gradio keeps its copies of our result ``files`` to serve them (``GRADIO_TEMP_DIR/<hash of the
    file>/<name>``, Gradio 6's cache layout): known only while the files exist (the hash is of their content)."""
    from gradio.processing_utils import hash_file
    from gradio.utils import get_upload_folder
    from gradio_client.utils import strip_invalid_filename_characters

    cache = Path(get_upload_folder())
    return [cache / hash_file(file) / strip_invalid_filename_characters(file.name) for file in files if file.is_file()]


def delete_unused_copies(copies: list[Path], engine: Any, shown: set[Path] | frozenset[Path] = frozenset()) -> int:
    """Delete the served ``copies`` that no upload still in ``engine``'s cache shares, nor a page still ``shown``
    (copies of results the cache dropped while pages show them), and their folders when empty: Gradio keeps one
    copy per content, and two uploads of one picture in other bytes (a re-saved JPEG) make results of the same
    content (before: one visitor leaving broke the other's images and downloads). Returns how many were deleted."""
    live = set(served_copies(engine.cached_files())) | set(shown)
    return delete_copies([copy for copy in copies if copy not in live])


def delete_copies(copies: list[Path]) -> int:
    """Delete the served ``copies`` (paths from :func:`served_copies`) and their folders when empty."""
    deleted = 0
    for copy in copies:
        try:
            copy.unlink()
            deleted += 1
        except FileNotFoundError:
            continue
        try:
            copy.parent.rmdir()
        except OSError:
            pass
    return deleted


def launch(
    demo: Any,
    host: str,
    port: int,
    max_upload_bytes: int,
    concurrency: int,
    max_queue: int,
    block: bool = True,
    allow_hosts: Sequence[str] = (),
) -> Any:
    """Queue (``concurrency`` requests at a time, at most ``max_queue`` waiting) and serve ``demo`` on host:port
    behind a :class:`facekit_serve.guard.RequestGuard` (``allow_hosts``: more names the page may be reached by).
    Gradio's folder of uploads and served copies may hold a photo for every request that may run or wait, and
    :data:`RESULT_FOLDER_BYTES` more. No folder is served as it is (no ``allowed_paths``): the results reach the page
    as Gradio's copies, and before, the server's whole folder was served to anyone who named a path in it (its lock,
    every visitor's upload and results)."""
    from gradio.utils import get_upload_folder
    from starlette.middleware import Middleware

    from facekit_serve.guard import RequestGuard

    guard = Middleware(
        RequestGuard,
        listen=host,
        upload_bytes=max_upload_bytes,
        allow_hosts=allow_hosts,
        upload_folder=get_upload_folder(),
        folder_bytes=(max_queue + concurrency) * max_upload_bytes + RESULT_FOLDER_BYTES,
    )
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    return demo.launch(
        app_kwargs={"middleware": [guard]},
        server_name=f"[{host}]" if ":" in host and not host.startswith("[") else host,
        server_port=port,
        share=False,
        max_file_size=max_upload_bytes,
        show_error=False,
        footer_links=[],
        run_history=False,
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
        prevent_thread_lock=not block,
        quiet=True,
        css=ERROR_CSS,
        js=PAGE_JS,
    )
