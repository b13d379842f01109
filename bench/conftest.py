import os

os.environ.setdefault("RUST", "0")

from pyln.testing.fixtures import *  # noqa: E402,F401,F403
