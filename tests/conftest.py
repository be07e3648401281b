"""One torch thread for the whole suite (and the recipes it starts as subprocesses).

The tests' networks are tiny: more threads gain nothing, and beside another job on a core
(a long benchmark, a second test run) multi-threaded parallel regions wait for descheduled
threads and the suite crawls. Set before any test imports torch's thread pool into use.
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"  # subprocesses (recipe command lines) and threads=auto

import torch

torch.set_num_threads(1)
