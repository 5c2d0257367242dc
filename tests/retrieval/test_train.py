"""The contrastive retriever: loss going down on a tiny model, the index's top-k, adapters checked against their encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agentlab.retrieval.catalog import domain_tools
from agentlab.retrieval.encoder import Encoder, RetrieverAdapterError
from agentlab.retrieval.pairs import Pair
from agentlab.retrieval.train import ContrastiveTrainer, ToolIndex, info_nce


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    from tiny_encoder import save_tiny_encoder

    return save_tiny_encoder(tmp_path_factory.mktemp("tiny") / "encoder")


def _pairs(tools):
    return [Pair(f"user: I need to {t.name.replace('_', ' ')}, please.", t.id, f"d{i}") for i, t in enumerate(tools)]


def test_info_nce_is_the_cross_entropy_of_the_positive_among_the_candidates():
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    loss = info_nce(q, q, torch.tensor([0, 1]), temperature=1.0)
    expected = -np.log(np.e / (np.e + 1))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(info_nce(q, q, torch.tensor([1, 0]), 1.0)) > float(loss)


def test_batches_cover_every_pair_before_repeating_and_are_seeded():
    pairs = _pairs(domain_tools("airline"))
    trainer = ContrastiveTrainer(max_steps=3, batch_size=4)
    batches = trainer.batches(pairs)
    assert [len(b) for b in batches] == [4, 4, 4] and len({p.tool for b in batches for p in b}) == 12
    assert trainer.batches(pairs) == batches


def test_the_loss_goes_down_over_steps_and_the_trained_index_ranks_the_tool_first(tiny_encoder_dir, tmp_path):
    tools = domain_tools("airline")
    pairs = _pairs(tools)
    encoder = Encoder(str(tiny_encoder_dir), max_query_tokens=32, max_tool_tokens=32)
    before = ToolIndex.build(encoder, tools)  # loaded for inference first: training loads it again, trainable
    logged = []
    history = ContrastiveTrainer(max_steps=40, batch_size=8, learning_rate=3e-3, hard_negatives=2).fit(
        encoder, pairs, tools, lambda figures, step: logged.append((step, figures["loss"]))
    )
    losses = [h["loss"] for h in history]
    assert [s for s, _ in logged] == list(range(1, 41))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), losses
    encoder.save(tmp_path / "adapter", {"log_history": history})
    trained = encoder.with_adapter(tmp_path / "adapter")
    index = ToolIndex.build(trained, tools)
    assert not np.allclose(index.matrix, before.matrix)
    assert index.matrix.shape[0] == len(tools) and np.allclose(np.linalg.norm(index.matrix, axis=1), 1.0, atol=1e-5)
    top = index.top_k(trained.embed([p.query for p in pairs], "query"), 3)
    assert sum(row[0] == p.tool for row, p in zip(top, pairs, strict=True)) >= len(pairs) - 2
    index.save(tmp_path / "index.npz")
    again = ToolIndex.load(tmp_path / "index.npz")
    assert again.ids == index.ids and np.array_equal(again.matrix, index.matrix)


def test_an_adapter_for_another_encoder_is_refused(tiny_encoder_dir, tmp_path):
    tools = domain_tools("mock")
    encoder = Encoder(str(tiny_encoder_dir), num_layers=1, max_query_tokens=16, max_tool_tokens=16)
    ContrastiveTrainer(max_steps=1, batch_size=2).fit(encoder, _pairs(tools), tools, lambda f, s: None)
    encoder.save(tmp_path / "adapter", {"log_history": []})
    Encoder(str(tiny_encoder_dir), num_layers=1).check_adapter(tmp_path / "adapter")  # its own encoder: fine
    with pytest.raises(
        RetrieverAdapterError, match=r"trained for another encoder \(layers_used: adapter 1 vs encoder 2\)"
    ):
        Encoder(str(tiny_encoder_dir)).with_adapter(tmp_path / "adapter").load()
    with pytest.raises(RetrieverAdapterError, match="is not a retriever adapter"):
        Encoder(str(tiny_encoder_dir)).check_adapter(tmp_path)
