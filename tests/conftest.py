"""The test tooling modules of tests/ (transports, grpc_harness, flower_deploy, oracle_contract,
...) are importable from the tests in its folders, which are arranged like the code."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
