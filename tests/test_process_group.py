"""support_basis.process_group: a finished multi-process command leaves its process group before shutdown."""

import torch.distributed as dist

from support_basis.process_group import leave_process_group


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
