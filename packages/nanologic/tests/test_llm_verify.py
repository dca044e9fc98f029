import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from nanologic.errors import NanologicError
from nanologic.generator import generate
from nanologic.llm_verify import LLMVerifier, verify_with_llm


class _Handler(BaseHTTPRequestHandler):
    calls = []
    fail_first = 0
    fail_status = 429
    replies = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append((self.path, self.headers.get("Authorization"), body))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(type(self).fail_status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        content = type(self).replies.pop(0)
        payload = {
            "choices": [{"message": {"content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    _Handler.calls, _Handler.fail_first, _Handler.fail_status, _Handler.replies = [], 0, 429, []
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1"
    httpd.shutdown()


def _examples():
    return [e for e in generate(40, seed=0) if len(e["thought"]["identified_atoms"]) == 2][:3]


def test_verify_accepts_corrects_rejects_with_cache_retries_and_cost(server, tmp_path):
    examples = _examples()
    letters = [a["atom"] for a in examples[1]["thought"]["identified_atoms"]]
    _Handler.fail_first = 1  # one 429 first: retried with backoff
    _Handler.replies = [
        json.dumps({"verified": True, "confidence": 0.9, "corrected_formula": None, "issues": []}),
        json.dumps(
            {
                "verified": False,
                "confidence": 0.8,
                "corrected_formula": f"{letters[0]} ∨ {letters[1]}",
                "issues": ["era ∨"],
            }
        ),
        "```json\n"
        + json.dumps({"verified": False, "confidence": 0.7, "corrected_formula": None, "issues": ["mal"]})
        + "\n```",
    ]
    cache = tmp_path / "cache.jsonl"
    verifier = LLMVerifier(
        server,
        "test-model",
        api_key="k",
        cache_path=cache,
        requests_per_minute=0,
        price_in=1.0,
        price_out=2.0,
    )
    kept, report = verify_with_llm(examples, verifier)
    assert len(kept) == 2 and report.rejected["rejected by the LLM"] == 1
    assert (
        kept[1]["output"]["formula"] == f"{letters[0]} ∨ {letters[1]}"
        and kept[1]["verification"]["corrected"]
    )
    assert report.notes["usage"]["prompt_tokens"] == 300
    assert report.notes["cost_usd"] == pytest.approx((300 * 1.0 + 60 * 2.0) / 1e6)
    path, auth, body = _Handler.calls[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer k" and body["model"] == "test-model"
    # Second run: everything from the cache, no request.
    n_calls = len(_Handler.calls)
    again = LLMVerifier(server, "test-model", cache_path=cache, requests_per_minute=0)
    kept2, _ = verify_with_llm(examples, again)
    assert len(_Handler.calls) == n_calls and again.usage["cache_hits"] == 3 and len(kept2) == 2


def test_correction_that_changes_atoms_is_rejected(server):
    _Handler.replies = [json.dumps({"verified": False, "corrected_formula": "z → w"})]
    verifier = LLMVerifier(server, "m", requests_per_minute=0)
    kept, report = verify_with_llm(_examples()[:1], verifier)
    assert kept == [] and report.rejected["rejected: correction changes the atoms"] == 1


def test_gives_up_after_retries(server):
    _Handler.fail_first = 10
    verifier = LLMVerifier(server, "m", max_retries=2, requests_per_minute=0)
    with pytest.raises(NanologicError, match="after 3 attempts"):
        verifier.ask("hola")
    assert _Handler.fail_first == 10 - 3  # the SDK's retries: three requests, then it gave up


def test_a_refused_request_is_not_retried(server):
    _Handler.fail_first, _Handler.fail_status = 10, 400
    verifier = LLMVerifier(server, "m", max_retries=2, requests_per_minute=0)
    with pytest.raises(NanologicError, match="LLM API error 400"):
        verifier.ask("hola")
    assert _Handler.fail_first == 10 - 1


def test_needs_url_and_model():
    with pytest.raises(NanologicError, match="base-url"):
        LLMVerifier("", "")
