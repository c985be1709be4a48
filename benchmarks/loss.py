"""The losses alone: forward + backward time of each loss against open_clip.ClipLoss, side by side.

    python benchmarks/loss.py                                  # cpu, B = 256 ... 4096, d = 512
    python benchmarks/loss.py --device cuda --batches 1024 4096 --repeats 10
    python benchmarks/loss.py --threads 2 --losses open_clip.ClipLoss rankclip

Inputs are random L2-normalised features (float32, requiring gradient) and s = 1/0.07; every loss sees the
same tensors in one process, so the ratios compare like with like. Each figure is the median of
``--repeats`` timed calls after one warm-up call; the losses take turns, so that a busy machine slows
them alike. Single process (world_size = 1): the global batch is B.
"""

from __future__ import annotations

import argparse
import statistics
import time

import open_clip
import torch
import torch.nn.functional as F

from rankclip.losses import build_loss

REFERENCE = "open_clip.ClipLoss"
LOSS_NAMES = [REFERENCE, "clip", "rankclip", "rankclip_cross", "rankclip_in"]


def make_loss(name: str):
    """A callable (image, text, scale) -> scalar loss."""
    if name == REFERENCE:
        return open_clip.ClipLoss()
    loss_fn = build_loss(name, **({"num_epochs": 2} if name.startswith("rankclip") else {}))
    return lambda image, text, scale: loss_fn(image, text, scale, epoch=2)[0]  # rank weight 2


def time_once(loss_fn, image, text, scale) -> float:
    """Seconds of one forward + backward."""
    for x in (image, text, scale):
        x.grad = None
    if image.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss_fn(image, text, scale).backward()
    if image.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", nargs="+", type=int, default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--losses", nargs="+", default=LOSS_NAMES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [REFERENCE, *(n for n in args.losses if n != REFERENCE)]  # the reference first, always
    losses = {name: make_loss(name) for name in names}

    where = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    )
    print(f"device: {args.device} ({where}), d = {args.dim}, median of {args.repeats} after 1 warm-up")
    header = f"{'B':>5}" + "".join(f" {name:>24}" for name in names)
    print(f"forward + backward, ms (x {REFERENCE})\n{header}\n{'-' * len(header)}")
    for batch in args.batches:
        generator = torch.Generator().manual_seed(batch)
        image, text = (
            F.normalize(torch.randn(batch, args.dim, generator=generator), dim=1).to(device).requires_grad_()
            for _ in range(2)
        )
        scale = torch.tensor(1 / 0.07, device=device, requires_grad=True)
        for loss_fn in losses.values():
            time_once(loss_fn, image, text, scale)  # warm-up
        times = {name: [] for name in losses}
        for _ in range(args.repeats):  # interleaved, so that a busy machine slows every loss alike
            for name, loss_fn in losses.items():
                times[name].append(time_once(loss_fn, image, text, scale))
        reference = 1000 * statistics.median(times[REFERENCE])
        row = f"{batch:>5}"
        for name in losses:
            ms = 1000 * statistics.median(times[name])
            row += f" {f'{ms:.1f} (x{ms / reference:.2f})':>24}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
