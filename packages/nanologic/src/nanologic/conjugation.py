"""A small Spanish verb conjugator for the generator's curated verbs.

Regular -ar/-er/-ir verbs, stem changes (e→ie, o→ue, e→i, u→ue), spelling changes (c→qu, g→gu,
z→c, g→j, gu→g), -zc- verbs (conocer, conducir), -uir verbs (construir), strong preterites, and
the irregular verbs everyday Spanish needs (ser, estar, ir, haber, tener, hacer, poder, poner,
venir, decir, salir, saber, querer, dar, ver, traer, caer, oír, leer, ...). Tenses: present,
preterite, imperfect, future and present perfect in the indicative; present, imperfect (-ra) and
perfect subjunctive. Persons are indices 0-5: yo, tú, él/ella, nosotros, vosotros, ellos.

Written for the verbs of :mod:`nanologic.lexicon` (every one of them is conjugated in the tests);
PyPI conjugators (verbecc, mlconjug3) need model or data downloads at import or run time, which a
deterministic offline generator cannot depend on.
"""

from __future__ import annotations

TENSES = ("pres", "pret", "impf", "fut", "perf")  # indicative
SUBJUNCTIVE_TENSES = ("pres_sub", "impf_sub", "perf_sub")
PERSONS = ("yo", "tú", "él", "nosotros", "vosotros", "ellos")

# Stem-changing verbs (present indicative/subjunctive), by lemma.
_STEM_CHANGE = {
    **dict.fromkeys(
        [
            "pensar",
            "cerrar",
            "empezar",
            "comenzar",
            "despertar",
            "nevar",
            "sentar",
            "merendar",
            "calentar",
            "recomendar",
            "querer",
            "perder",
            "entender",
            "encender",
            "defender",
            "preferir",
            "sentir",
            "mentir",
            "convertir",
            "divertir",
            "tener",
            "venir",
            "acertar",
            "regar",
            "fregar",
            "atender",
            "hervir",
        ],
        ("e", "ie"),
    ),
    **dict.fromkeys(
        [
            "contar",
            "costar",
            "encontrar",
            "mostrar",
            "probar",
            "recordar",
            "soñar",
            "volar",
            "volver",
            "llover",
            "mover",
            "poder",
            "resolver",
            "devolver",
            "dormir",
            "morir",
            "almorzar",
            "acostar",
            "aprobar",
            "sonar",
            "tronar",
            "demostrar",
            "comprobar",
        ],
        ("o", "ue"),
    ),
    **dict.fromkeys(
        ["pedir", "servir", "repetir", "seguir", "elegir", "medir", "vestir", "competir", "conseguir"],
        ("e", "i"),
    ),
    "jugar": ("u", "ue"),
}

# First person singular present with an irregular stem (the subjunctive is built on it).
_YO = {
    "tener": "tengo",
    "venir": "vengo",
    "hacer": "hago",
    "poner": "pongo",
    "salir": "salgo",
    "decir": "digo",
    "traer": "traigo",
    "caer": "caigo",
    "oír": "oigo",
    "valer": "valgo",
    "ver": "veo",
    "dar": "doy",
    "saber": "sé",
    "caber": "quepo",
}

_FULL_PRESENT = {
    "ser": "soy eres es somos sois son",
    "estar": "estoy estás está estamos estáis están",
    "ir": "voy vas va vamos vais van",
    "haber": "he has ha hemos habéis han",
    "dar": "doy das da damos dais dan",
    "ver": "veo ves ve vemos veis ven",
    "oír": "oigo oyes oye oímos oís oyen",
    "decir": "digo dices dice decimos decís dicen",
    "tener": "tengo tienes tiene tenemos tenéis tienen",
    "venir": "vengo vienes viene venimos venís vienen",
}

_FULL_PRES_SUB = {
    "ser": "sea seas sea seamos seáis sean",
    "estar": "esté estés esté estemos estéis estén",
    "ir": "vaya vayas vaya vayamos vayáis vayan",
    "haber": "haya hayas haya hayamos hayáis hayan",
    "saber": "sepa sepas sepa sepamos sepáis sepan",
    "dar": "dé des dé demos deis den",
}

_FULL_PRETERITE = {
    "ser": "fui fuiste fue fuimos fuisteis fueron",
    "ir": "fui fuiste fue fuimos fuisteis fueron",
    "dar": "di diste dio dimos disteis dieron",
    "ver": "vi viste vio vimos visteis vieron",
}

# Strong preterites: stem + unstressed endings (-e, -iste, -o, -imos, -isteis, -ieron).
_STRONG_PRETERITE = {
    "tener": "tuv",
    "estar": "estuv",
    "andar": "anduv",
    "poder": "pud",
    "poner": "pus",
    "saber": "sup",
    "haber": "hub",
    "hacer": "hic",
    "querer": "quis",
    "venir": "vin",
    "decir": "dij",
    "traer": "traj",
    "conducir": "conduj",
    "producir": "produj",
    "traducir": "traduj",
    "caber": "cup",
}

_FUTURE_STEM = {
    "tener": "tendr",
    "venir": "vendr",
    "poner": "pondr",
    "salir": "saldr",
    "valer": "valdr",
    "poder": "podr",
    "saber": "sabr",
    "haber": "habr",
    "caber": "cabr",
    "querer": "querr",
    "hacer": "har",
    "decir": "dir",
}

_PARTICIPLE = {
    "hacer": "hecho",
    "decir": "dicho",
    "poner": "puesto",
    "ver": "visto",
    "escribir": "escrito",
    "abrir": "abierto",
    "volver": "vuelto",
    "devolver": "devuelto",
    "resolver": "resuelto",
    "romper": "roto",
    "morir": "muerto",
    "cubrir": "cubierto",
    "descubrir": "descubierto",
    "leer": "leído",
    "traer": "traído",
    "caer": "caído",
    "oír": "oído",
    "creer": "creído",
}

_IMPERFECT_IRREGULAR = {
    "ser": "era eras era éramos erais eran",
    "ir": "iba ibas iba íbamos ibais iban",
    "ver": "veía veías veía veíamos veíais veían",
}


class ConjugationError(ValueError):
    """The lemma is not a Spanish infinitive (-ar, -er, -ir, -ír)."""


def _split(lemma: str) -> tuple[str, str]:
    if lemma.endswith("ír"):
        return lemma[:-2], "ir"
    if len(lemma) < 2 or lemma[-2:] not in ("ar", "er", "ir"):
        raise ConjugationError(f"not an infinitive: {lemma!r}")
    return lemma[:-2], lemma[-2:]


def _change_stem(stem: str, change: tuple[str, str]) -> str:
    """Apply the stem change to the last occurrence of the vowel in the stem."""
    old, new = change
    i = stem.rfind(old)
    if i < 0:
        return stem
    if old == "e" and new == "ie" and i == 0:
        new = "ie"
    return stem[:i] + new + stem[i + 1 :]


def _zc(lemma: str) -> bool:
    return lemma.endswith(("ecer", "ocer", "ucir", "acer")) and lemma not in ("hacer", "cocer")


def _uir(lemma: str) -> bool:
    return lemma.endswith("uir") and not lemma.endswith("guir")


def present(lemma: str, person: int) -> str:
    if lemma in _FULL_PRESENT:
        return _FULL_PRESENT[lemma].split()[person]
    stem, ending = _split(lemma)
    endings = {
        "ar": ("o", "as", "a", "amos", "áis", "an"),
        "er": ("o", "es", "e", "emos", "éis", "en"),
        "ir": ("o", "es", "e", "imos", "ís", "en"),
    }[ending]
    if person == 0:
        if lemma in _YO:
            return _YO[lemma]
        if _zc(lemma):
            return stem[:-1] + "zco"
    change = _STEM_CHANGE.get(lemma)
    s = stem
    if change and person in (0, 1, 2, 5):
        s = _change_stem(stem, change)
    if _uir(lemma) and person in (0, 1, 2, 5):
        s = stem + "y"
    if person == 0:
        # spelling: escoger -> escojo, seguir -> sigo, vencer -> venzo
        if s.endswith("g") and ending in ("er", "ir"):
            s = s[:-1] + "j"
        elif s.endswith("gu") and ending == "ir":
            s = s[:-1]
        elif s.endswith("c") and ending in ("er", "ir") and not _zc(lemma):
            s = s[:-1] + "z"
    return s + endings[person]


def _subjunctive_stem(lemma: str, person: int) -> str:
    """Present subjunctive stem from the yo form; -ir stem changers take e→i / o→u in nosotros/vosotros."""
    yo = present(lemma, 0)
    stem = yo[:-1] if yo.endswith("o") else yo
    change = _STEM_CHANGE.get(lemma)
    _, ending = _split(lemma)
    base, _ = _split(lemma)
    if person in (3, 4):
        if lemma in _YO or _zc(lemma):
            return stem
        stem = base
        if ending == "er" and lemma.endswith("ger") or ending == "ir" and lemma.endswith("gir"):
            stem = base[:-1] + "j"
        elif lemma.endswith("guir"):
            stem = base[:-1]
        elif lemma.endswith("cer") or lemma.endswith("cir"):
            stem = base[:-1] + "z"
        if change and ending == "ir":
            stem = _change_stem(stem, ("e", "i") if change[0] == "e" else ("o", "u"))
        if _uir(lemma):
            stem = base + "y"
    return stem


def _spell_before_e(stem: str) -> str:
    """-car/-gar/-zar/-guar stems before an e ending: busqu-, pagu-, empec-, averigü-."""
    if stem.endswith("c"):
        return stem[:-1] + "qu"
    if stem.endswith("g"):
        return stem + "u"
    if stem.endswith("z"):
        return stem[:-1] + "c"
    return stem


def present_subjunctive(lemma: str, person: int) -> str:
    if lemma in _FULL_PRES_SUB:
        return _FULL_PRES_SUB[lemma].split()[person]
    _, ending = _split(lemma)
    stem = _subjunctive_stem(lemma, person)
    if ending == "ar":
        stem = _spell_before_e(stem)
        endings = ("e", "es", "e", "emos", "éis", "en")
    else:
        endings = ("a", "as", "a", "amos", "áis", "an")
    return stem + endings[person]


def preterite(lemma: str, person: int) -> str:
    if lemma in _FULL_PRETERITE:
        return _FULL_PRETERITE[lemma].split()[person]
    if lemma in _STRONG_PRETERITE:
        s = _STRONG_PRETERITE[lemma]
        third_plural = "eron" if s.endswith("j") else "ieron"
        if person == 2 and s.endswith("c"):
            return s[:-1] + "zo"
        return s + ("e", "iste", "o", "imos", "isteis", third_plural)[person]
    stem, ending = _split(lemma)
    if ending == "ar":
        if person == 0:
            return _spell_before_e(stem) + "é"
        return stem + ("é", "aste", "ó", "amos", "asteis", "aron")[person]
    change = _STEM_CHANGE.get(lemma)
    s = stem
    if change and ending == "ir" and person in (2, 5):
        s = _change_stem(stem, ("e", "i") if change[0] == "e" else ("o", "u"))
    vowel_stem = stem[-1:] in ("a", "e", "o") or _uir(lemma)
    if vowel_stem:  # leer -> leyó, construir -> construyó, caer -> cayó, oír -> oyó
        accent = "" if _uir(lemma) else "í"
        return (
            stem
            + (
                "í",
                accent + "ste" if accent else "iste",
                "yó",
                accent + "mos" if accent else "imos",
                accent + "steis" if accent else "isteis",
                "yeron",
            )[person]
        )
    return s + ("í", "iste", "ió", "imos", "isteis", "ieron")[person]


def imperfect(lemma: str, person: int) -> str:
    if lemma in _IMPERFECT_IRREGULAR:
        return _IMPERFECT_IRREGULAR[lemma].split()[person]
    stem, ending = _split(lemma)
    if ending == "ar":
        return stem + ("aba", "abas", "aba", "ábamos", "abais", "aban")[person]
    return stem + ("ía", "ías", "ía", "íamos", "íais", "ían")[person]


def future(lemma: str, person: int) -> str:
    base = _FUTURE_STEM.get(lemma, lemma.replace("ír", "ir"))
    return base + ("é", "ás", "á", "emos", "éis", "án")[person]


def participle(lemma: str) -> str:
    if lemma in _PARTICIPLE:
        return _PARTICIPLE[lemma]
    stem, ending = _split(lemma)
    return stem + ("ado" if ending == "ar" else "ido")


def imperfect_subjunctive(lemma: str, person: int) -> str:
    """Built on the preterite's third person plural: fueron -> fuera, tuvieron -> tuviera."""
    root = preterite(lemma, 5)[:-3]
    if person == 3:
        # the nosotros form takes an accent on the syllable before -ramos
        for plain, accented in (("a", "á"), ("e", "é"), ("i", "í")):
            if root.endswith(plain):
                return root[:-1] + accented + "ramos"
    return root + ("ra", "ras", "ra", "ramos", "rais", "ran")[person]


# Verbs conjugated like their base: obtener like tener, componer like poner.
_COMPOUND_BASES = ("tener", "poner", "venir", "hacer", "decir", "traer")


def conjugate(lemma: str, tense: str, person: int) -> str:
    """The finite form of ``lemma`` (an infinitive, without a clitic) in ``tense`` for ``person`` 0-5.

    ``tense`` is one of :data:`TENSES` or :data:`SUBJUNCTIVE_TENSES`. Raises ConjugationError for
    a lemma that is not an infinitive and ValueError for an unknown tense or person.
    """
    if not 0 <= person <= 5:
        raise ValueError(f"person must be 0-5, got {person}")
    base = next((b for b in _COMPOUND_BASES if lemma.endswith(b) and lemma != b), None)
    if base is not None:
        prefix = lemma[: -len(base)]
        if tense in ("perf", "perf_sub"):
            aux = conjugate("haber", "pres" if tense == "perf" else "pres_sub", person)
            return f"{aux} {prefix}{participle(base)}"
        return prefix + conjugate(base, tense, person)
    if tense == "pres":
        return present(lemma, person)
    if tense == "pret":
        return preterite(lemma, person)
    if tense == "impf":
        return imperfect(lemma, person)
    if tense == "fut":
        return future(lemma, person)
    if tense == "perf":
        return f"{present('haber', person)} {participle(lemma)}"
    if tense == "pres_sub":
        return present_subjunctive(lemma, person)
    if tense == "impf_sub":
        return imperfect_subjunctive(lemma, person)
    if tense == "perf_sub":
        return f"{present_subjunctive('haber', person)} {participle(lemma)}"
    raise ValueError(f"unknown tense {tense!r}; choose from {TENSES + SUBJUNCTIVE_TENSES}")


# The subjunctive a tense takes after "que", "si ... que", "en caso de que", and the indicative a
# definition is normalised to when the clause only appears in the subjunctive.
SUBJUNCTIVE_OF = {
    "pres": "pres_sub",
    "fut": "pres_sub",
    "pret": "impf_sub",
    "impf": "impf_sub",
    "perf": "perf_sub",
}
INDICATIVE_OF_SUBJUNCTIVE = {"pres_sub": "pres", "impf_sub": "pret", "perf_sub": "perf"}
