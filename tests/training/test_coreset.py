"""Coreset selection: every strategy's size and determinism, real losses, diversity, hybrid, the Hydra options."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from sft_helpers import tiny_model, tokenizer, weather_dialog

from agentlab.training.coreset import (
    STRATEGIES,
    CoresetSelector,
    farthest_point,
    heuristic_loss,
    per_sample_loss,
    token_counts,
    token_features,
)
from agentlab.training.formatter import IGNORE_INDEX, AgentSFTFormatter

CITIES = ["Paris", "Oslo", "Lima", "Quito", "Hanoi", "Cairo", "Perth", "Reykjavik", "Ulaanbaatar", "Nairobi"]


@pytest.fixture(scope="module")
def samples() -> list[dict[str, Any]]:
    """Formatted dialogs of different lengths (0-4 extra turns): real token ids, real masks."""
    formatter = AgentSFTFormatter(tokenizer(), max_length=4096)
    return [formatter.format_dialog(weather_dialog(city, extra_turns=i % 5)) for i, city in enumerate(CITIES)]


@pytest.fixture(scope="module")
def reference(samples: list[dict[str, Any]]) -> np.ndarray:
    """Each sample alone through the model, transformers' own label-shifted mean cross-entropy."""
    model = tiny_model()
    with torch.inference_mode():
        return np.array(
            [
                model(input_ids=torch.tensor([s["input_ids"]]), labels=torch.tensor([s["labels"]])).loss.item()
                for s in samples
            ]
        )


def token_samples(groups: list[tuple[list[int], int]], seed: int = 0) -> list[dict[str, Any]]:
    """``count`` samples per (token pool, count): each 12 labelled tokens drawn from its pool."""
    rng = np.random.default_rng(seed)
    out = []
    for pool, count in groups:
        for _ in range(count):
            ids = rng.choice(pool, size=12).tolist()
            out.append({"input_ids": [1, 2, *ids], "labels": [IGNORE_INDEX, IGNORE_INDEX, *ids]})
    return out


CLUSTERS = [(list(range(100, 110)), 6), (list(range(500, 510)), 6), (list(range(900, 910)), 1)]


def test_per_sample_loss_is_the_model_loss_with_padding(samples: list[dict[str, Any]], reference: np.ndarray) -> None:
    lengths = {len(s["input_ids"]) for s in samples}
    assert len(lengths) > 3  # batches really mix lengths, so padding matters
    model = tiny_model()
    model.train()
    losses = per_sample_loss(model, samples, batch_size=3)
    assert model.training  # the mode is restored
    model.eval()
    np.testing.assert_allclose(losses, reference, rtol=1e-5, atol=1e-5)


def test_loss_topk_picks_the_highest_real_losses(samples: list[dict[str, Any]], reference: np.ndarray) -> None:
    ranked = np.argsort(-reference)
    assert reference[ranked[3]] - reference[ranked[4]] > 1e-4  # a clear cut between kept and dropped
    picked = CoresetSelector("loss_topk", target_size=4, batch_size=4).select_indices(samples, model=tiny_model())
    assert set(picked.tolist()) == set(ranked[:4].tolist())
    assert [s["text"] for s in CoresetSelector("loss_topk", target_size=4).select(samples, model=tiny_model())] == [
        samples[i]["text"] for i in sorted(ranked[:4])
    ]


def test_loss_topk_without_a_model_uses_the_seed_heuristic(samples: list[dict[str, Any]]) -> None:
    tokens = {"input_ids": [7, 7, 9, 9]}
    assert heuristic_loss([tokens])[0] == pytest.approx(4 / 512 + 1.0 / 5)
    picked = CoresetSelector("loss_topk", target_size=3).select_indices(samples)
    assert set(picked.tolist()) == set(np.argsort(-heuristic_loss(samples))[:3].tolist())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sizes_and_determinism(strategy: str) -> None:
    pools = [(list(range(100 * g, 100 * g + 30)), 8) for g in range(1, 6)]
    data = token_samples(pools)
    losses = np.random.default_rng(3).random(len(data))
    expected = len(data) if strategy == "none" else 10
    for seed in (0, 1):
        a = CoresetSelector(strategy, target_size=10, seed=seed).select_indices(data, losses=losses)
        b = CoresetSelector(strategy, target_size=10, seed=seed).select_indices(data, losses=losses)
        assert len(a) == expected == len(set(a.tolist())) and a.tolist() == sorted(a.tolist())
        assert np.array_equal(a, b)
    everything = CoresetSelector(strategy, target_size=len(data) + 5).select_indices(data, losses=losses)
    assert everything.tolist() == list(range(len(data)))
    assert CoresetSelector(strategy, target_size=None).select_indices(data).tolist() == list(range(len(data)))


def test_random_depends_on_the_seed() -> None:
    data = token_samples([(list(range(10, 40)), 50)])
    draws = {tuple(CoresetSelector("random", target_size=10, seed=s).select_indices(data).tolist()) for s in range(4)}
    assert len(draws) > 1


def test_diversity_spreads_over_clusters() -> None:
    data = token_samples(CLUSTERS)
    cluster = [0] * 6 + [1] * 6 + [2]
    for seed in range(5):
        picked = CoresetSelector("diversity", target_size=3, seed=seed).select_indices(data)
        assert sorted(cluster[i] for i in picked) == [0, 1, 2]  # the lone outlier is always found


def test_features_are_unit_cosine_bags() -> None:
    data = token_samples(CLUSTERS)
    features = token_features(data, dim=64)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
    similarity = features @ features.T
    assert similarity[0, 1:6].min() > similarity[0, 6:].max()  # same pool is closer than another pool


def reference_farthest_point(features: np.ndarray, k: int, centers: list[int], start: int) -> list[int]:
    """The plain greedy: after every pick, each row's highest similarity to anything chosen, from scratch."""
    similarity = features @ features.T
    chosen = list(centers) or [start]
    picks = [] if centers else [start]
    while len(picks) < k:
        closest = similarity[:, chosen].max(axis=1)
        closest[chosen] = np.inf
        pick = int(np.argmin(closest))  # ties: the lowest index
        picks.append(pick)
        chosen.append(pick)
    return picks


def spread_features(dim: int = 32) -> np.ndarray:
    """Real hashed features of 320 samples from 40 token pools of very different sizes (no two rows equal)."""
    sizes = [1 + (g * 7) % 17 for g in range(40)]
    features = token_features(token_samples([(list(range(50 * g, 50 * g + 12)), c) for g, c in enumerate(sizes)]), dim)
    assert len(np.unique(features, axis=0)) == len(features)
    return features


@pytest.mark.parametrize("candidates", [1, 3, 17, 4096])
@pytest.mark.parametrize("centers", [[], [5, 40, 41, 200, 7, 319]])
def test_farthest_point_picks_what_the_plain_greedy_picks(candidates: int, centers: list[int]) -> None:
    """The lazy bounds change the cost, never the picks or their order (few candidates: many catch-ups)."""
    features = spread_features()
    expected = reference_farthest_point(features, 120, centers, start=11)
    picked = farthest_point(features, 120, np.array(centers, dtype=np.int64), start=11, candidates=candidates)
    assert picked.tolist() == expected


@pytest.mark.parametrize("candidates", [1, 4, 4096])
def test_farthest_point_breaks_ties_by_the_lowest_index(candidates: int) -> None:
    """Rows repeated many times (halves and ones: every product exact), so most comparisons are ties."""
    rng = np.random.default_rng(4)
    distinct = np.eye(6, dtype=np.float32)[:, :5] + 0.5 * np.eye(6, dtype=np.float32)[:, 1:]
    features = distinct[rng.integers(0, 6, size=90)]
    expected = reference_farthest_point(features, 30, [], start=2)
    assert farthest_point(features, 30, np.zeros(0, dtype=np.int64), start=2, candidates=candidates).tolist() == expected


def test_a_candidate_tied_with_a_lower_row_left_out_waits() -> None:
    """After picks 0 and 3, rows 1 and 2 are both 0.5 from the picks; row 2 (a candidate that rose to 0.5)
    must not be taken before row 1 (left out of the two candidates, at 0.5 all along)."""
    features = np.array([[1, 0, 0], [0.5, 0, 0], [0.25, 0, 0.5], [0, 0, 1]], dtype=np.float32)
    assert reference_farthest_point(features, 3, [], start=0) == [0, 3, 1]
    assert farthest_point(features, 3, np.zeros(0, dtype=np.int64), start=0, candidates=2).tolist() == [0, 3, 1]


def test_diversity_and_hybrid_select_the_plain_greedy_picks() -> None:
    sizes = [1 + (g * 7) % 17 for g in range(40)]
    data = token_samples([(list(range(50 * g, 50 * g + 12)), c) for g, c in enumerate(sizes)])
    features = token_features(data, 128)
    start = int(np.random.default_rng(0).integers(len(data)))  # the selector's seeded first pick
    diverse = CoresetSelector("diversity", target_size=50, seed=0).select_indices(data)
    assert diverse.tolist() == sorted(reference_farthest_point(features, 50, [], start))
    losses = np.random.default_rng(2).random(len(data))
    from_loss = np.argsort(-losses, kind="stable")[:30].tolist()
    hybrid = CoresetSelector("hybrid", target_size=50, loss_fraction=0.6).select_indices(data, losses=losses)
    assert hybrid.tolist() == sorted(from_loss + reference_farthest_point(features, 20, from_loss, start))


def test_token_counts_take_label_tokens_or_all_tokens_without_labels() -> None:
    data = [
        {"input_ids": [4, 4, 9, 3], "labels": [IGNORE_INDEX, 4, 9, IGNORE_INDEX]},
        {"input_ids": np.array([7, 7, 2], dtype=np.int32)},
    ]
    doc, tok, counts = token_counts(data, labelled_only=True)
    assert list(zip(doc.tolist(), tok.tolist(), counts.tolist())) == [(0, 4, 1), (0, 9, 1), (1, 2, 1), (1, 7, 2)]
    doc, tok, counts = token_counts(data, labelled_only=False)
    assert list(zip(doc.tolist(), tok.tolist(), counts.tolist())) == [(0, 3, 1), (0, 4, 2), (0, 9, 1), (1, 2, 1), (1, 7, 2)]
    with pytest.raises(ValueError, match="token ids must be >= 0"):
        token_counts([{"input_ids": [1, -3]}], labelled_only=True)


def test_features_are_the_hashed_log_tf_idf_of_the_label_tokens() -> None:
    """Against the formula written out one sample and one token at a time."""
    data = token_samples(CLUSTERS) + [{"input_ids": [3, 100, 100, 7]}]  # no labels: every token counts
    dim = 16
    tokens = [[t for t, lab in zip(s["input_ids"], s.get("labels", s["input_ids"])) if lab != IGNORE_INDEX] for s in data]
    df = Counter(t for sample in tokens for t in set(sample))
    expected = np.zeros((len(data), dim))
    for row, sample in enumerate(tokens):
        for token, count in Counter(sample).items():
            hashed = (token * 0x9E3779B97F4A7C15) % 2**64
            sign = -1.0 if hashed >> 63 else 1.0
            expected[row, (hashed >> 33) % dim] += sign * (1 + np.log(count)) * np.log((1 + len(data)) / (1 + df[token]))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(token_features(data, dim), expected, rtol=1e-5, atol=1e-6)


def test_hybrid_takes_loss_first_then_diversity() -> None:
    data = token_samples(CLUSTERS)
    losses = np.array([5.0, 4.0, 3.0, 0.1, 0.1, 0.1] + [0.2] * 6 + [0.0])  # cluster 0 is hardest
    picked = CoresetSelector("hybrid", target_size=5, loss_fraction=0.6).select_indices(data, losses=losses)
    assert {0, 1, 2} <= set(picked.tolist())  # round(0.6 * 5) = 3 by loss
    rest = sorted(set(picked.tolist()) - {0, 1, 2})
    assert rest[0] in range(6, 12) and rest[1] == 12  # then one of each other cluster, not more of cluster 0
    by_loss_only = CoresetSelector("loss_topk", target_size=5).select_indices(data, losses=losses)
    assert set(by_loss_only.tolist()) != set(picked.tolist())


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="strategy='greedy' is not known"):
        CoresetSelector("greedy")
    with pytest.raises(ValueError, match="target_size"):
        CoresetSelector("random", target_size=0)
    with pytest.raises(ValueError, match="loss_fraction"):
        CoresetSelector("hybrid", loss_fraction=1.5)
    with pytest.raises(ValueError, match="one value per sample"):
        CoresetSelector("loss_topk", target_size=1).select_indices(token_samples(CLUSTERS), losses=[1.0, 2.0])


@pytest.mark.parametrize("option", ["random", "loss_topk", "diversity", "hybrid"])
def test_hydra_options_build_selectors(compose_cfg: Callable[..., Any], option: str) -> None:
    selector = instantiate(compose_cfg(f"coreset={option}").coreset)
    assert isinstance(selector, CoresetSelector) and selector.strategy == option
    assert selector.target_size == 8000
