"""The Gradio wiring of ``nanologic serve`` (built, not served) and the ``serve`` command's checks."""

import os
import socket

import pytest

pytest.importorskip("gradio")

from nanologic.app import build_app  # noqa: E402
from nanologic.app_logic import LoadedBackend  # noqa: E402
from nanologic.cli import main  # noqa: E402

MODEL_EVENTS = {"on_formalize", "on_verify", "on_batch"}


def test_analytics_off_and_three_tabs():
    import gradio as gr

    demo = build_app(LoadedBackend(None, "", "sin modelo"))
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and demo.analytics_enabled is False
    tabs = [block.label for block in demo.blocks.values() if isinstance(block, gr.Tab)]
    assert tabs == ["Formalizar", "Verificar argumento", "Lote"]


def test_model_calls_share_one_queue_slot():
    demo = build_app(LoadedBackend(None, "", "sin modelo"))
    model_fns = [fn for fn in demo.fns.values() if fn.name in MODEL_EVENTS]
    assert {fn.name for fn in model_fns} == MODEL_EVENTS
    assert {fn.concurrency_id for fn in model_fns} == {"model"}
    assert {fn.concurrency_limit for fn in model_fns} == {1}
    # Re-rendering an edited formula needs no model and does not wait behind it.
    edit = [fn for fn in demo.fns.values() if fn.name == "on_edit_formula"]
    assert edit and all(fn.concurrency_id != "model" for fn in edit)


def test_serve_refuses_a_busy_port_and_bad_options(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--runs-dir", str(tmp_path)]) == 2
        assert f"127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", "a", "--gguf", "b.gguf"]) == 2
    assert "alternatives" in capsys.readouterr().err
    auth = tmp_path / "auth.txt"
    auth.write_text("# users\nana\n")
    assert main(["serve", "--auth-file", str(auth)]) == 2
    assert f"{auth}:2: expected 'user:password'" in capsys.readouterr().err
