"""support_basis.process_group: a multi-process command joins its process group so that leaving it frees it, and
leaves it before interpreter shutdown."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from support_basis.process_group import leave_process_group

REPO = Path(__file__).resolve().parents[1]


def test_leaves_an_initialised_group_and_is_a_no_op_without_one(tmp_path):
    leave_process_group()  # no group: nothing to do, no error
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        leave_process_group()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# A fresh interpreter each: whether the hazard bites depends on what was imported before the group existed.
SCRIPT = """
import sys
import torch.distributed as dist
from support_basis.process_group import group_threads, import_before_joining, leave_process_group
if sys.argv[1] == "prepared":
    import_before_joining()
dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=0, world_size=1)
import transformers.modeling_utils  # what loading a model imports once the group exists
assert group_threads(), "a live gloo group has threads"
leave_process_group()
print("THREADS", group_threads())
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="thread names are read from /proc (Linux)")
@pytest.mark.parametrize("order", ["prepared", "unprepared"])
def test_a_group_created_after_the_imports_is_freed_with_its_threads(order, tmp_path):
    """import_before_joining() is what lets destroy_process_group() free gloo's threads before interpreter
    shutdown (a group held past it aborted a finished torchrun rank at random); without it, leave_process_group()
    says so on stderr."""
    out = subprocess.run([sys.executable, "-c", SCRIPT, order, str(tmp_path / "store")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    if order == "prepared":
        assert "THREADS []" in out.stdout and "outlived" not in out.stderr
    else:
        assert "gloo" in out.stdout.split("THREADS", 1)[1]
        assert "outlived destroy_process_group()" in out.stderr and "import_before_joining" in out.stderr
