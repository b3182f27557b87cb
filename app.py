#!/usr/bin/env python
"""Web demo: chat with a LLaDA(-BS) model and watch each answer being unmasked, step by step, live.

    pip install -r requirements-app.txt
    python app.py                                   # the shipped trained tiny model, http://127.0.0.1:7860
    python app.py --model models/LLaDA-8B-Instruct-BS --device cuda --dtype bfloat16 --port 7861

The canvas shows the masks, the tokens revealed at each step coloured by their confidence, the step counter, the
time per step and the forward passes (NFE). Controls: the hybrid-attention knobs, the sampler's settings, and
compare mode (exact vs hybrid attention, same prompt and seed, with the share of positions that agree). Runs
offline: no analytics, no share link, nothing fetched from the internet. The logic is in support_basis/demo/.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from support_basis.errors import ArgumentParser, UserError, cli, number
from support_basis.loading import DEFAULT_MODEL as SHIPPED_MODEL
from support_basis.model_dir import check_device, check_model_dir

DEFAULT_MODEL = str(SHIPPED_MODEL)
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_model(name: str) -> str:
    """The model directory to load: ``name`` (a relative path is the caller's, as every command line here takes
    it; the default is the installed package's tiny model, an absolute path) or a hub id. Its files are checked
    here, before anything loads."""
    if name == DEFAULT_MODEL and not Path(name).exists():
        raise UserError(f"--model {name}: the shipped trained tiny model is missing; reinstall the package (or, in "
                        "a checkout, git checkout -- support_basis/checkpoints) or pass --model DIR (a random one: "
                        "python scripts/make_tiny_model.py DIR)")
    check_model_dir(name)
    return name


def check_address(host: str, port: int):
    """Fail now, before the model loads, if the page could not be served at host:port."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise UserError(f"--host {host!r} is not an address of this machine; use 127.0.0.1 (this machine only) or "
                        "0.0.0.0 (every interface)") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise UserError(f"--host {host} --port {port}: cannot serve there ({err.strerror}); pass another "
                            "--port (or stop what is using it)") from None


def parse_args(argv=None) -> argparse.Namespace:
    """The flags, every one checked (address free, device present, model directory complete) before loading."""
    p = ArgumentParser(prog="app.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=number(1, 65535, integer=True), default=7860, help="port (default 7860)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="a LLaDA-BS model directory or hub id (default: the shipped trained tiny model, "
                        "support_basis/checkpoints/llada-tiny)")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--delay", type=number(0, 10), default=0.05,
                   help="initial display delay between shown steps, in seconds (default 0.05; 0 = as decoded)")
    a = p.parse_args(argv)
    check_address(a.host, a.port)
    a.device = check_device(a.device)
    a.model_path = resolve_model(a.model)
    return a


@cli(prog="app.py")
def main(argv=None):
    a = parse_args(argv)

    from support_basis.loading import load_model_and_tokenizer
    from support_basis.demo.session import Demo
    from support_basis.demo.shared_model import SharedModel
    from support_basis.demo.ui import build_page, launch

    model, tokenizer = load_model_and_tokenizer(a.model_path, a.dtype, a.device)
    demo = Demo(SharedModel(model.requires_grad_(False), tokenizer), delay_seconds=a.delay)
    print(f"app.py: {a.model} loaded on {a.device}; serving on http://{a.host}:{a.port}", file=sys.stderr, flush=True)
    launch(build_page(demo, model_name=a.model), a.host, a.port)


if __name__ == "__main__":
    main()
