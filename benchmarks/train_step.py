"""Training-step throughput per loss: samples/s and peak memory, against open_clip.ClipLoss as reference.

    python benchmarks/train_step.py                      # tiny + ViT-B-32, batch 128 and 256
    python benchmarks/train_step.py --models rankclip-tiny-vit --batches 128 --steps 10

Each (model, batch, loss) runs in a fresh subprocess so that peak memory (CUDA: max allocated; CPU: peak
RSS) belongs to that configuration alone. Inputs are random images and tokens: this measures compute, not
data loading. "loss ms" is the loss's own forward + backward on the step's features.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

LOSS_NAMES = ["open_clip.ClipLoss", "clip", "cyclip", "alip", "rankclip", "rankclip_cross", "rankclip_in"]


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(model_name: str, batch: int, loss_name: str, steps: int, device_name: str) -> dict:
    import open_clip
    import torch

    from rankclip.losses import build_loss
    from rankclip.models import create_model
    from rankclip.optim import make_optimizer

    torch.manual_seed(0)
    device = torch.device(device_name)
    model, _, _, tokenizer = create_model(model_name, device=device)
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    context = tokenizer.context_length
    if loss_name == "open_clip.ClipLoss":
        loss_fn = open_clip.ClipLoss()
    else:
        kwargs = {"num_epochs": 2} if loss_name.startswith("rankclip") else {}
        loss_fn = build_loss(loss_name, **kwargs).to(device)
    optimizer = make_optimizer(model, 1e-4, 0.1, (0.9, 0.999), 1e-8)
    images = torch.randn(batch, 3, size, size, device=device)
    n_texts = 2 * batch if loss_name == "alip" else batch
    texts = torch.randint(1, 49000, (n_texts, context), device=device)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def compute_loss(image_features, text_features, scale):
        if loss_name == "open_clip.ClipLoss":
            return loss_fn(image_features, text_features, scale)
        captions = None
        if loss_name == "alip":
            text_features, captions = text_features.chunk(2)
        return loss_fn(image_features, text_features, scale, epoch=2, caption_features=captions)[0]

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with amp:
            out = model(images, texts)
        features = [out[k].detach().float().requires_grad_() for k in ("image_features", "text_features")]
        scale = out["logit_scale"].detach().float().requires_grad_()
        _sync(device)
        start = time.perf_counter()
        loss = compute_loss(*features, scale)
        loss.backward()
        _sync(device)
        loss_s = time.perf_counter() - start
        out["image_features"].backward(features[0].grad, retain_graph=True)
        out["text_features"].backward(features[1].grad, retain_graph=True)
        out["logit_scale"].backward(scale.grad)
        optimizer.step()
        return loss_s

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    start = time.perf_counter()
    loss_seconds = sum(step() for _ in range(steps))
    _sync(device)
    elapsed = time.perf_counter() - start
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": model_name,
        "batch": batch,
        "loss": loss_name,
        "samples_per_s": batch * steps / elapsed,
        "peak_mb": peak_mb,
        "loss_ms": 1000 * loss_seconds / steps,
        "device": device_name,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["rankclip-tiny-vit", "ViT-B-32"])
    parser.add_argument("--batches", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--losses", nargs="+", default=LOSS_NAMES)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.one:
        print(json.dumps(measure(args.models[0], args.batches[0], args.losses[0], args.steps, args.device)))
        return

    header = (
        f"{'model':<18} {'batch':>5} {'loss':<19} {'samples/s':>10} {'vs ClipLoss':>11} {'peak MB':>9} "
        f"{'loss ms':>9}"
    )
    print(f"device: {args.device}, {args.steps} timed steps after 1 warm-up\n{header}\n{'-' * len(header)}")
    for model_name in args.models:
        for batch in args.batches:
            reference = None
            for loss_name in args.losses:
                command = [
                    sys.executable,
                    __file__,
                    "--one",
                    "--models",
                    model_name,
                    "--batches",
                    str(batch),
                    "--losses",
                    loss_name,
                    "--steps",
                    str(args.steps),
                    "--device",
                    args.device,
                ]
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode != 0:
                    print(
                        f"{model_name:<18} {batch:>5} {loss_name:<19} failed: {result.stderr.strip()[-200:]}"
                    )
                    continue
                row = json.loads(result.stdout.strip().splitlines()[-1])
                reference = reference or (row["samples_per_s"] if loss_name == "open_clip.ClipLoss" else None)
                ratio = f"{row['samples_per_s'] / reference:.3f}" if reference else "-"
                print(
                    f"{model_name:<18} {batch:>5} {loss_name:<19} {row['samples_per_s']:>10.1f} {ratio:>11} "
                    f"{row['peak_mb']:>9.0f} {row['loss_ms']:>9.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
