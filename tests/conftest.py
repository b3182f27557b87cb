"""Shared fixtures. Tests run offline on tiny random models built here and on small fixture files."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# Tests run the kernel users get (hybrid_kernel "auto": the native C kernel on this CPU) unless a test names another;
# tests/test_hybrid_attention.py holds every kernel to the float64 reference.
# Without a GPU, Triton kernels run on CPU tensors with Triton's interpreter: set before anything imports
# triton.language (its own helpers are built for the interpreter at import), so the fused kernel's tests run here.
if not os.environ.get("CUDA_VISIBLE_DEVICES") and not Path("/dev/nvidiactl").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO.parent / "shared" / "reference" / "llada-8b-instruct"

torch.set_num_threads(min(2, torch.get_num_threads()))

# "llada" -> this package's classes for the Auto classes: tests load model directories the way the project's entry
# points do (the package's code); the ones that check the directories' remote code pass trust_remote_code=True
from support_basis.llada import register_auto_classes  # noqa: E402

register_auto_classes()


def transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """The official checkpoint's metadata (config, parameter index, tokenizer config), when ../shared exists."""
    if not SHARED_REFERENCE.is_dir():
        pytest.skip("../shared/reference/llada-8b-instruct is not present")
    return SHARED_REFERENCE


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random LLaDA-BS directory (2 layers, d_model 64, 4 heads), built once per session."""
    from support_basis.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llada-bs", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(tiny_model_dir).eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def load_script(name: str):
    """``scripts/<name>.py`` as a module, so a test can call its ``main(argv)`` in-process (scripts are command
    lines, not importable library modules)."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def rng() -> torch.Generator:
    """A fresh, seeded generator per test (fresh random inputs, reproducible failures)."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def _inference_only():
    """Nothing here trains: run every test without autograd bookkeeping."""
    with torch.no_grad():
        yield
