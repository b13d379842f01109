#!/usr/bin/env python3
"""The entry CLN's `reckless install` looks for: a plugin named asyncreceive needs asyncreceive.py beside
requirements.txt.  reckless replaces it with a wrapper that runs ``python -m asyncreceive`` (which runs
plugin.py) in the venv it made; run directly, it does the same.  `--plugin=` takes plugin.py itself."""

import runpy

runpy.run_module("asyncreceive", run_name="__main__", alter_sys=True)
