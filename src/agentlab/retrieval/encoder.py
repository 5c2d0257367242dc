"""The retriever's embedding model: a local transformers model, mean-pooled, with a peft LoRA adapter.

The default is the embedded SmolLM2 (``agentlab.models.smollm2``; no download); ``model_path`` takes any
local HF folder (a sentence-transformers folder holds one at its root). ``num_layers`` keeps only the
first N transformer layers (a shallower, cheaper encoder; null = all). A query is the conversation so far,
cut from the left so its latest turns stay; a tool is its catalog text, cut from the right.

An adapter is saved with ``retriever.json``, the encoder it was trained for (model type, sizes, layers
kept); loading it onto another encoder is refused (``RetrieverAdapterError``), since peft would load the
weights it can match and leave the rest, silently giving a different retriever.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from agentlab.config import ConfigError, UserError
from agentlab.models.embedding import mean_pool, pooling_tokenizer
from agentlab.training.trainers.base import LoraSettings

ADAPTER_RECORD = "retriever.json"  # written last: an adapter folder with it is complete
IDENTITY_KEYS = ("model_type", "hidden_size", "intermediate_size", "vocab_size", "num_hidden_layers")
QUERY_SUFFIX, TOOL_PREFIX = "\nThe tool to call next:", "Tool "


class RetrieverAdapterError(UserError):
    """A retriever adapter that is not one, or was trained for another encoder."""


class Encoder:
    """Texts -> unit vectors; ``adapter`` (a saved retriever adapter) is loaded on top, checked against this encoder."""

    def __init__(
        self,
        model_path: str | None = None,
        num_layers: int | None = None,
        max_query_tokens: int = 128,
        max_tool_tokens: int = 64,
        batch_size: int = 16,
        lora: dict[str, Any] | None = None,
        adapter: str | None = None,
    ) -> None:
        self.model_path, self.num_layers, self.adapter = model_path, num_layers, adapter
        self.max_tokens = {"query": max_query_tokens, "tool": max_tool_tokens}
        self.batch_size = batch_size
        self.lora = LoraSettings(**(lora or {}))
        self._loaded: tuple[Any, Any] | None = None
        self._trainable = False

    def with_adapter(self, adapter: str | Path | None) -> Encoder:
        """The same encoder settings with ``adapter`` (None: the base alone), not yet loaded."""
        copy = Encoder(
            self.model_path,
            self.num_layers,
            self.max_tokens["query"],
            self.max_tokens["tool"],
            self.batch_size,
            None,
            str(adapter) if adapter else None,
        )
        copy.lora = self.lora
        return copy

    def base_path(self) -> str:
        from agentlab.models.smollm2 import smollm2_dir

        return self.model_path or str(smollm2_dir())

    def identity(self) -> dict[str, Any]:
        """What an adapter must match: the base model's shape and the layers kept (read from its config, no weights)."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.base_path()).to_dict()
        found = {k: config.get(k) for k in IDENTITY_KEYS}
        found["layers_used"] = min(self.num_layers or found["num_hidden_layers"], found["num_hidden_layers"])
        return found

    def check_adapter(self, adapter: str | Path) -> None:
        """Refuse an adapter folder that is not a retriever adapter or was trained for another encoder."""
        record = Path(adapter) / ADAPTER_RECORD
        if not record.is_file():
            raise RetrieverAdapterError(
                f"stage.encoder.adapter={str(adapter)!r} is not a retriever adapter (no {ADAPTER_RECORD}); expected the "
                "adapter/ folder a stage=retriever run saved"
            )
        trained_for = json.loads(record.read_text(encoding="utf-8"))["encoder"]
        mine = self.identity()
        differ = sorted(k for k in mine if trained_for.get(k) != mine[k])
        if differ:
            detail = ", ".join(f"{k}: adapter {trained_for.get(k)!r} vs encoder {mine[k]!r}" for k in differ)
            raise RetrieverAdapterError(
                f"stage.encoder.adapter={str(adapter)!r} was trained for another encoder ({detail}); set stage.encoder.model_path "
                "and stage.encoder.num_layers to the ones it was trained with, or train an adapter for this encoder"
            )

    def load(self, trainable: bool = False) -> tuple[Any, Any]:
        """(tokenizer, model): the base (its first ``num_layers``), with the saved adapter or, to train, a fresh LoRA.

        Loaded once; asking to train an encoder loaded for inference loads it again, trainable.
        """
        if self._loaded is not None and (self._trainable or not trainable):
            return self._loaded
        from peft import LoraConfig, PeftModel, get_peft_model
        from transformers import AutoModel

        if self.adapter:
            self.check_adapter(self.adapter)
        path = self.base_path()
        tokenizer = pooling_tokenizer(path)
        model = AutoModel.from_pretrained(path)
        if self.num_layers is not None and not hasattr(model, "layers"):
            raise ConfigError(
                f"stage.encoder.num_layers={self.num_layers}: {path} ({type(model).__name__}) has no decoder layer list to cut; set it to null"
            )
        if self.num_layers is not None and self.num_layers < len(model.layers):
            model.layers = model.layers[: self.num_layers]
            model.config.num_hidden_layers = self.num_layers
        if self.adapter:
            model = PeftModel.from_pretrained(model, self.adapter, is_trainable=trainable)
        elif trainable:
            lora = self.lora
            config = LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
                task_type="FEATURE_EXTRACTION",
            )
            model = get_peft_model(model, config)
        model.train(trainable)
        self._loaded, self._trainable = (tokenizer, model), trainable
        return self._loaded

    def encode(self, texts: list[str], kind: str) -> Any:
        """Unit vectors of ``texts`` (``kind``: query or tool) as a torch tensor, with gradient when the model trains."""
        import torch

        tokenizer, model = self.load()
        tokenizer.truncation_side = "left" if kind == "query" else "right"
        texts = [t + QUERY_SUFFIX for t in texts] if kind == "query" else [TOOL_PREFIX + t for t in texts]
        batch = tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens[kind], return_tensors="pt")
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]).float(), dim=-1)

    def embed(self, texts: list[str], kind: str) -> np.ndarray:
        """Unit vectors of ``texts`` as a float32 matrix, in batches, without gradient."""
        import torch

        _, model = self.load()
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        training = model.training
        model.eval()
        with torch.no_grad():
            parts = [
                self.encode(texts[i : i + self.batch_size], kind).numpy() for i in range(0, len(texts), self.batch_size)
            ]
        model.train(training)
        return np.concatenate(parts).astype(np.float32)

    def save(self, adapter_dir: Path, details: dict[str, Any]) -> Path:
        """The trained adapter (peft format) and, last, ``retriever.json``: the encoder it fits and ``details``."""
        _, model = self.load()
        model.save_pretrained(adapter_dir)
        record = {"encoder": self.identity(), "model_path": self.base_path(), **details}
        (adapter_dir / ADAPTER_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
        return adapter_dir
