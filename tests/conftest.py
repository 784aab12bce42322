"""The test tooling modules of tests/ (transports, grpc_harness, flower_deploy, oracle_contract,
...) are importable from the tests in its folders, which are arranged like the code.

Every Ray this session starts (Flower's simulations, verl's trainer, TransferQueue) binds
127.0.0.1 only: Ray reads the setting when it is imported, and its processes inherit it."""

import os
import sys
from pathlib import Path

from fedhh.flower.run import LOOPBACK_RAY

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.update(LOOPBACK_RAY)
