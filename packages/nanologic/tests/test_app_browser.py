"""``nanologic serve`` in a real browser: headless Chromium driven by Playwright.

Skipped cleanly when Chromium (Debian's ``chromium``, installed by ``.ci/run``) or Playwright is
missing. The app runs in a subprocess with the trained fixture model, under an audit hook that
logs every network connection it attempts outside this machine; the page's own requests are
recorded too. Screenshots go to the test's temporary folder, and also to
``$NANOLOGIC_SCREENSHOT_DIR`` when set (how the README's pictures are made, with
``$NANOLOGIC_BROWSER_CHECKPOINT`` naming a fully trained run).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nanologic import app_logic as logic

CHROMIUM = os.environ.get("NANOLOGIC_CHROMIUM", "/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)), reason=f"no Chromium at {CHROMIUM}"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

# Chromium on a machine with a closed network: no background connections, no sandbox as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RAIN = "Si llueve y no llevo paraguas, entonces me mojo"
ARGUMENT = "Si llueve, me mojo. Me mojo. Por lo tanto, llueve."
TIMEOUT_MS = 120_000

# Runs the CLI under an audit hook that records connections to anything but loopback.
_SERVER = r"""
import ipaddress, sys
log = open(sys.argv[1], "a", encoding="utf-8")
def _outside(host):
    if isinstance(host, bytes):
        host = host.decode()
    if host in (None, "", "localhost"):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True
    return not (address.is_loopback or address.is_unspecified)
def _hook(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple) and _outside(args[1][0]):
        log.write(f"connect {args[1]!r}\n"); log.flush()
    elif event == "socket.getaddrinfo" and _outside(args[0]):
        log.write(f"getaddrinfo {args[0]!r}\n"); log.flush()
sys.addaudithook(_hook)
from nanologic.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoint(request):
    env = os.environ.get("NANOLOGIC_BROWSER_CHECKPOINT")
    return Path(env) if env else request.getfixturevalue("tiny_run")


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """The app on a free port; yields (url, path of the outside-connection log, output lines)."""
    folder = tmp_path_factory.mktemp("serve")
    net_log = folder / "outside-connections.log"
    net_log.touch()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-c", _SERVER, str(net_log), "serve", "--checkpoint", str(checkpoint)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("nanologic serve: http"):
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 180
    while not ready.is_set() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if not ready.is_set():
        proc.kill()
        pytest.fail("the app did not start:\n" + "\n".join(lines))
    url = f"http://127.0.0.1:{port}/"
    assert f"nanologic serve: http://127.0.0.1:{port}" in "\n".join(lines)
    yield url, net_log, lines
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def backend(checkpoint):
    """The same model in the test process: what the page must show for a sentence. On one thread,
    as the server runs (OMP_NUM_THREADS=1): the untrained model's logits are near ties, which
    another thread count's rounding can flip."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield logic.load_backend(checkpoint=checkpoint).backend
    torch.set_num_threads(threads)


def _new_page(browser, url: str, outside: list[str]):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)

    def record(request) -> None:
        if not request.url.startswith((url, "data:", "blob:")):
            outside.append(request.url)

    page.on("request", record)
    page.goto(url)
    page.locator("#nl-sentence textarea").wait_for()
    return page


def _shot(page, name: str, folder: Path, docs_name: str | None = None) -> Path:
    """A full-page PNG in ``folder``; with ``docs_name``, also in $NANOLOGIC_SCREENSHOT_DIR."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    docs = os.environ.get("NANOLOGIC_SCREENSHOT_DIR")
    if docs and docs_name:
        Path(docs).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(docs) / f"{docs_name}.png")
    return path


def _table_rows(page, selector: str) -> list[list[str]]:
    """Cell texts of a gr.Dataframe's body rows, read by their ARIA roles: Gradio 6 draws the body
    as ``div[role=row]`` of ``div[role=gridcell]``; its ``tbody tr`` is a hidden sizing copy of the
    first row only."""
    rows = page.locator(f"{selector} [role=row]:has([role=gridcell])")
    out = []
    for i in range(rows.count()):
        cells = rows.nth(i).locator("[role=gridcell]")
        out.append([(cells.nth(j).text_content() or "").strip() for j in range(cells.count())])
    return [r for r in out if any(r)]


def _wait_for_text(locator, predicate, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        text = locator.inner_text() if locator.count() else ""
        if predicate(text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"timed out; last text: {text!r}")


def _formalize(page, sentence: str) -> None:
    page.locator("#nl-sentence textarea").fill(sentence)
    page.locator("#nl-formalize").click()


def _formula_value(page) -> str:
    return page.locator("#nl-formula textarea").input_value()


def _wait_formalized(page, backend, sentence: str) -> logic.Formalization:
    """Wait for the page's answer for ``sentence``, check it is the model's, and return the latter."""
    _wait_for_text(page.locator("#nl-f-status"), lambda t: f"«{sentence}»" in t)
    expected = logic.formalize_sentence(backend, sentence)
    want = expected.formula.unicode if expected.formula is not None else expected.raw["formula"]
    assert _formula_value(page) == want
    return expected


def test_three_tabs_in_chromium(server, browser, backend, tmp_path):
    url, net_log, _ = server
    outside: list[str] = []
    page = _new_page(browser, url, outside)

    # --- Formalizar: the model's atoms and formula for the user's sentence, as the page shows them
    _formalize(page, RAIN)
    expected = _wait_formalized(page, backend, RAIN)
    want_rows = [r[:2] for r in expected.atoms_rows]
    deadline = time.monotonic() + 30  # the table may render after the formula box
    atoms_rows = _table_rows(page, "#nl-atoms")
    while [r[:2] for r in atoms_rows] != want_rows:
        if time.monotonic() > deadline:
            raise AssertionError(f"page atoms {atoms_rows} != {want_rows}")
        time.sleep(0.2)
        atoms_rows = _table_rows(page, "#nl-atoms")
    if expected.formula is not None:
        assert page.locator("#nl-formula-ascii textarea").input_value() == expected.formula.ascii
        n_true = page.locator("#nl-truth-table tr.nl-true").count()
        assert n_true == expected.formula.n_true
        assert page.locator("#nl-tree svg.nl-tree").count() == 1
    print(f"page atoms: {atoms_rows}; formula: {_formula_value(page)!r}")
    _shot(page, "formalizar-modelo", tmp_path)

    # Correcting the formula re-renders the table with the project's parser; errors give a position.
    page.locator("#nl-formula textarea").fill("(p ∧ ¬q) → (r")
    page.locator("#nl-update").click()
    error = _wait_for_text(page.locator("#nl-truth-table"), lambda t: "posición" in t)
    assert "posición 12" in error  # the unclosed "(" is the 12th character
    page.locator("#nl-formula textarea").fill("(p & ~q) -> r")
    page.locator("#nl-formula textarea").press("Enter")
    _wait_for_text(page.locator("#nl-truth-table"), lambda t: "verdadera en 7 de 8 filas" in t)
    assert page.locator("#nl-truth-table tr.nl-true").count() == 7
    assert page.locator("#nl-formula-ascii textarea").input_value() == "(p & ~q) -> r"
    assert _formula_value(page) == "(p ∧ ¬q) → r"  # normalised by the project's parser
    assert page.locator("#nl-tree svg.nl-tree circle").count() == 6
    _shot(page, "formalizar", tmp_path, docs_name="formalizar")

    # Empty sentence and a 2,000-character paste: a message in the page, the app goes on.
    _formalize(page, "")
    _wait_for_text(page.locator("#nl-f-status"), lambda t: "vacía" in t)
    page.locator("#nl-sentence textarea").fill("Llueve " * 286)
    page.locator("#nl-formalize").click()
    _wait_for_text(page.locator("#nl-f-status"), lambda t: f"el límite es {logic.MAX_SENTENCE_CHARS}" in t)

    # --- Verificar argumento: through formulas (deterministic), then the sentence argument.
    page.get_by_role("tab", name="Verificar argumento").click()
    page.locator("#nl-premises textarea").fill("p → q\nq")
    page.locator("#nl-conclusion textarea").fill("p")
    page.locator("#nl-verify").click()
    verdict = _wait_for_text(page.locator("#nl-argument-result"), lambda t: "VÁLIDO" in t)
    assert "INVÁLIDO" in verdict and "afirmación del consecuente" in verdict
    assert page.locator("#nl-argument-table tr.nl-counterexample").count() == 1
    _shot(page, "argumento", tmp_path, docs_name="argumento")

    page.locator("#nl-premises textarea").fill(ARGUMENT)
    page.locator("#nl-conclusion textarea").fill("")
    page.locator("#nl-verify").click()
    try:
        want = logic.verify_argument(backend, ARGUMENT, "")
        _wait_for_text(page.locator("#nl-lines"), lambda t: "Si llueve, me mojo." in t)
        shown = page.locator("#nl-argument-result").inner_text()
        assert want.verdict in shown and want.name in shown
        _shot(page, "argumento-frases", tmp_path, docs_name="argumento")
    except logic.AppInputError as exc:  # the fixture model wrote an unparsable formula
        first_line = str(exc).splitlines()[0]
        _wait_for_text(page.locator("#nl-argument-result"), lambda t: first_line in t)

    # --- Lote: a malformed line is named, then 3 lines in and 3 results out.
    page.get_by_role("tab", name="Lote").click()
    bad = tmp_path / "malo.jsonl"
    bad.write_text('{"input": "Llueve."}\n{"input": "Me mojo."\n', encoding="utf-8")
    page.locator("#nl-upload input[type=file]").set_input_files(str(bad))
    page.locator("#nl-run-batch").click()
    _wait_for_text(page.locator("#nl-batch-status"), lambda t: "malo.jsonl:2" in t)

    sentences = ["Llueve.", "Me mojo.", RAIN]
    good = tmp_path / "frases.jsonl"
    good.write_text("".join(json.dumps({"input": s, "id": i}) + "\n" for i, s in enumerate(sentences)))
    page.reload()
    page.get_by_role("tab", name="Lote").click()
    page.locator("#nl-upload input[type=file]").set_input_files(str(good))
    page.locator("#nl-run-batch").click()
    _wait_for_text(page.locator("#nl-batch-status"), lambda t: "3 frases" in t)
    with page.expect_download() as download_info:
        page.locator("#nl-download a").first.click()
    downloaded = tmp_path / "resultados.jsonl"
    download_info.value.save_as(downloaded)
    rows = [json.loads(line) for line in downloaded.read_text(encoding="utf-8").splitlines()]
    assert [r["input"] for r in rows] == sentences and [r["id"] for r in rows] == [0, 1, 2]
    model_rows = backend.formalize(sentences)
    assert [r["formula"] for r in rows] == [m["formula"] for m in model_rows]
    assert all(set(r) == {"input", "id", "atoms", "connectors", "formula", "formula_ascii"} for r in rows)
    _shot(page, "lote", tmp_path, docs_name="lote")

    page.context.close()
    assert outside == [], f"the page requested outside resources: {outside}"
    assert net_log.read_text() == "", f"the server tried to reach the network:\n{net_log.read_text()}"
    print(f"screenshots: {sorted(p.name for p in tmp_path.glob('*.png'))} in {tmp_path}")


def test_two_sessions_get_their_own_results(server, browser, backend, tmp_path):
    url, net_log, _ = server
    outside: list[str] = []
    first = _new_page(browser, url, outside)
    second = _new_page(browser, url, outside)
    for page in (first, second):
        page.get_by_role("tab", name="Verificar argumento").click()
    first.locator("#nl-premises textarea").fill("p → q\np")
    first.locator("#nl-conclusion textarea").fill("q")
    second.locator("#nl-premises textarea").fill("p ∨ q\np")
    second.locator("#nl-conclusion textarea").fill("¬q")
    # Both in flight at once: the queue serves them in turn, each page gets its own answer.
    first.locator("#nl-verify").click()
    second.locator("#nl-verify").click()
    one = _wait_for_text(first.locator("#nl-argument-result"), lambda t: "VÁLIDO" in t)
    two = _wait_for_text(second.locator("#nl-argument-result"), lambda t: "VÁLIDO" in t)
    assert "modus ponens" in one and "INVÁLIDO" not in one
    assert "INVÁLIDO" in two and "afirmación de un disyunto" in two

    # Model calls from both sessions, then per-session formula edits.
    for page, sentence in ((first, RAIN), (second, "Me mojo.")):
        page.get_by_role("tab", name="Formalizar").click()
        _formalize(page, sentence)
    _wait_formalized(first, backend, RAIN)
    _wait_formalized(second, backend, "Me mojo.")
    first.locator("#nl-formula textarea").fill("p ∨ q")
    first.locator("#nl-update").click()
    deadline = time.monotonic() + 60
    while (
        first.locator("#nl-formula-ascii textarea").input_value() != "p | q" and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert first.locator("#nl-formula-ascii textarea").input_value() == "p | q"
    assert second.locator("#nl-formula textarea").input_value() != "p ∨ q"
    assert second.locator("#nl-sentence textarea").input_value() == "Me mojo."
    _shot(second, "segunda-sesion", tmp_path)
    for page in (first, second):
        page.context.close()
    assert outside == []
    assert net_log.read_text() == ""
