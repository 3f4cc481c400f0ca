import sys
from pathlib import Path

# tests/ on the path so helper modules (e.g. _sweep_toy) import in spawned worker processes too
sys.path.insert(0, str(Path(__file__).resolve().parent))
