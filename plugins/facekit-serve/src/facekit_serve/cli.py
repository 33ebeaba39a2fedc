"""``facekit serve``: the whole chain on a local web page (see :mod:`facekit_serve.web`)."""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer

from facekit.cli import DeviceOption
from facekit.errors import (
    FacekitError,
    Terminated,
    hangup_stops,
    leave_a_hung_up_terminal,
    stops_held,
    stops_said,
)
from facekit.locks import exclusive

#: Each server's files (uploads, results, Gradio's copies) live in a temporary folder named so, locked while it runs.
WORKDIR_PREFIX = "facekit-serve-"
SERVE_LOCK = ".facekit-serve.lock"
#: A server folder's name: :func:`tempfile.mkdtemp`'s (the prefix and 8 of ``[a-z0-9_]``).
WORKDIR_NAME = re.compile(re.escape(WORKDIR_PREFIX) + r"[a-z0-9_]{8}")
#: All that a server writes in its folder (its lock, the example photos, the results, Gradio's uploads and copies).
SERVER_ENTRIES = frozenset({SERVE_LOCK, "examples", "results", "gradio"})
#: A folder without a lock file (made by a facekit before the lock) is taken for abandoned after this long.
UNLOCKED_AGE_S = 24 * 3600


def remove_abandoned(parent: Path, keep: Path | None = None) -> int:
    """Delete the server folders in ``parent`` that no running server holds (a server killed by ``kill -9`` or out
    of memory never ran its clean-up, and its visitors' photos stayed); only this user's, never through a link, never
    ``keep``. A server folder is named as :func:`tempfile.mkdtemp` names it (:data:`WORKDIR_PREFIX` and 8 letters,
    digits or underscores) and holds nothing but what a server writes there (:data:`SERVER_ENTRIES`): a folder of
    the user's that happens to start so is never touched. Returns how many were removed."""
    removed = 0
    for folder in sorted(parent.glob(f"{WORKDIR_PREFIX}*")):
        if folder == keep or not WORKDIR_NAME.fullmatch(folder.name):
            continue
        # Looked at through one descriptor (never through a link), held until it is swept: another server's sweep,
        # or the folder's own server as it ends, may remove it at any moment (before: gone between is_dir() and
        # stat(), a FileNotFoundError stopped the server that swept as it started).
        try:
            descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            removed += _sweep(folder, descriptor)
        finally:
            os.close(descriptor)
    return removed


def _sweep(folder: Path, descriptor: int) -> bool:
    """Remove the server folder ``folder``, open as ``descriptor``, if it is abandoned (:func:`remove_abandoned`);
    whether it was this call that removed it."""
    try:
        info, entries = os.fstat(descriptor), set(os.listdir(descriptor))
    except OSError:
        return False
    if info.st_uid != os.getuid():
        return False
    if not entries <= SERVER_ENTRIES:
        return False  # something a server does not write: not ours to delete
    if SERVE_LOCK not in entries and time.time() - info.st_mtime < UNLOCKED_AGE_S:
        return False  # perhaps an older facekit's running server: left until it is a day old
    try:
        with exclusive(folder, "facekit serve", SERVE_LOCK):
            try:  # (the descriptor keeps the folder's inode from being reused by one made since under its name)
                now = folder.lstat()
                swept = (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino)
            except OSError:
                swept = False
            # (not swept: gone meanwhile, another sweep's; the lock made it again, and it goes again)
            shutil.rmtree(folder, ignore_errors=True)
    except FacekitError:  # held: that server is running
        return False
    return swept


def remove_server_folder(folder: Path) -> None:
    """Delete a server's ``folder`` (its visitors' uploads and results) as the server ends, its lock last, with the
    stops held (:func:`facekit.errors.stops_held`): a second stop (the SIGTERM a service manager or ``timeout``
    sends after the first, a second Ctrl+C) comes once it is done. Before, one there cut the clean-up short, and
    the folder, its lock perhaps deleted first, stayed a day before the next server swept it
    (:func:`remove_abandoned` takes a young folder without a lock for an older facekit's running server). A
    ``kill -9`` meanwhile leaves the lock, so the next server sweeps what remains."""
    with stops_held():
        try:
            entries = [entry for entry in folder.iterdir() if entry.name != SERVE_LOCK]
        except OSError:
            entries = []
        for entry in entries:
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()
            except OSError:
                pass
        shutil.rmtree(folder, ignore_errors=True)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """A FacekitError when ``host:port`` cannot be listened on (in use, or an address this machine lacks)."""
    from facekit.errors import FacekitError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise FacekitError(
                f"cannot listen on {host}:{port} ({error.strerror}): choose another --port, or a --host of this machine"
            ) from None


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM, or SIGHUP (the terminal closed), stops the server as Ctrl+C does (:func:`serve_until_stopped`
    closes it, the uploads and results are deleted, :func:`serve_stopped` says so: the server's normal end, exit 0,
    as a stop of the server while it serves is; one before it serves, or in its clean-up, exits 128 + the signal as
    any facekit command stopped so: :class:`facekit.errors.Terminated`). Before, Gradio's "Keyboard interruption in
    main thread... closing server." was the only line."""
    if signum == getattr(signal, "SIGHUP", None):
        # The kernel's SIGHUP follows the shell's 0.2 ms later: it would cut the server's close short. And a line
        # written to the closed terminal fails (EIO).
        signal.signal(signum, signal.SIG_IGN)
        leave_a_hung_up_terminal()
    raise Terminated(f"stopped by {signal.Signals(signum).name}", signum)


def _stop_on_signals() -> None:
    """SIGTERM, and SIGHUP over its default handler or facekit's (:func:`facekit.errors.sigterm_raises`), stop the
    server (:func:`_stop_on_sigterm`); under ``nohup`` (SIGHUP ignored) it keeps serving when its terminal closes.
    Before, facekit's SIGHUP handler ended serve as it ends a normalize: Gradio's server left unclosed, exit 129,
    a message about skipping finished photos, and serve's own SIGTERM handler reset to the default one, so that a
    SIGTERM ended the clean-up on the spot."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and (signal.getsignal(hangup) == signal.SIG_DFL or hangup_stops()):
        signal.signal(hangup, _stop_on_sigterm)


def serve_until_stopped(demo: Any, launch: Callable[[], None]) -> str | None:
    """``launch`` Gradio serving ``demo`` without blocking, wait while it serves, then close it, whatever stopped
    the wait; the name of the stop that ended it (``Ctrl+C``, or :func:`_stop_on_sigterm`'s ``SIGTERM``,
    ``SIGHUP``), None where the server ended by itself. A stop as it launches (the server may answer before
    ``launch`` returns) ends it alike. Gradio's own wait said "Keyboard interruption in main thread... closing
    server." on a stop, a line of its own beside facekit's."""
    try:
        launch()
        while demo.is_running:
            time.sleep(0.1)
    except Terminated as stop:
        return stop.signal_name
    except KeyboardInterrupt:
        return "Ctrl+C"
    finally:
        demo.close(verbose=False)
    return None


def serve_stopped(by: str, workdir: Path | None) -> str:
    """What a stopped ``facekit serve`` says: the server's folder (the visitors' uploads and results) deleted, as it
    is when this is said (or none made yet), and that what was downloaded from the page stays."""
    if workdir is None:
        return f"serve stopped by {by} before it served: it wrote nothing"
    if workdir.exists():
        return (
            f"serve stopped by {by}: its folder {workdir} (the visitors' uploads and results) could not be deleted: "
            "delete it yourself"
        )
    return (
        f"serve stopped by {by}: its folder of the visitors' uploads and results is deleted; what was downloaded "
        "from the page stays where it was saved"
    )


def serve(
    host: Annotated[
        str, typer.Option(help="address to listen on; the default is this machine only (0.0.0.0: every network)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 7860,
    model: Annotated[str | None, typer.Option(help="a shipped normalizing model: dlib (default) or sface")] = None,
    checkpoint: Annotated[
        str | None, typer.Option(help="normalizing model file (default: the shipped --model)")
    ] = None,
    sfm: Annotated[
        str | None,
        typer.Option(help="sfm_shape_3448.bin for the avatar (default: the model store; `facekit models import`)"),
    ] = None,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.01, help="largest photo accepted, in MB of 1,048,576 bytes (MiB)")
    ] = 20.0,
    concurrency: Annotated[int, typer.Option(min=1, max=16, help="photos processed at the same time")] = 1,
    max_queue: Annotated[int, typer.Option(min=1, help="requests that may wait; more are refused until one ends")] = 64,
    compare: Annotated[bool, typer.Option(help="compare with the other shipped models when there are any")] = True,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            help="another name the page may be opened by (repeatable; e.g. this machine's name on the network): "
            "requests naming any other host are refused (DNS rebinding)"
        ),
    ] = None,
    device: DeviceOption = "cpu",
) -> None:
    """Serve a local web page for the whole chain, from a photo to its normalized face, avatar and attributes. Upload
    or drop a photo and see its faces, the normalized face with its landmarks, the adjusted photo (before | after),
    the 3-D avatar (interactive, GLB and OBJ to download), skin tone and face-shape ratios and, when several shipped
    models are installed, their comparison. Loopback only unless --host says otherwise; no telemetry, nothing fetched
    from the internet. Uploads are deleted when their page is closed, everything else when the server stops (Ctrl+C).
    --device is where the normalizing models run (the avatar's fit and the page's other work run on the CPU)."""
    from rich.table import Table
    from rich.text import Text

    from facekit import cli
    from facekit.normalize import inference_device, resolve_model
    from facekit.progress import status

    workdir: Path | None = None  # the server's folder, once made
    # A stop says whether the server's folder went (said after the clean-up) instead of the CLI's general line.
    with stops_said(lambda by: serve_stopped(by, workdir)):
        if (
            model is not None or checkpoint is not None
        ):  # a wrong name or path said at once, not after loading (helper-85)
            resolve_model(model, checkpoint)
        runs_on = inference_device(device)  # a GPU that is not there: one line before Gradio's import and the models

        from facekit_serve.engine import Engine, example_photos, return_freed_images
        from facekit_serve.offline import offline_environment

        # facekit's own (paths, hosts and model labels print as they are, "[::1]" too): in a log every line whole, and
        # the table laid out as facekit's tables are (cli.print_block). Before, rich's default console wrapped both at
        # 80 columns there, a warning and the server's folder cut in two.
        console = cli.console
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # --host [::1] as --host ::1
        check_port(host, port)  # before the models load: a taken port is a one-line error, not a minute later
        if not is_loopback(host):
            warning = (
                f": --host {host} makes the page reachable from other machines: anyone who can reach it can upload "
            )
            console.print(Text.assemble(("warning", "yellow"), warning + "photos to this server"))
        workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        held = ExitStack()  # held while this server runs: a crashed server's folder is the next one's to remove
        engine = None
        try:
            held.enter_context(exclusive(workdir, "facekit serve", SERVE_LOCK))
            removed = remove_abandoned(workdir.parent, keep=workdir)
            if removed:
                console.print(
                    f"removed {removed} folder(s) a stopped server left in {workdir.parent} (its visitors' photos)"
                )
            _stop_on_signals()  # a stop while loading cleans up too
            offline_environment()
            return_freed_images()  # a large upload's decoded image does not stay resident once freed
            # Gradio's uploads and copies go in this server's folder even when the caller's environment names another:
            # the promise is that they are deleted when the server stops.
            os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")
            from facekit_serve.web import build_app, launch  # after the environment: gradio reads it on import

            with status(console, "loading the models"):
                engine = Engine.load(
                    workdir / "results",
                    model=model,
                    checkpoint=checkpoint,
                    sfm=sfm,
                    max_upload_mb=max_upload_mb,
                    compare=compare,
                    device=runs_on,
                )
                examples = example_photos(workdir / "examples")
            with status(console, "warming up (one example through the whole chain)"):
                engine.warm_up(examples[0])
            with status(console, "building the page"):
                demo = build_app(engine, examples, max_upload_mb)
            url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
            table = Table(title=f"facekit serve -> {url}", show_header=False)
            table.add_row("models", ", ".join(engine.labels))
            if engine.compare_note:
                table.add_row("comparison", engine.compare_note)
            table.add_row("3-D avatar", "ready" if not engine.avatar_note else engine.avatar_note)
            table.add_row("uploads", f"up to {max_upload_mb:g} MB; {concurrency} at a time, {max_queue} may wait")
            table.add_row("files", f"{workdir} (deleted when the server stops)")
            cli.print_block(table)
            console.print(f"open {url} in a browser; Ctrl+C stops the server")
            limits = (engine.max_upload_bytes, concurrency, max_queue)

            def start() -> None:
                try:
                    launch(demo, host, port, *limits, allow_hosts=allow_host or (), block=False)
                except OSError as error:  # the port was taken while the models loaded
                    taken = error.errno == errno.EADDRINUSE or "Cannot find empty port" in str(error)  # Gradio's
                    reason = "taken while the models loaded" if taken else (error.strerror or str(error))
                    raise FacekitError(f"cannot listen on {host}:{port} ({reason}): choose another --port") from None

            stopped_by = serve_until_stopped(demo, start)
        finally:
            try:
                if engine is not None:
                    engine.close()
            finally:  # (a stop in the engine's close still deletes the folder; a stop held there, the lock freed)
                try:
                    remove_server_folder(workdir)
                finally:
                    held.close()
        if stopped_by is not None:
            # A server stopped while it serves (Ctrl+C, `systemctl stop`, `docker stop`, its terminal closed) has
            # ended as a server ends: exit 0 (a service manager reads 143 as a failure), its line not an error's.
            cli.err_console.print(Text(serve_stopped(stopped_by, workdir)), highlight=False, soft_wrap=True)
