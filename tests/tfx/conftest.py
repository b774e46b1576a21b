"""The TFX leg (make test-tfx): these tests need TFX and run in .venv-tfx; elsewhere they skip."""

import os
import sys

# tutorial_models and the main conftest's helpers live one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
