"""The MoCo v2 method itself: checks that fail when a part of the method is broken.

Learning curves on small data cannot tell a working MoCo from one whose queue never changes, whose
key encoder is not a momentum copy, or whose keys share BatchNorm statistics with their queries
(kNN 0.53-0.58 either way on digits). These unit checks can: the queue holds exactly the last
keys, the key encoder is exactly m * old + (1 - m) * query, every key is normalised with another
group of samples than its query (split BN in one process, shuffle BN across ranks), and the
logits are the positive then the queue over the temperature, with label 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import training.distributed as distributed
from tests.training._moco_stub import stub_moco
from training.distributed import DistInfo
from training.moco import MoCo
from training.pretrain_loop import key_encoder_for

BATCH = 4


def _views(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    return torch.rand(BATCH, 3, 8, 8, generator=generator), torch.rand(
        BATCH, 3, 8, 8, generator=generator
    )


def _train_step(moco: MoCo, optimizer: torch.optim.Optimizer, step: int):
    output = moco(*_views(step))
    optimizer.zero_grad()
    output.loss.backward()
    optimizer.step()
    return output


def test_the_queue_holds_exactly_the_last_keys_after_several_steps() -> None:
    moco = stub_moco(queue_size=12)  # 3 batches: 5 steps wrap the ring
    optimizer = torch.optim.SGD(moco.encoder_q.parameters(), lr=0.1)
    keys = [_train_step(moco, optimizer, step).keys for step in range(5)]
    ring = torch.roll(moco.queue, -int(moco.queue_ptr), dims=1)  # oldest key first
    torch.testing.assert_close(ring, torch.cat(keys[-3:]).T, rtol=0, atol=0)


def test_the_key_encoder_is_a_momentum_copy_of_the_query_encoder() -> None:
    moco = stub_moco(queue_size=12, momentum=0.9)
    pairs = list(zip(moco.encoder_k.parameters(), moco.encoder_q.parameters(), strict=True))
    assert all(torch.equal(k, q) and k.data_ptr() != q.data_ptr() for k, q in pairs)
    optimizer = torch.optim.SGD(moco.encoder_q.parameters(), lr=0.5)
    for step in range(3):
        key_before = [k.detach().clone() for k, _ in pairs]
        query_before = [q.detach().clone() for _, q in pairs]
        output = _train_step(moco, optimizer, step)
        for (k, _), k_old, q_old in zip(pairs, key_before, query_before, strict=True):
            torch.testing.assert_close(k, 0.9 * k_old + 0.1 * q_old)
        # The update comes before the key forward: this step's keys use the new key encoder.
        with torch.no_grad():
            expected = F.normalize(moco.encoder_k(_views(step)[1]), dim=1)
        torch.testing.assert_close(output.keys, expected)
    assert not all(torch.equal(k, q) for k, q in pairs)  # it lags behind the query encoder


def test_logits_are_the_positive_then_the_queue_over_the_temperature() -> None:
    moco = stub_moco(queue_size=12)
    im_q, im_k = _views(0)
    queue = moco.queue.clone()  # the negatives of this step: the queue before this step's keys
    with torch.no_grad():
        q = F.normalize(moco.encoder_q(im_q), dim=1)
    output = moco(im_q, im_k)
    positive = (q * output.keys).sum(dim=1, keepdim=True)
    expected = torch.cat([positive, q @ queue], dim=1) / moco.temperature
    torch.testing.assert_close(output.logits, expected)
    torch.testing.assert_close(output.loss, -expected.log_softmax(dim=1)[:, 0].mean())


class RecordingEncoder(nn.Module):
    """Returns each image's sample id (its pixel value) as its key and records the order of the
    batches it encodes."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[int]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        ids = images[:, 0, 0, 0]
        self.seen.append(ids.long().tolist())
        return ids[:, None].repeat(1, 2)


def _id_images(ids: range) -> torch.Tensor:
    return torch.tensor(list(ids), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)


def test_split_bn_keys_are_normalised_with_other_samples_than_their_queries() -> None:
    groups, n = 4, 16  # bn_splits groups: sample at position p is normalised in group p % 4
    torch.manual_seed(0)
    encoder = RecordingEncoder()
    key_encode = key_encoder_for("split", DistInfo(0, 1, 0, torch.device("cpu")))
    keys = key_encode(encoder, _id_images(range(n)))
    assert keys[:, 0].tolist() == list(range(n))  # un-permuted: key i is sample i's key
    order = encoder.seen[0]
    query_groups = [{i for i in range(n) if i % groups == g} for g in range(groups)]
    key_groups = [{order[p] for p in range(n) if p % groups == g} for g in range(groups)]
    # Each key's BN statistics come from a set of samples unlike its own query's group.
    for sample in range(n):
        mine = next(g for g in key_groups if sample in g)
        assert mine != query_groups[sample % groups]


def test_shuffle_bn_encodes_keys_on_other_ranks_than_their_queries(monkeypatch) -> None:
    world, per_rank = 2, 8
    images = _id_images(range(world * per_rank))
    permutation = torch.randperm(world * per_rank, generator=torch.Generator().manual_seed(3))
    encoder = RecordingEncoder()

    def fake_gather(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() == 4:  # the key images of every rank
            return images
        return images[permutation][:, 0, 0, 0, None].repeat(1, 2)  # every rank's keys

    monkeypatch.setattr(distributed, "gather_all", fake_gather)
    monkeypatch.setattr(distributed, "shuffle_indices", lambda total: permutation)
    monkeypatch.setattr(distributed.dist, "broadcast", lambda tensor, src: None)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: world)
    for rank in range(world):
        monkeypatch.setattr(distributed.dist, "get_rank", lambda rank=rank: rank)
        mine = range(rank * per_rank, (rank + 1) * per_rank)
        key_encode = key_encoder_for("shuffle", DistInfo(rank, world, rank, torch.device("cpu")))
        keys = key_encode(encoder, images[rank * per_rank : (rank + 1) * per_rank])
        assert keys[:, 0].tolist() == list(mine)  # un-shuffled back to this rank's order
        assert set(encoder.seen[-1]) != set(mine)  # encoded among other ranks' samples
    assert sorted(i for seen in encoder.seen for i in seen) == list(range(world * per_rank))
