import sys
from pathlib import Path

# tests import their shared in-process plugin (world_plugin.py) by module name
sys.path.insert(0, str(Path(__file__).parent))
