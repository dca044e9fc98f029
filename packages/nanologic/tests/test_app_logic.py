"""The functions behind the three tabs of ``nanologic serve`` (no browser, no Gradio server)."""

import json

import pytest

from nanologic import app_logic as logic
from nanologic.app_logic import AppInputError
from nanologic.cli import main
from nanologic.logic import parse, to_ascii, to_unicode


def answer(atoms: dict[str, str], connectors: list[list[str]], formula: str) -> dict:
    node = parse(formula)
    return {
        "atoms": atoms,
        "connectors": connectors,
        "formula": to_unicode(node),
        "formula_ascii": to_ascii(node),
        "valid_formula": True,
        "raw": "",
    }


class ScriptedBackend:
    """Answers known sentences with fixed dicts of the backend contract; records every call."""

    def __init__(self, answers: dict[str, dict]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def formalize(self, sentences: list[str], batch_size: int = 64) -> list[dict]:
        self.calls.append(list(sentences))
        return [self.answers[s] for s in sentences]


RAIN = "Si llueve y no llevo paraguas, entonces me mojo"
ANSWERS = {
    RAIN: answer(
        {"p": "llueve", "q": "llevo paraguas", "r": "me mojo"},
        [["∧", "y"], ["¬", "no"], ["→", "si...entonces"]],
        "(p ∧ ¬q) → r",
    ),
    "Si llueve, me mojo.": answer({"p": "llueve", "q": "me mojo"}, [["→", "si"]], "p → q"),
    "Me mojo.": answer({"p": "me mojo"}, [], "p"),
    "Llueve.": answer({"p": "llueve"}, [], "p"),
    "Hay backup.": answer({"p": "hay backup"}, [], "p"),
    "Basura.": {**answer({}, [], "p"), "formula": "p ∧ (", "formula_ascii": "", "valid_formula": False},
}


@pytest.fixture
def backend():
    return ScriptedBackend(ANSWERS)


# ------------------------------------------------------------------- Formalizar


def test_formalize_atoms_words_connectors_formula_and_table(backend):
    result = logic.formalize_sentence(backend, RAIN)
    assert result.atoms_rows == [
        ["p", "llueve", "llueve"],
        ["q", "llevo paraguas", "llevo paraguas"],
        ["r", "me mojo", "me mojo"],
    ]
    labelled = {label: text for text, label in result.highlighted if label}
    assert labelled["p"] == "llueve" and labelled["q"] == "llevo paraguas" and labelled["r"] == "me mojo"
    assert labelled["∧"] == "y" and labelled["¬"] == "no" and labelled["→"].lower() == "si"
    assert "".join(text for text, _ in result.highlighted) == RAIN  # nothing lost or repeated
    assert [row[2] for row in result.connectors_rows] == ["sí", "sí", "sí"]
    view = result.formula
    assert view.unicode == "(p ∧ ¬q) → r" and view.ascii == "(p & ~q) -> r"
    # (p ∧ ¬q) → r is false only when p and ¬q and ¬r: 7 of 8 rows true, each marked.
    assert (view.n_true, view.n_rows) == (7, 8)
    assert view.table_html.count('class="nl-true"') == 7
    assert view.tree_svg.startswith("<svg") and view.tree_svg.count("<circle") == 6
    assert "<title>q: llevo paraguas</title>" in view.tree_svg


def test_definition_grounded_through_subjunctive_and_inserted_negation():
    sentence = "En caso de que el servidor no responda a tiempo, se pierden los datos"
    spans = logic.ground_definitions(
        sentence, {"p": "el servidor responde a tiempo", "q": "los datos se pierden"}
    )
    words_p = [sentence[a:b] for a, b in spans["p"]]
    assert words_p == ["el", "servidor", "responda", "a", "tiempo"]
    assert {sentence[a:b] for a, b in spans["q"]} >= {"pierden", "datos"}


def test_definition_not_in_the_sentence_is_reported():
    spans = logic.ground_definitions("Llueve", {"p": "el firewall bloquea el tráfico"})
    assert spans["p"] == []


def test_unparsable_model_formula_is_a_message_not_a_crash(backend):
    result = logic.formalize_sentence(backend, "Basura.")
    assert result.formula is None and "no se puede analizar" in result.message


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_sentence(backend, text):
    with pytest.raises(AppInputError, match="vacía"):
        logic.formalize_sentence(backend, text)
    assert backend.calls == []


def test_long_paste_names_the_limit(backend):
    with pytest.raises(AppInputError, match=f"2,000 caracteres; el límite es {logic.MAX_SENTENCE_CHARS}"):
        logic.formalize_sentence(backend, "a" * 2000)
    assert backend.calls == []


def test_edited_formula_rerenders_and_errors_give_the_position():
    view = logic.render_formula("p -> q")
    assert view.unicode == "p → q" and (view.n_true, view.n_rows) == (3, 4)
    with pytest.raises(AppInputError) as err:
        logic.render_formula("p ∧ (q ∨ r")
    message = str(err.value)
    assert "posición 5" in message  # the unclosed '(' is the 5th character
    assert message.splitlines()[-1] == "    ^"
    with pytest.raises(AppInputError, match="posición 3"):
        logic.render_formula("p # q")


def test_formula_over_the_table_limit_says_which_limit():
    letters = [f"p{i}" for i in range(logic.MAX_TABLE_ATOMS + 1)]
    view = logic.render_formula(" ∧ ".join(letters))
    assert view.table_html == ""
    assert f"{logic.MAX_TABLE_ATOMS + 1} átomos" in view.message
    assert f"límite de la página es {logic.MAX_TABLE_ATOMS}" in view.message
    assert view.tree_svg.startswith("<svg")


def test_no_model_is_a_page_message():
    with pytest.raises(AppInputError, match="entrena"):
        logic.require_backend(None, logic.load_backend(runs_dir="/nonexistent").error)


# ------------------------------------------------------------------- Verificar argumento


def test_affirming_the_consequent_from_sentences(backend):
    view = logic.verify_argument(backend, "Si llueve, me mojo.\nMe mojo.", "Llueve.")
    assert backend.calls == [["Si llueve, me mojo.", "Me mojo.", "Llueve."]]  # one model call
    assert (view.verdict, view.name) == ("INVÁLIDO", "afirmación del consecuente")
    assert [line[2] for line in view.lines] == ["p → q", "q", "p"]
    assert {row[0]: row[1] for row in view.shared_rows} == {"p": "llueve", "q": "me mojo"}
    assert view.counterexample == {"p": False, "q": True}
    assert view.table_html.count('class="nl-counterexample"') == 1
    # The counterexample row is F, V, then premises V, V and conclusion F.
    row = view.table_html.split('class="nl-counterexample">')[1].split("</tr>")[0]
    assert row.replace("<b>", "").replace("</b>", "") == "<td>F</td><td>V</td><td>V</td><td>V</td><td>F</td>"


def test_whole_argument_in_one_line(backend):
    view = logic.verify_argument(backend, "Si llueve, me mojo. Me mojo. Por lo tanto, llueve.", "")
    assert (view.verdict, view.name) == ("INVÁLIDO", "afirmación del consecuente")


def test_formulas_need_no_model():
    view = logic.verify_argument(None, "p -> q\np", "q", load_error="sin modelo")
    assert (view.verdict, view.name, view.counterexample) == ("VÁLIDO", "modus ponens", None)
    assert "nl-counterexample" not in view.table_html


def test_formula_and_sentence_atoms_do_not_collide(backend):
    view = logic.verify_argument(backend, "p\nHay backup.", "p ∧ q")
    letters = [line[2] for line in view.lines]
    assert letters[0] == "p" and letters[1] not in ("p",)
    assert view.verdict == "INVÁLIDO"  # the sentence's atom is not the formula's q


def test_argument_errors_name_the_line(backend):
    with pytest.raises(AppInputError, match="Premisa 2 no es válida"):
        logic.verify_argument(backend, "p → q\np → (q", "q")
    with pytest.raises(AppInputError, match="Falta la conclusión"):
        logic.verify_argument(backend, "p → q", "")
    with pytest.raises(AppInputError, match="Premisa 1: el modelo escribió"):
        logic.verify_argument(backend, "Basura.", "p")
    with pytest.raises(AppInputError, match="sin modelo"):
        logic.verify_argument(None, "Llueve.", "p", load_error="sin modelo")
    too_many = " ∧ ".join(f"p{i}" for i in range(logic.MAX_ARGUMENT_ATOMS + 1))
    with pytest.raises(AppInputError, match=f"límite de la tabla de verdad es {logic.MAX_ARGUMENT_ATOMS}"):
        logic.verify_argument(None, too_many, "p0")


def test_argument_table_over_page_limit_still_gives_the_verdict():
    premise = " ∧ ".join(f"p{i}" for i in range(logic.MAX_TABLE_ATOMS + 2))
    view = logic.verify_argument(None, premise, "p0")
    assert view.verdict == "VÁLIDO" and view.table_html == "" and "límite" in view.message


# ------------------------------------------------------------------- Lote


def test_batch_output_is_formalize_output_format(backend, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"input": "Llueve.", "id": 1}\n\n{"input": "Me mojo."}\n{"input": "Hay backup."}\n', encoding="utf-8"
    )
    rows = logic.read_batch(src)
    seen = []
    out = logic.formalize_batch(
        backend, rows, tmp_path / "out.jsonl", progress=lambda d, t: seen.append((d, t))
    )
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["input"] for r in lines] == ["Llueve.", "Me mojo.", "Hay backup."]
    assert lines[0] == {
        "input": "Llueve.",
        "id": 1,
        "atoms": {"p": "llueve"},
        "connectors": [],
        "formula": "p",
        "formula_ascii": "p",
    }
    assert seen[-1] == (3, 3)
    assert logic.results_preview(out) == [["Llueve.", "p"], ["Me mojo.", "p"], ["Hay backup.", "p"]]


def test_batch_progress_per_chunk(tmp_path):
    rows = [{"input": "Llueve."}] * (2 * logic.BATCH_CHUNK + 1)
    seen = []
    logic.formalize_batch(ScriptedBackend(ANSWERS), rows, tmp_path / "o.jsonl", lambda d, t: seen.append(d))
    assert seen == [logic.BATCH_CHUNK, 2 * logic.BATCH_CHUNK, 2 * logic.BATCH_CHUNK + 1]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"input": "Llueve."}\n{"input": \n', "subido.jsonl:2:"),
        ('{"input": "Llueve."}\n\n[1, 2]\n', "subido.jsonl:3: expected a JSON object"),
        ('{"text": "Llueve."}\n', "subido.jsonl:1: field 'input'"),
        ('{"input": "Llueve."}\n{"input": ""}\n', "subido.jsonl:2: La frase está vacía"),
        ('{"input": "¿?"}\n', "subido.jsonl:1: La frase está vacía"),  # punctuation only: no words
        ('{"input": "' + "x" * 2000 + '"}\n', "subido.jsonl:1: La frase tiene 2,000 caracteres"),
        ("\n\n", "no tiene ninguna línea"),
    ],
)
def test_batch_bad_lines_are_named(tmp_path, content, expected):
    src = tmp_path / "upload-1234.jsonl"
    src.write_text(content, encoding="utf-8")
    with pytest.raises(AppInputError) as err:
        logic.read_batch(src, "subido.jsonl")
    assert expected in str(err.value) and str(tmp_path) not in str(err.value)


def test_batch_binary_file(tmp_path):
    src = tmp_path / "x.jsonl"
    src.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(AppInputError, match="UTF-8"):
        logic.read_batch(src)


# ------------------------------------------------------------------- model loading


def test_newest_run_and_missing_or_incompatible_checkpoint(tmp_path, tiny_run):
    assert logic.newest_run(tmp_path / "none") is None
    loaded = logic.load_backend(runs_dir=tmp_path / "none")
    assert loaded.backend is None and "uv run --package nanologic train" in loaded.error
    loaded = logic.load_backend(checkpoint=tmp_path / "missing")
    assert loaded.backend is None and "does not exist" in loaded.error
    broken = tmp_path / "runs" / "broken"
    broken.mkdir(parents=True)
    (broken / "model_config.json").write_text('{"hidden_size": "wide"}')
    (broken / "model.safetensors").write_bytes(b"")
    (broken / "tokenizer").mkdir()
    (broken / "tokenizer" / "tokenizer.json").write_text("{}")
    assert logic.newest_run(tmp_path / "runs") == broken
    loaded = logic.load_backend(runs_dir=tmp_path / "runs")
    assert loaded.backend is None and "No se pudo cargar el modelo" in loaded.error
    loaded = logic.load_backend(checkpoint=tiny_run)
    assert loaded.backend is not None and loaded.error is None and str(tiny_run) in loaded.description


def test_gguf_backend_missing_module_or_file_is_a_message(tmp_path):
    loaded = logic.load_backend(gguf=tmp_path / "model.gguf")
    assert loaded.backend is None and "GGUF" in loaded.error


def test_real_model_through_every_tab(tiny_run, tmp_path):
    """The trained fixture model end to end: whatever it answers, each tab shows it or a message."""
    backend = logic.load_backend(checkpoint=tiny_run).backend
    result = logic.formalize_sentence(backend, RAIN)
    assert result.formula is not None or result.message
    try:
        view = logic.verify_argument(backend, "Si llueve, me mojo. Me mojo. Por lo tanto, llueve.", "")
        assert view.verdict in ("VÁLIDO", "INVÁLIDO")
    except AppInputError as exc:  # a barely trained model may write an unparsable formula
        assert "fórmula" in str(exc)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"input": s}) + "\n" for s in ("Llueve.", "Me mojo.", RAIN)))
    out = logic.formalize_batch(backend, logic.read_batch(src), tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3 and all(
        set(r) >= {"input", "atoms", "connectors", "formula", "formula_ascii"} for r in rows
    )
    cli_out = tmp_path / "cli.jsonl"
    assert (
        main(["formalize", "--checkpoint", str(tiny_run), "--input", str(src), "--output", str(cli_out)]) == 0
    )
    assert cli_out.read_text(encoding="utf-8") == out.read_text(encoding="utf-8")
