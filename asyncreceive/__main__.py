"""``python -m asyncreceive``: runs plugin.py, the plugin, from the checkout that holds this package.

reckless's wrapper starts a Python plugin this way (it runs the module named after the plugin inside the
venv it made from requirements.txt).
"""

import os
import runpy

runpy.run_path(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "plugin.py"),
               run_name="__main__")
