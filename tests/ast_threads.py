"""CPython before 3.11.8 / 3.12.1 keeps one AST recursion counter per interpreter, shared by threads:
two threads building ASTs at once can fail with "SystemError: AST constructor recursion depth mismatch"
(python/cpython gh-106905).  pyln-testing starts nodes in threads, and each node's bitcoind proxy is a
Flask app whose URL rules werkzeug compiles through ``ast`` (seen once in `make test`, 2026-12-02, on
Python 3.11.7: a node's start failed).  ``serialize_werkzeug_rule_compile`` makes those compiles take
turns; imported by the conftests that start nodes."""

import sys
import threading


def serialize_werkzeug_rule_compile() -> None:
    if sys.version_info >= (3, 12, 1) or (3, 11, 8) <= sys.version_info < (3, 12):
        return
    try:
        from werkzeug.routing import rules
    except ImportError:
        return
    if getattr(rules.Rule.compile, "_asyncreceive_serialized", False):
        return
    original, lock = rules.Rule.compile, threading.Lock()

    def compile(self) -> None:
        with lock:
            return original(self)
    compile._asyncreceive_serialized = True
    rules.Rule.compile = compile
