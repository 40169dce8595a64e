"""History pool of generated images."""

from __future__ import annotations

import pytest
import torch

from gan.errors import GanError
from gan.pool import ImagePool


def _batch(start: int, count: int = 1) -> torch.Tensor:
    return torch.arange(start, start + count, dtype=torch.float32).view(count, 1, 1, 1).expand(count, 1, 2, 2).clone()


def test_pool_fills_then_returns_inputs():
    pool = ImagePool(3, seed=0)
    for start in range(3):
        returned = pool.query(_batch(start))
        assert torch.equal(returned, _batch(start))
    assert len(pool) == 3


def test_full_pool_swaps_about_half():
    pool = ImagePool(5, seed=1)
    pool.query(_batch(0, 5))
    swapped = 0
    queries = 400
    for step in range(queries):
        value = 100 + step
        returned = pool.query(_batch(value))
        if returned[0, 0, 0, 0] != value:
            swapped += 1
            assert returned[0, 0, 0, 0] < value, "a swapped image must be an earlier one"
    assert len(pool) == 5
    assert 0.4 < swapped / queries < 0.6


def test_swapped_image_replaced_by_new():
    pool = ImagePool(1, seed=0)
    pool.query(_batch(7))
    for value in range(8, 40):
        before = pool.images[0].clone()
        returned = pool.query(_batch(value))
        if not torch.equal(returned, _batch(value)):
            assert torch.equal(returned[0], before)
            assert torch.equal(pool.images[0], _batch(value)[0])
            return
    pytest.fail("no swap in 32 queries with probability 1/2 each")


def test_pool_is_seeded():
    outputs = []
    for _ in range(2):
        pool = ImagePool(4, seed=5)
        outputs.append(torch.cat([pool.query(_batch(start, 2)) for start in range(0, 40, 2)]))
    assert torch.equal(outputs[0], outputs[1])


def test_pool_detaches_and_keeps_shape():
    pool = ImagePool(2, seed=0)
    images = torch.randn(3, 2, 5, 4, requires_grad=True)
    returned = pool.query(images * 2)
    assert returned.shape == (3, 2, 5, 4)
    assert not returned.requires_grad
    assert all(not stored.requires_grad for stored in pool.images)


def test_size_zero_returns_inputs():
    images = torch.randn(2, 1, 3, 3)
    assert ImagePool(0).query(images) is images
    with pytest.raises(GanError, match="pool size"):
        ImagePool(-1)
