"""``nanologic serve``: the web app (Gradio) over :mod:`nanologic.app_logic`.

Three tabs: Formalizar, Verificar argumento, Lote. The model is loaded once and only read; what a
user types, sees and downloads lives in that browser session's components (per-session
``gr.State`` for the current atom definitions, a fresh temporary folder per batch), so sessions
never see each other's results. Events that call the model share one queue slot
(``concurrency_id="model"``, limit 1): requests from several users wait their turn.

Offline: Gradio's analytics are switched off before it is imported, the theme uses the fonts
Gradio ships (no font CDN), and the page loads no external asset; the browser test checks it.
"""

from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path
from typing import TypedDict

# Before gradio is imported: no usage analytics, no version check against the network.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr  # noqa: E402

from nanologic import app_logic as logic  # noqa: E402
from nanologic.app_logic import AppInputError, LoadedBackend  # noqa: E402


class _QueueSlot(TypedDict):
    """The keyword arguments that put an event in the model's queue slot (``**MODEL_QUEUE``)."""

    concurrency_limit: int
    concurrency_id: str


MODEL_QUEUE: _QueueSlot = {"concurrency_limit": 1, "concurrency_id": "model"}
CSS = """
.nl-truth { border-collapse: collapse; font-family: ui-monospace, monospace; }
.nl-truth th, .nl-truth td { border: 1px solid #ccc; padding: 2px 10px; text-align: center; }
.nl-truth tr.nl-true td { background: #dcf5dc; }
.nl-truth tr.nl-premises-true td { background: #eef4ff; }
.nl-truth tr.nl-counterexample td { background: #ffd6d6; font-weight: bold; }
.nl-verdict { font-size: 1.6em; font-weight: bold; }
.nl-valid { color: #1a7f37; }
.nl-invalid { color: #c62828; }
.nl-error { white-space: pre-wrap; font-family: ui-monospace, monospace; color: #c62828; }
.nl-table-scroll { max-height: 420px; overflow: auto; }
"""


def _error_html(message: str) -> str:
    return f'<div class="nl-error">{html.escape(message)}</div>' if message else ""


def _table_block(table_html: str, caption: str) -> str:
    return f"<p>{caption}</p><div class='nl-table-scroll'>{table_html}</div>" if table_html else ""


def _formula_outputs(view: logic.FormulaView | None, message: str = ""):
    """Unicode, ASCII, truth table (or the error) and tree of a rendered formula."""
    if view is None:
        return "", "", _error_html(message), ""
    caption = f"Tabla de verdad: verdadera en {view.n_true} de {view.n_rows} filas (marcadas en verde)."
    table = _table_block(view.table_html, caption) if view.table_html else _error_html(view.message)
    return view.unicode, view.ascii, table + _error_html(message), view.tree_svg


class _Handlers:
    """The app's event handlers over one loaded backend, which they only read (every session
    shares it). Their names are the events' names in Gradio (and in its API)."""

    def __init__(self, loaded: LoadedBackend, work_dir: str | Path | None) -> None:
        self.backend, self.load_error = loaded.backend, loaded.error
        self.work_dir = work_dir

    def on_formalize(self, sentence: str):
        try:
            backend = logic.require_backend(self.backend, self.load_error)
            result = logic.formalize_sentence(backend, sentence)
        except AppInputError as exc:
            return (
                _error_html(str(exc)),
                gr.update(value=None),
                [],
                [],
                "",
                "",
                "",
                "",
                {},
            )
        unicode_, ascii_, table, tree = _formula_outputs(result.formula, result.message)
        if result.formula is None:  # let the user correct the model's unparsable answer
            unicode_ = result.raw.get("formula", "")
        status = (
            f'<p class="nl-status">«{html.escape(result.sentence)}»: {len(result.atoms_rows)} átomos, '
            f"{len(result.connectors_rows)} conectores.</p>"
        )
        return (
            status,
            gr.update(value=result.highlighted, color_map=result.colours),
            result.atoms_rows,
            result.connectors_rows,
            unicode_,
            ascii_,
            table,
            tree,
            result.definitions,
        )

    def on_edit_formula(self, text: str, definitions: dict):
        try:
            return _formula_outputs(logic.render_formula(text, definitions))
        except AppInputError as exc:
            return gr.update(), "", _error_html(str(exc)), ""

    def on_verify(self, premises: str, conclusion: str):
        try:
            view = logic.verify_argument(self.backend, premises, conclusion, self.load_error)
        except AppInputError as exc:
            return _error_html(str(exc)), [], [], ""
        css_class = "nl-valid" if view.valid else "nl-invalid"
        verdict = (
            f'<div class="nl-verdict {css_class}" id="nl-verdict">{view.verdict}</div>'
            f'<div id="nl-form-name">{view.name}</div>'
        )
        if view.counterexample is not None:
            row = ", ".join(f"{k} = {'V' if v else 'F'}" for k, v in view.counterexample.items())
            verdict += f"<p>Contraejemplo: {row} (premisas verdaderas, conclusión falsa).</p>"
        caption = "Tabla de verdad (en azul, premisas verdaderas; en rojo, el contraejemplo)."
        table = _table_block(view.table_html, caption) or _error_html(view.message)
        return verdict, view.lines, view.shared_rows, table

    # Gradio injects the progress tracker through this default (its documented idiom).
    def on_batch(self, upload, progress=gr.Progress()):  # noqa: B008
        if upload is None:
            return _error_html('Sube un archivo JSONL con una línea por frase: {"input": "…"}.'), None, []
        path = Path(upload if isinstance(upload, str) else upload.name)
        try:
            backend = logic.require_backend(self.backend, self.load_error)
            rows = logic.read_batch(path, path.name)
            folder = tempfile.mkdtemp(prefix="nanologic-batch-", dir=self.work_dir)
            out = Path(folder) / f"{path.stem}.formalized.jsonl"
            progress((0, len(rows)), desc="Formalizando", unit="frases")
            logic.formalize_batch(
                backend,
                rows,
                out,
                progress=lambda done, total: progress((done, total), desc="Formalizando", unit="frases"),
            )
        except AppInputError as exc:
            return _error_html(str(exc)), None, []
        return (
            f"<p id='nl-batch-done'>{len(rows)} frases formalizadas.</p>",
            str(out),
            logic.results_preview(out),
        )


def build_app(loaded: LoadedBackend, work_dir: str | Path | None = None) -> gr.Blocks:
    """The Blocks app around one loaded backend (which may be None: formulas still work).

    Batch results are written under ``work_dir`` (default: the system's temporary folder), in a
    fresh folder per request.
    """
    handlers = _Handlers(loaded, work_dir)
    header = (
        f"Modelo: `{loaded.description}`"
        if loaded.backend is not None
        else f"⚠️ **Sin modelo.** {loaded.error}"
    )
    # Gradio's copies of uploads and results are deleted after an hour.
    with gr.Blocks(title="nanologic", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# nanologic\nDel español a la lógica proposicional: formaliza frases, comprueba "
            f"argumentos, procesa archivos.\n\n{header}"
        )
        definitions_state = gr.State({})
        with gr.Tab("Formalizar", id="formalizar"):
            _formalize_tab(handlers, definitions_state)
        with gr.Tab("Verificar argumento", id="argumento"):
            _argument_tab(handlers)
        with gr.Tab("Lote", id="lote"):
            _batch_tab(handlers)
    return demo


def _formalize_tab(handlers: _Handlers, definitions_state: gr.State) -> None:
    sentence = gr.Textbox(
        label="Frase en español",
        placeholder=logic.EXAMPLE_SENTENCES[0],
        elem_id="nl-sentence",
    )
    go = gr.Button("Formalizar", variant="primary", elem_id="nl-formalize")
    f_status = gr.HTML(elem_id="nl-f-status")
    highlighted = gr.HighlightedText(
        label="De dónde sale cada átomo (y cada conector)",
        combine_adjacent=False,
        show_legend=True,
        elem_id="nl-highlight",
    )
    with gr.Row():
        atoms_table = gr.Dataframe(
            headers=["átomo", "definición", "palabras de la frase"],
            label="Átomos",
            interactive=False,
            elem_id="nl-atoms",
        )
        connectors_table = gr.Dataframe(
            headers=["conector", "pista", "en la frase"],
            label="Conectores",
            interactive=False,
            elem_id="nl-connectors",
        )
    with gr.Row():
        formula = gr.Textbox(
            label="Fórmula (Unicode; editable: corrígela y pulsa Intro)",
            buttons=["copy"],
            elem_id="nl-formula",
        )
        formula_ascii = gr.Textbox(
            label="Fórmula (ASCII)", buttons=["copy"], interactive=False, elem_id="nl-formula-ascii"
        )
    update = gr.Button("Actualizar tabla de verdad", elem_id="nl-update")
    with gr.Row():
        table = gr.HTML(elem_id="nl-truth-table")
        tree = gr.HTML(label="Árbol de la fórmula", elem_id="nl-tree")
    gr.Examples(
        examples=[[s] for s in logic.EXAMPLE_SENTENCES],
        inputs=[sentence],
        label="Ejemplos (haz clic)",
    )
    f_outputs = [
        f_status,
        highlighted,
        atoms_table,
        connectors_table,
        formula,
        formula_ascii,
        table,
        tree,
        definitions_state,
    ]
    go.click(handlers.on_formalize, [sentence], f_outputs, **MODEL_QUEUE)
    sentence.submit(handlers.on_formalize, [sentence], f_outputs, **MODEL_QUEUE)
    for trigger in (formula.submit, update.click):
        trigger(handlers.on_edit_formula, [formula, definitions_state], [formula, formula_ascii, table, tree])


def _argument_tab(handlers: _Handlers) -> None:
    gr.Markdown(
        "Cada premisa y la conclusión pueden ser una frase (la formaliza el modelo) o una "
        "fórmula (`p → q`, `p -> q`). Los átomos de las frases se comparten por su definición."
    )
    premises = gr.Textbox(
        label="Premisas (una por línea), o el argumento entero en una línea dejando vacía la conclusión",
        lines=4,
        elem_id="nl-premises",
    )
    conclusion = gr.Textbox(label="Conclusión", elem_id="nl-conclusion")
    verify = gr.Button("Verificar", variant="primary", elem_id="nl-verify")
    verdict = gr.HTML(elem_id="nl-argument-result")
    lines_table = gr.Dataframe(
        headers=["", "texto", "fórmula"], label="Formalización", interactive=False, elem_id="nl-lines"
    )
    shared_table = gr.Dataframe(
        headers=["átomo", "definición", "aparece en"],
        label="Átomos compartidos",
        interactive=False,
        elem_id="nl-shared",
    )
    argument_table = gr.HTML(elem_id="nl-argument-table")
    gr.Examples(
        examples=[list(pair) for pair in logic.EXAMPLE_ARGUMENTS],
        inputs=[premises, conclusion],
        label="Ejemplos (haz clic)",
    )
    verify.click(
        handlers.on_verify,
        [premises, conclusion],
        [verdict, lines_table, shared_table, argument_table],
        **MODEL_QUEUE,
    )


def _batch_tab(handlers: _Handlers) -> None:
    gr.Markdown(
        "Sube un archivo JSONL con un objeto por línea y un campo `input` (la frase). "
        "El resultado tiene el formato de `nanologic formalize --output`: cada línea con sus "
        "campos más `atoms`, `connectors`, `formula` y `formula_ascii`."
    )
    upload = gr.File(label="Archivo JSONL", file_types=[".jsonl"], elem_id="nl-upload")
    run_batch = gr.Button("Formalizar el archivo", variant="primary", elem_id="nl-run-batch")
    batch_status = gr.HTML(elem_id="nl-batch-status")
    download = gr.File(label="Resultados (JSONL)", interactive=False, elem_id="nl-download")
    preview = gr.Dataframe(
        headers=["input", "formula"], label="Vista previa", interactive=False, elem_id="nl-preview"
    )
    run_batch.click(handlers.on_batch, [upload], [batch_status, download, preview], **MODEL_QUEUE)


def serve(
    checkpoint: str | Path | None = None,
    gguf: str | Path | None = None,
    port: int = 7860,
    host: str = "127.0.0.1",
    auth: list[tuple[str, str]] | None = None,
    runs_dir: str | Path = "runs",
) -> None:
    """Load the model, start the app on host:port, print its address and serve until Ctrl-C."""
    loaded = logic.load_backend(checkpoint, gguf, runs_dir)
    if loaded.backend is not None:
        print(f"modelo: {loaded.description}", flush=True)
    else:
        print(f"aviso: {loaded.error}", flush=True)
    work_dir = tempfile.TemporaryDirectory(prefix="nanologic-serve-")
    demo = build_app(loaded, work_dir.name)
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        share=False,
        auth=auth,
        theme=gr.themes.Default(),
        css=CSS,
        footer_links=[],
    )
    print(f"nanologic serve: {demo.local_url} (Ctrl-C para parar)", flush=True)
    try:
        demo.block_thread()
    finally:
        demo.close()
        work_dir.cleanup()
