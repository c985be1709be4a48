"""Two CPU processes (gloo) train with every loss under DistributedDataParallel and must match one process.

For each loss: the mean of the two ranks' losses equals the single-process loss on the concatenated batch,
and the DDP-averaged gradients equal the single-process gradients. A second check feeds exactly tied
features (duplicated across the two ranks) straight into the losses, so the tie-breaking permutation of
the GLOBAL columns must agree between the ranks and the single process.
"""

from __future__ import annotations

import copy
import datetime
import math

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rankclip.losses import LOSSES, build_loss, gather_features

WORLD_SIZE = 2
LOCAL_BATCH = 4
OPTIONS = {
    "rankclip": {"num_epochs": 4},
    "rankclip_cross": {"num_epochs": 4},
    "rankclip_in": {"num_epochs": 4},
}
EPOCH = 3  # ranking weight 2
ATOL = 1e-5


class Encoders(nn.Module):
    """A tiny image and text "encoder" pair (the text one also embeds the captions) and the logit scale."""

    def __init__(self):
        super().__init__()
        self.image = nn.Linear(6, 5)
        self.text = nn.Linear(7, 5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, images, texts, captions):
        return (
            F.normalize(self.image(images), dim=-1),
            F.normalize(self.text(texts), dim=-1),
            F.normalize(self.text(captions), dim=-1),
            self.logit_scale.exp(),
        )


def inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    batch = WORLD_SIZE * LOCAL_BATCH
    return (
        torch.randn(batch, 6, generator=generator),
        torch.randn(batch, 7, generator=generator),
        torch.randn(batch, 7, generator=generator),
    )


def tied_features():
    """±1/4 unit vectors (exact dot products) whose texts repeat across the two ranks."""
    generator = torch.Generator().manual_seed(1)
    batch = WORLD_SIZE * LOCAL_BATCH
    image, text = ((torch.randint(0, 2, (batch, 16), generator=generator) * 2.0 - 1) / 4 for _ in range(2))
    text[LOCAL_BATCH:] = text[:LOCAL_BATCH]
    return image, text, (text + image) / 2


def check_ddp_matches_single_process(rank: int, name: str) -> None:
    torch.manual_seed(0)
    model = Encoders()  # the same initial weights on both ranks (and DDP broadcasts rank 0's)
    single = copy.deepcopy(model)
    ddp = DistributedDataParallel(model)
    images, texts, captions = inputs()
    local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    options = OPTIONS.get(name, {})

    loss_fn = build_loss(name, rank=rank, world_size=WORLD_SIZE, **options)
    image, text, caption, scale = ddp(images[local], texts[local], captions[local])
    loss, terms = loss_fn(image, text, scale, epoch=EPOCH, caption_features=caption)
    loss.backward()  # DDP averages the gradients over the ranks
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    mean_loss /= WORLD_SIZE

    single_fn = build_loss(name, **options)
    image, text, caption, scale = single(images, texts, captions)
    single_loss, single_terms = single_fn(image, text, scale, epoch=EPOCH, caption_features=caption)
    single_loss.backward()

    torch.testing.assert_close(mean_loss, single_loss.detach(), rtol=0, atol=ATOL, msg=f"{name}: loss")
    for (param_name, param), single_param in zip(model.named_parameters(), single.parameters(), strict=True):
        torch.testing.assert_close(
            param.grad, single_param.grad, rtol=0, atol=ATOL, msg=f"{name}: {param_name}"
        )
    for buffer_name, buffer in loss_fn.state_dict().items():  # ALIP running means, RankCLIP call counter
        torch.testing.assert_close(buffer, single_fn.state_dict()[buffer_name], msg=f"{name}: {buffer_name}")
    if "rank_weight" in terms:
        assert float(terms["rank_weight"]) == float(single_terms["rank_weight"]) == 2.0


def check_tied_features(rank: int, name: str) -> None:
    """Features as leaves: each rank's local gradient is W × the single-process gradient (the gather's
    backward sums every rank's loss), and the mean of the ranks' logit-scale gradients is the single one."""
    image, text, caption = tied_features()
    local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    options = OPTIONS.get(name, {})
    local_inputs = [x[local].clone().requires_grad_() for x in (image, text, caption)]
    scale = torch.tensor(1 / 0.07, requires_grad=True)
    loss, _ = build_loss(name, rank=rank, world_size=WORLD_SIZE, **options)(
        local_inputs[0], local_inputs[1], scale, epoch=EPOCH, caption_features=local_inputs[2]
    )
    loss.backward()
    mean_loss, scale_grad = loss.detach().clone(), scale.grad.clone()
    dist.all_reduce(mean_loss)
    dist.all_reduce(scale_grad)

    global_inputs = [x.clone().requires_grad_() for x in (image, text, caption)]
    single_scale = torch.tensor(1 / 0.07, requires_grad=True)
    single_loss, _ = build_loss(name, **options)(
        global_inputs[0], global_inputs[1], single_scale, epoch=EPOCH, caption_features=global_inputs[2]
    )
    single_loss.backward()
    torch.testing.assert_close(mean_loss / WORLD_SIZE, single_loss.detach(), rtol=0, atol=ATOL, msg=name)
    torch.testing.assert_close(scale_grad / WORLD_SIZE, single_scale.grad, rtol=0, atol=ATOL, msg=name)
    for local_input, global_input in zip(local_inputs, global_inputs, strict=True):
        if global_input.grad is None:  # the caption of the losses that do not use it
            assert local_input.grad is None
            continue
        torch.testing.assert_close(local_input.grad, WORLD_SIZE * global_input.grad[local], rtol=0, atol=ATOL)


def check_gather_features(rank: int) -> None:
    """Rank order and the summed backward, on both paths: one packed collective (same dtypes) and one
    collective per tensor (mixed dtypes)."""
    for second_dtype in (torch.float32, torch.float64):
        first = torch.full((2, 3), float(rank), requires_grad=True)
        second = torch.full((2, 1), 10.0 + rank, dtype=second_dtype, requires_grad=True)
        gathered = gather_features(first, second, rank=rank, world_size=WORLD_SIZE)
        torch.testing.assert_close(gathered[0], torch.cat([torch.full((2, 3), float(r)) for r in range(2)]))
        torch.testing.assert_close(
            gathered[1], torch.cat([torch.full((2, 1), 10.0 + r, dtype=second_dtype) for r in range(2)])
        )
        (gathered[0].sum() + 3 * gathered[1].sum()).backward()  # every rank's sum counts every slice
        torch.testing.assert_close(first.grad, torch.full_like(first, WORLD_SIZE))
        torch.testing.assert_close(second.grad, torch.full_like(second, 3 * WORLD_SIZE))


def worker(rank: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        check_gather_features(rank)
        for name in LOSSES:
            check_ddp_matches_single_process(rank, name)
            check_tied_features(rank, name)
            dist.barrier()
    finally:
        dist.destroy_process_group()


def test_every_loss_under_ddp_matches_one_process(tmp_path):
    # An assertion in a child raises torch.multiprocessing.ProcessRaisedException here (with its traceback),
    # and spawn terminates the other child, so a failure cannot hang in a collective.
    mp.spawn(worker, args=(str(tmp_path / "init"),), nprocs=WORLD_SIZE, join=True)
