import os

os.environ.setdefault("RUST", "0")

from pyln.testing.fixtures import *  # noqa: E402,F401,F403
from tests.ast_threads import serialize_werkzeug_rule_compile  # noqa: E402

serialize_werkzeug_rule_compile()
