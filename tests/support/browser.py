"""The web page (web/) in headless Chromium for the tests: what it needs, a local static server,
and the browser.

Nothing is downloaded: Playwright for Python drives the system Chromium (Debian's ``chromium``
package; ``$SWIFTFORMER_CHROMIUM`` names another), and the page's MediaPipe files come from
``web/node_modules`` (``npm ci`` in web/).
"""

import contextlib
import functools
import http.server
import os
import pathlib
import shutil
import threading

WEB_DIR = pathlib.Path(__file__).resolve().parents[2] / "web"
#: The page's own files; a site for a test links these and its node_modules.
PAGE_FILES = ("index.html", "app.js")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: --no-sandbox: Chromium's sandbox refuses to run as root (CI). MediaPipe passes images through
#: WebGL even on its CPU delegate, which without a GPU is SwiftShader; Chromium is withdrawing
#: SwiftShader as an automatic WebGL fallback, and --enable-unsafe-swiftshader keeps it.
CHROMIUM_ARGS = ("--no-sandbox", "--enable-unsafe-swiftshader")


def chromium_executable():
    """Path of the Chromium to drive, or None."""
    given = os.environ.get("SWIFTFORMER_CHROMIUM")
    if given:
        return given if os.access(given, os.X_OK) else None
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def unavailable():
    """None if the page can run here, else why not (a skip reason)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if chromium_executable() is None:
        return ("no Chromium executable (apt-get install chromium, or set "
                "SWIFTFORMER_CHROMIUM)")
    if not (WEB_DIR / "node_modules" / "@mediapipe" / "tasks-vision").is_dir():
        return "web/node_modules is missing: run npm ci in web/"
    return None


def make_site(folder, files=()):
    """`folder` laid out as the page's site: links to the page, its node_modules and `files`
    (paths, linked under their own names). Returns `folder`."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for source in [WEB_DIR / name for name in PAGE_FILES + ("node_modules",)] + list(files):
        os.symlink(pathlib.Path(source).resolve(), folder / pathlib.Path(source).name)
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(folder):
    """A static HTTP server of `folder` on 127.0.0.1 (a free port), in a thread; yields its base
    URL ("http://127.0.0.1:PORT/")."""
    handler = functools.partial(_QuietHandler, directory=os.fspath(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def chromium():
    """A headless Playwright Chromium browser (the system executable)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(),
                                             args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()
