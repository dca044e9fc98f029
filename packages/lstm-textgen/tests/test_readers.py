"""Property tests: the JSON readers of a run folder raise only user errors on arbitrary bytes."""

from __future__ import annotations

import contextlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lm_shared.errors import UserError
from lstm_textgen.tokenization import load_tokenizer

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda c: (
        st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["kind", "vocab", "x"]), c, max_size=3)
    ),
    max_leaves=10,
).map(lambda v: json.dumps(v).encode())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=300), _JSON))
def test_tokenizer_config_reader_raises_only_user_errors(tmp_path_factory, data: bytes) -> None:
    folder = tmp_path_factory.mktemp("tok")
    (folder / "tokenizer_config.json").write_bytes(data)
    with contextlib.suppress(UserError):
        load_tokenizer(folder)
