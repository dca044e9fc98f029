import pytest

from nanologic.conjugation import ConjugationError, conjugate
from nanologic.lexicon import IMPERSONAL, PERSON_PREDICATES, THING_GROUPS

# Hand-checked forms: (lemma, tense, person, form)
FORMS = [
    ("hablar", "pres", 0, "hablo"),
    ("hablar", "pret", 2, "habló"),
    ("hablar", "impf_sub", 3, "habláramos"),
    ("comer", "fut", 5, "comerán"),
    ("vivir", "pres", 4, "vivís"),
    ("tener", "pres", 0, "tengo"),
    ("tener", "pret", 2, "tuvo"),
    ("tener", "fut", 1, "tendrás"),
    ("obtener", "pret", 5, "obtuvieron"),
    ("componer", "perf", 2, "ha compuesto"),
    ("ser", "impf", 3, "éramos"),
    ("ir", "pres_sub", 2, "vaya"),
    ("ir", "impf_sub", 5, "fueran"),
    ("hacer", "pret", 2, "hizo"),
    ("hacer", "perf", 0, "he hecho"),
    ("pedir", "pret", 2, "pidió"),
    ("pedir", "pres_sub", 3, "pidamos"),
    ("dormir", "pres", 2, "duerme"),
    ("dormir", "pres_sub", 3, "durmamos"),
    ("jugar", "pres", 5, "juegan"),
    ("jugar", "pres_sub", 2, "juegue"),
    ("pagar", "pret", 0, "pagué"),
    ("empezar", "pres_sub", 2, "empiece"),
    ("seguir", "pres", 0, "sigo"),
    ("elegir", "pres", 0, "elijo"),
    ("conocer", "pres", 0, "conozco"),
    ("construir", "pres", 2, "construye"),
    ("leer", "pret", 5, "leyeron"),
    ("decir", "pret", 5, "dijeron"),
    ("oír", "pres", 2, "oye"),
    ("llover", "pres_sub", 2, "llueva"),
    ("volver", "perf_sub", 2, "haya vuelto"),
    ("abrir", "perf", 5, "han abierto"),
    ("saber", "pres", 0, "sé"),
    ("estar", "pres_sub", 5, "estén"),
    ("acertar", "pres", 2, "acierta"),
    ("sacar", "pres_sub", 0, "saque"),
    ("conducir", "pret", 0, "conduje"),
]


@pytest.mark.parametrize("lemma,tense,person,form", FORMS)
def test_hand_checked_forms(lemma, tense, person, form):
    assert conjugate(lemma, tense, person) == form


def test_every_lexicon_verb_conjugates():
    entries = [e for preds in PERSON_PREDICATES.values() for e in preds] + IMPERSONAL
    entries += [e for groups in THING_GROUPS.values() for _, preds in groups for e in preds]
    for entry in entries:
        lemma = entry.split("|")[0].strip()
        lemma = lemma[:-2] if lemma.endswith("se") and lemma[:-2].endswith(("ar", "er", "ir")) else lemma
        for tense in ("pres", "pret", "impf", "fut", "perf", "pres_sub", "impf_sub", "perf_sub"):
            for person in range(6):
                assert conjugate(lemma, tense, person).strip()


def test_bad_input():
    with pytest.raises(ConjugationError):
        conjugate("casa", "pres", 0)
    with pytest.raises(ValueError):
        conjugate("hablar", "pluscuamperfecto", 0)
    with pytest.raises(ValueError):
        conjugate("hablar", "pres", 6)
