"""A local Hugging Face causal LM as an agent-framework chat client, in its own tool format, with prefix KV reuse.

The tokenizer decides how tools are shown and calls read (``toolformat.tool_format``): a family whose chat
template renders tools and has a response parser (Qwen2.5/3, Llama 3.x) gets its native format, as behind
vLLM; any other (SmolLM2) gets agentlab's prompt format, the tools spelled out in the system prompt and calls
parsed leniently from text. A malformed call gets ``format_retries`` second chances and is otherwise
returned as text, never raised, so one bad reply cannot end an evaluation.

Across the turns of a conversation the system prompt and tools (~4k tokens for airline) do not change,
and prefill dominates CPU latency. The model keeps ``prefix_cache_slots`` (token ids, KV cache) slots;
each prompt resumes from the slot sharing its longest token prefix and only the new tokens are computed.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_framework import (
    BaseChatClient,
    ChatMiddlewareLayer,
    ChatResponse,
    Content,
    FunctionInvocationLayer,
    Message,
    UsageDetails,
)
from tau2.data_model.tasks import Task

from agentlab.config import ConfigError, UserError
from agentlab.models.base import ModelFactory, Role
from agentlab.models.toolcall import ParsedReply
from agentlab.models.toolformat import Chat, Schemas, ToolFormat, render, tool_format

MIN_REUSE_TOKENS = 16  # resuming from fewer shared tokens saves nothing and would evict another conversation's slot


@dataclass
class Generation:
    """One generate call: the decoded reply, its tokens and what it cost.

    ``logprobs`` (one per new token, under the sampling distribution) only when the backend records them
    (a training policy does; evaluation does not pay for them).
    """

    text: str
    prompt_ids: list[int]
    new_ids: list[int]
    reused_tokens: int = 0
    logprobs: list[float] | None = None
    seconds: float = 0.0  # the model's time on this call (waiting for another conversation's call excluded)

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def new_tokens(self) -> int:
        return len(self.new_ids)


@dataclass
class LoadedModel:
    """Weights and tokenizer, loaded once and shared by every client of a ``LocalHFModel``."""

    model: Any
    tokenizer: Any
    context_length: int
    tool_format: ToolFormat
    stop_at_call_end: Any  # a StoppingCriteriaList or None: building it scans the vocabulary (~0.7 s), so once per model

    @property
    def device(self) -> Any:
        return self.model.device


class PrefixCache:
    """Least-recently-used slots of (token ids, KV cache); a prompt resumes from its longest shared prefix."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._entries: list[tuple[list[int], Any]] = []

    def take(self, ids: list[int]) -> tuple[int, Any] | None:
        """Remove and return (reusable length, cache cropped to it) of the best slot, or None if none is worth it.

        At least one prompt token is left uncached: the model must compute the logits of the last one.
        """
        best, best_len = None, 0
        for index, (cached, _) in enumerate(self._entries):
            shared = _common_prefix(cached, ids)
            if shared > best_len:
                best, best_len = index, shared
        reuse = min(best_len, len(ids) - 1)
        if best is None or reuse < MIN_REUSE_TOKENS:
            return None
        _, cache = self._entries.pop(best)
        excess = cache.get_seq_length() - reuse
        if excess > 0:
            cache.crop(-excess)  # transformers 5: a negative count removes that many tokens from the end
        return reuse, cache

    def put(self, ids: list[int], cache: Any) -> None:
        """Store as most recently used, evicting the least recently used slot when full."""
        self._entries.append((ids, cache))
        del self._entries[: max(0, len(self._entries) - self.slots)]

    def __len__(self) -> int:
        return len(self._entries)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _torch_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class AdapterMismatchError(UserError):
    """A LoRA adapter that is not a peft folder or was not trained on this base model."""


def check_adapter_folder(adapter: str) -> None:
    """Refuse a path that is not a peft adapter folder before anything loads."""
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise AdapterMismatchError(f"adapter={adapter!r} is not a peft adapter folder (no adapter_config.json); expected a training run's adapter/ folder")


def _with_adapter(model: Any, base: str, adapter: str) -> Any:
    """``model`` with the peft adapter at ``adapter`` merged in (merged: generation runs at base-model speed)."""
    from peft import PeftModel

    check_adapter_folder(adapter)
    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as exc:
        raise AdapterMismatchError(
            f"adapter={adapter!r} does not fit the base model {base!r} (was it trained on another model?): {exc}"
        ) from exc


# one model loads at a time in a process: transformers' lazy imports fail when two threads run them at once
# (``cannot import name 'AutoModelForCausalLM'``), and two loads only compete for the same cores
_LOADING = threading.Lock()


def _load(path: str, gguf_file: str | None, dtype: str, device: str, adapter: str | None = None) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
    tool_format(tokenizer)  # before the weights: a tokenizer without a chat template fails fast
    model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, dtype=torch_dtype)
    if adapter:
        model = _with_adapter(model, path, adapter)
    model.to(_torch_device(device)).eval()
    return loaded_model(model, tokenizer)


def loaded_model(model: Any, tokenizer: Any) -> LoadedModel:
    """Weights already in memory (a trainer's live policy, say) with what generation needs beside them."""
    from transformers import StoppingCriteriaList, StopStringCriteria

    chosen = tool_format(tokenizer)
    context = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
    stops = chosen.stop_strings
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        context_length=int(context),
        tool_format=chosen,
        stop_at_call_end=StoppingCriteriaList([StopStringCriteria(tokenizer, list(stops))]) if stops else None,
    )


class LocalHFModel(ModelFactory):
    """``model=hf_local``: any local transformers folder (or a folder holding a GGUF file), loaded on first use.

    One instance is shared by every conversation of a run: the weights load once (thread-safe), generation
    is serialised by a lock, and the prefix cache is shared, so conversations with the same system prompt
    reuse each other's prefix.
    """

    def __init__(
        self,
        path: str,
        gguf_file: str | None = None,
        max_new_tokens: int = 256,
        dtype: str = "float32",
        device: str = "auto",
        prefix_cache_slots: int = 4,
        format_retries: int = 1,
        name: str | None = None,
        adapter: str | None = None,
    ) -> None:
        if adapter:
            check_adapter_folder(adapter)
        self.path = path
        self.gguf_file = gguf_file
        self.adapter = adapter
        self.max_new_tokens = max_new_tokens
        self.dtype = dtype
        self.device = device
        self.format_retries = format_retries
        self.name = name or Path(gguf_file or path).stem
        self.prefix_cache = PrefixCache(prefix_cache_slots) if prefix_cache_slots > 0 else None
        self.cache_hits = 0
        self.reused_tokens = 0
        self.prefill_tokens = 0
        self.generations = 0
        self.record_logprobs = False  # a training policy sets it: its rollouts need each token's sampling logprob
        self._loaded: LoadedModel | None = None
        self._generate_lock = threading.Lock()

    def model_path(self) -> str:
        """Where the weights are, resolved at load time (a subclass may build the folder then)."""
        return self.path

    def with_adapter(self, adapter: str | None) -> LocalHFModel:
        """The same model config with another adapter (nothing loaded or cached yet): base vs trained runs."""
        clone = copy.copy(self)
        clone.adapter = adapter
        clone.prefix_cache = PrefixCache(self.prefix_cache.slots) if self.prefix_cache is not None else None
        clone.cache_hits = clone.reused_tokens = clone.prefill_tokens = clone.generations = 0
        clone._loaded = None
        clone._generate_lock = threading.Lock()
        return clone

    def serving(self, loaded: LoadedModel) -> LocalHFModel:
        """This config's generation settings over weights already in memory (a trainer's live policy),
        recording each sampled token's logprob; a fresh prefix cache (cached keys and values belong to the
        weights they were computed with)."""
        clone = self.with_adapter(None)
        clone._loaded = loaded
        clone.record_logprobs = True
        return clone

    def load(self) -> LoadedModel:
        """The loaded model, loading it on the first call (once, even from several threads)."""
        if self._loaded is None:
            with _LOADING:
                if self._loaded is None:
                    self._loaded = _load(self.model_path(), self.gguf_file, self.dtype, self.device, self.adapter)
        return self._loaded

    def client(self, task: Task, role: Role) -> LocalChatClient:
        return LocalChatClient(self)

    async def preflight(self, key: str) -> None:
        """Load the weights now (they are kept for the run): a folder that is not a model fails before any pair."""
        path = self.model_path()
        target = Path(path) / self.gguf_file if self.gguf_file else Path(path)
        if not target.exists():
            raise ConfigError(f"{key}.path={path!r}{f' ({key}.gguf_file={self.gguf_file!r})' if self.gguf_file else ''}: no such file or folder; expected a local model folder")
        try:
            await asyncio.to_thread(self.load)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if isinstance(exc, UserError):
                raise
            raise ConfigError(f"{key}.path={path!r} is not a model transformers can load ({type(exc).__name__}: {exc}); expected a folder with config.json and weights, or gguf_file naming a GGUF file in it") from exc

    def generate(
        self, prompt_ids: list[int], max_new_tokens: int, temperature: float, top_p: float | None
    ) -> Generation:
        """Continue ``prompt_ids`` (blocking, one call at a time), resuming from the best prefix-cache slot."""
        loaded = self.load()
        with self._generate_lock:
            started = time.perf_counter()
            taken = self.prefix_cache.take(prompt_ids) if self.prefix_cache is not None else None
            reused, cache = taken if taken is not None else (0, self._new_cache(loaded))
            new_ids, logprobs = _decode(loaded, prompt_ids, cache, max_new_tokens, temperature, top_p, self.record_logprobs)
            if self.prefix_cache is not None:
                self.prefix_cache.put((prompt_ids + new_ids)[: cache.get_seq_length()], cache)
            self.generations += 1
            self.cache_hits += int(reused > 0)
            self.reused_tokens += reused
            self.prefill_tokens += len(prompt_ids) - reused
            seconds = time.perf_counter() - started
        text = loaded.tokenizer.decode(new_ids, skip_special_tokens=True)
        return Generation(text=text, prompt_ids=list(prompt_ids), new_ids=new_ids, reused_tokens=reused, logprobs=logprobs, seconds=seconds)

    def _new_cache(self, loaded: LoadedModel) -> Any:
        if self.prefix_cache is None:
            return None
        from transformers import DynamicCache

        return DynamicCache(config=loaded.model.config)


def _decode(
    loaded: LoadedModel,
    prompt_ids: list[int],
    cache: Any,
    max_new_tokens: int,
    temperature: float,
    top_p: float | None,
    with_logprobs: bool = False,
) -> tuple[list[int], list[float] | None]:
    """The new token ids (greedy at temperature 0) and, when asked, each one's log-probability under the
    distribution it was drawn from (temperature and top-p applied). A cache holding a prefix of the prompt
    skips its prefill."""
    import torch

    tokenizer = loaded.tokenizer
    eos = loaded.model.generation_config.eos_token_id
    input_ids = torch.tensor([prompt_ids], device=loaded.device)
    kwargs: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "max_new_tokens": max_new_tokens,
        "do_sample": temperature > 0,
        "eos_token_id": eos if eos is not None else tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        "stopping_criteria": loaded.stop_at_call_end,
    }
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=top_p or 1.0)
    if cache is not None:
        kwargs["past_key_values"] = cache
    if with_logprobs:
        kwargs.update(output_scores=True, return_dict_in_generate=True)
    with torch.inference_mode():
        output = loaded.model.generate(**kwargs)
    if not with_logprobs:
        return output[0, len(prompt_ids) :].tolist(), None
    new_ids = output.sequences[0, len(prompt_ids) :]
    scores = torch.stack(output.scores)[:, 0].float().log_softmax(-1)
    logprobs = scores.gather(-1, new_ids[: len(scores), None]).squeeze(-1)
    return new_ids.tolist(), logprobs.tolist()


def request_tool_schemas(options: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON schemas of the request's tools (none when ``tool_choice`` is "none")."""
    if options.get("tool_choice") == "none":
        return []
    tools = options.get("tools") or []
    return [t.to_json_schema_spec() if hasattr(t, "to_json_schema_spec") else t for t in tools if t is not None]


def _instructions(options: dict[str, Any]) -> str:
    value = options.get("instructions")
    if value is None or isinstance(value, str):
        return value or ""
    return "\n".join(str(v) for v in value)


def _encode(tokenizer: Any, chat: Chat, generation_prompt: bool = True, tools: Schemas | None = None) -> list[int]:
    return tokenizer(render(tokenizer, chat, tools, generation_prompt), add_special_tokens=False)["input_ids"]


def prompt_ids(tokenizer: Any, chat: Chat, limit: int, tools: Schemas | None = None) -> list[int]:
    """Token ids of ``chat`` (and the template's ``tools``) within ``limit``: the oldest turns after the system
    prompt go first, then tokens."""
    keep = 1 if chat and chat[0]["role"] == "system" else 0
    ids = _encode(tokenizer, chat, tools=tools)
    while len(ids) > limit and len(chat) > keep + 1:
        chat = [*chat[:keep], *chat[keep + 1 :]]
        ids = _encode(tokenizer, chat, tools=tools)
    if len(ids) <= limit:
        return ids
    head = len(_encode(tokenizer, chat[:keep], generation_prompt=False, tools=tools)) if keep else 0
    if head >= limit:
        raise ValueError(f"The system prompt alone ({head} tokens) does not fit the model's {limit}-token budget")
    return ids[:head] + ids[len(ids) - (limit - head) :]


class LocalChatClient(FunctionInvocationLayer, ChatMiddlewareLayer, BaseChatClient):
    """One conversation's client over a shared ``LocalHFModel``; agent-framework runs the tools it calls.

    Its layers are the OpenAI client's, so the runner's chat middleware (step counting, the tool offer) runs
    around each of its model calls too.
    """

    OTEL_PROVIDER_NAME = "agentlab.local"

    def __init__(self, backend: LocalHFModel) -> None:
        super().__init__()
        self.backend = backend
        self.model = backend.name  # agent-framework reads ``client.model`` as the model name
        self.format_errors = 0  # malformed tool calls in this conversation (the harness reports them)
        self.generations: list[Generation] = []  # every generate call of this conversation, retries included

    async def _inner_get_response(self, *, messages: list[Message], stream: bool, options: Any, **kwargs: Any) -> Any:
        if stream:
            raise NotImplementedError("the local client does not stream")
        return await asyncio.to_thread(self.respond, list(messages), dict(options or {}))

    def respond(self, messages: list[Message], options: dict[str, Any]) -> ChatResponse:
        """Render, generate, parse; a malformed call is shown to the model with the reason and retried."""
        loaded = self.backend.load()
        schemas = request_tool_schemas(options)
        chat = loaded.tool_format.chat(messages, _instructions(options), schemas)
        tools = loaded.tool_format.template_tools(schemas)
        max_new = int(options.get("max_tokens") or self.backend.max_new_tokens)
        limit = loaded.context_length - max_new
        temperature = float(options.get("temperature") or 0.0)
        attempts: list[Generation] = []
        for _ in range(self.backend.format_retries + 1):
            ids = prompt_ids(loaded.tokenizer, chat, limit, tools)
            generation = self.backend.generate(ids, max_new, temperature, options.get("top_p"))
            attempts.append(generation)
            self.generations.append(generation)
            parsed = loaded.tool_format.parse(generation.text, ids, schemas)
            if parsed.format_error is None:
                self.format_errors += len(attempts) - 1
                return self._response(parsed, attempts, format_errors=len(attempts) - 1)
            retry = loaded.tool_format.retry_message.format(reason=parsed.format_error)
            chat = [*chat, {"role": "assistant", "content": generation.text}, {"role": "user", "content": retry}]
        self.format_errors += len(attempts)
        return self._response(ParsedReply(text=attempts[-1].text.strip()), attempts, format_errors=len(attempts))

    def _response(self, parsed: ParsedReply, attempts: list[Generation], format_errors: int) -> ChatResponse:
        if parsed.calls:
            contents = [
                Content.from_function_call(call_id=f"call_{uuid.uuid4().hex[:16]}", name=name, arguments=arguments)
                for name, arguments in parsed.calls
            ]
        else:
            contents = [Content.from_text(parsed.text)]
        prompt = sum(a.prompt_tokens for a in attempts)
        output = sum(a.new_tokens for a in attempts)
        usage = UsageDetails(
            input_token_count=prompt,
            output_token_count=output,
            total_token_count=prompt + output,
            cache_read_input_token_count=sum(a.reused_tokens for a in attempts),
        )
        return ChatResponse(
            messages=[Message(role="assistant", contents=contents)],
            model=self.model,
            finish_reason="tool_calls" if parsed.calls else "stop",
            usage_details=usage,
            additional_properties={"format_errors": format_errors},
        )
