"""tests/ast_threads.py: werkzeug's URL rule compiles (each node's bitcoind proxy) take turns on the
Pythons whose AST recursion counter threads share (gh-106905)."""

import sys
import threading
import time

import pytest

from tests.ast_threads import serialize_werkzeug_rule_compile

AFFECTED = sys.version_info < (3, 11, 8) or (3, 12) <= sys.version_info < (3, 12, 1)


@pytest.mark.skipif(not AFFECTED, reason="this Python's AST recursion counter is not shared by threads")
def test_rule_compiles_take_turns(monkeypatch):
    rules = pytest.importorskip("werkzeug.routing.rules")
    inside, most = [0], [0]

    def slow_compile(self):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.02)
        inside[0] -= 1
    monkeypatch.setattr(rules.Rule, "compile", slow_compile)
    serialize_werkzeug_rule_compile()
    threads = [threading.Thread(target=rules.Rule.compile, args=(None,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
    wrapped = rules.Rule.compile
    serialize_werkzeug_rule_compile()                 # once only: not wrapped twice
    assert rules.Rule.compile is wrapped


def test_rules_still_build_urls():
    routing = pytest.importorskip("werkzeug.routing")
    serialize_werkzeug_rule_compile()
    urls = routing.Map([routing.Rule("/block/<int:height>", endpoint="block")]).bind("localhost")
    assert urls.build("block", {"height": 7}) == "/block/7"
