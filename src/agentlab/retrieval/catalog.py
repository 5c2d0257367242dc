"""The tool catalog a retriever searches: tau2 domains' tools, user catalog files, and seeded distractors.

Each tool is an OpenAI-style schema with a catalog id ``<domain>/<name>`` (a user tool of tau2's telecom
phone: ``telecom/user/<name>``), since tool names repeat across domains (``calculate``,
``transfer_to_human_agents``). A catalog file is JSONL, one OpenAI-style tool schema per line, in the
``{"type": "function", "function": {...}}`` wrapper or bare (``{"name", "description", "parameters"}``),
with an optional ``"domain"`` key (default: the file's stem). Every row is checked (name, description,
``parameters`` a valid JSON Schema of an object) and a bad one is refused naming the file and row.

Distractors scale the catalog to thousands of tools for measurement: real tools renamed and re-described
across invented domains (a ``cancel_reservation`` becomes a pharmacy's ``void_prescription``), seeded and
deterministic, so the catalog's real tools hide among look-alikes that share their verbs and shapes.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.config import UserError
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.tools import convert_tau2_tool_to_function_tool, tool_schemas

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


class CatalogError(UserError):
    """A catalog that cannot be used (no tools, a bad row, a duplicate id); the message names file and row."""


class ToolSchemaError(ValueError):
    """One tool schema that is not an OpenAI-style function schema; the message says what is wrong."""


@dataclass(frozen=True)
class CatalogTool:
    """One tool of the catalog: its OpenAI-style parts and where it comes from."""

    domain: str
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    side: str = "assistant"  # whose tool it is: the assistant's, or the user's own (telecom's phone)

    @property
    def id(self) -> str:
        return f"{self.domain}/{self.name}" if self.side == "assistant" else f"{self.domain}/{self.side}/{self.name}"

    def schema(self) -> dict[str, Any]:
        """The OpenAI function schema a model is shown."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def text(self) -> str:
        """What a retriever reads: the name (words split), its description and its parameter names."""
        params = ", ".join(self.parameters.get("properties", {}))
        return f"{self.name.replace('_', ' ')}: {self.description} Parameters: {params or 'none'}."


def domain_tools(domain: str) -> list[CatalogTool]:
    """The assistant's (and the user's own) tools of tau2 domain ``domain``, as the harness shows them."""
    tau2 = Tau2Domain(domain)
    env = tau2.environment()
    sides = {"assistant": tau2.tools(), "user": tau2.user_tools()}
    tools = []
    for side, found in sides.items():
        for schema in tool_schemas([convert_tau2_tool_to_function_tool(t, env, side) for t in found]):
            tools.append(parse_tool(schema, domain, side))
    return tools


def parse_tool(schema: Any, domain: str, side: str = "assistant") -> CatalogTool:
    """A checked ``CatalogTool`` from an OpenAI-style schema (wrapped or bare); ``ToolSchemaError`` says what is wrong."""
    if not isinstance(schema, dict):
        raise ToolSchemaError(f"expected a JSON object (an OpenAI-style tool schema), got {type(schema).__name__}")
    spec = schema["function"] if isinstance(schema.get("function"), dict) else schema
    name, description = spec.get("name"), spec.get("description", "")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ToolSchemaError(f'"name" must be 1-64 letters, digits, _ or -, got {name!r}')
    if not isinstance(description, str):
        raise ToolSchemaError(f'"description" must be a string, got {type(description).__name__}')
    parameters = spec.get("parameters", {"type": "object", "properties": {}})
    _check_parameters(parameters)
    return CatalogTool(domain, name, description, parameters, side)


def _check_parameters(parameters: Any) -> None:
    """``parameters`` must be a valid JSON Schema of an object (its ``properties`` an object of schemas)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        raise ToolSchemaError('"parameters" must be a JSON Schema object with "type": "object"')
    if not isinstance(parameters.get("properties", {}), dict):
        raise ToolSchemaError('"parameters.properties" must be an object mapping parameter names to schemas')
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top)"
        raise ToolSchemaError(f'"parameters" is not a valid JSON Schema at {where}: {exc.message}') from None


def load_catalog_file(path: str | Path) -> list[CatalogTool]:
    """Every tool of a catalog JSONL file; a bad row raises ``CatalogError`` naming the file and the row (its line)."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"catalog file {path}: no such file; expected JSONL, one OpenAI-style tool schema per line")
    tools = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                tools.append(_row_tool(line, path, number))
    if not tools:
        raise CatalogError(f"catalog file {path} holds no tools; expected JSONL, one OpenAI-style tool schema per line")
    return tools


def _row_tool(line: str, path: Path, number: int) -> CatalogTool:
    """Row ``number`` of a catalog file as a tool; anything wrong raises ``CatalogError`` naming file, row and problem."""
    try:
        row = json.loads(line)
        domain = row.pop("domain", path.stem) if isinstance(row, dict) else path.stem
        if not isinstance(domain, str) or not domain:
            raise ToolSchemaError(f'"domain" must be a non-empty string, got {domain!r}')
        return parse_tool(row, domain)
    except (json.JSONDecodeError, ToolSchemaError) as exc:
        raise CatalogError(f"catalog file {path}: row {number}: {exc}; expected an OpenAI-style tool schema") from None


# --- distractors ------------------------------------------------------------------------------------------------

INVENTED_DOMAINS: dict[str, tuple[str, ...]] = {  # an invented domain -> the nouns its tools act on
    "hotel": ("room", "booking", "guest", "stay", "invoice"),
    "pharmacy": ("prescription", "refill", "patient", "medication", "claim"),
    "library": ("loan", "book", "member", "hold", "fine"),
    "banking": ("account", "transfer", "card", "statement", "loan"),
    "insurance": ("policy", "claim", "premium", "beneficiary", "quote"),
    "car_rental": ("rental", "vehicle", "driver", "pickup", "damage_report"),
    "restaurant": ("table", "order", "menu_item", "reservation", "tab"),
    "clinic": ("appointment", "doctor", "patient", "referral", "lab_result"),
    "shipping": ("shipment", "parcel", "label", "carrier", "delivery"),
    "utilities": ("meter", "bill", "service", "outage", "tariff"),
    "school": ("course", "enrollment", "student", "grade", "transcript"),
    "gym": ("membership", "class", "trainer", "locker", "visit"),
    "cinema": ("ticket", "showtime", "seat", "screening", "voucher"),
    "real_estate": ("listing", "viewing", "lease", "tenant", "offer"),
    "payroll": ("employee", "payslip", "timesheet", "bonus", "deduction"),
    "hr": ("candidate", "interview", "offer_letter", "leave_request", "review"),
    "travel_agency": ("itinerary", "package", "traveler", "excursion", "visa"),
    "event_tickets": ("event", "ticket", "venue", "attendee", "refund"),
    "parking": ("permit", "space", "citation", "garage", "session"),
    "veterinary": ("pet", "owner", "vaccination", "visit", "prescription"),
    "food_delivery": ("order", "courier", "restaurant", "basket", "tip"),
    "streaming": ("subscription", "profile", "playlist", "device", "plan"),
    "government": ("application", "permit", "citizen", "appointment", "document"),
    "energy": ("contract", "meter_reading", "tariff", "invoice", "installation"),
    "logistics": ("warehouse", "pallet", "route", "shipment", "inventory"),
    "crm": ("lead", "contact", "opportunity", "ticket", "campaign"),
    "dental": ("appointment", "patient", "treatment", "x_ray", "invoice"),
    "ride_hailing": ("ride", "driver", "rider", "fare", "promo_code"),
    "mortgage": ("application", "loan", "appraisal", "borrower", "rate_lock"),
    "airport_lounge": ("pass", "visit", "member", "lounge", "guest"),
}

VERB_SYNONYMS: dict[str, tuple[str, ...]] = {  # a real tool's leading verb -> look-alikes
    "get": ("get", "fetch", "retrieve", "look_up", "read"),
    "find": ("find", "locate", "search", "look_up"),
    "search": ("search", "find", "query", "browse"),
    "list": ("list", "enumerate", "get_all", "browse"),
    "cancel": ("cancel", "void", "revoke", "terminate"),
    "book": ("book", "reserve", "schedule", "create"),
    "update": ("update", "modify", "change", "edit", "amend"),
    "modify": ("modify", "update", "change", "adjust"),
    "return": ("return", "refund", "send_back"),
    "exchange": ("exchange", "swap", "replace"),
    "send": ("send", "issue", "dispatch", "grant"),
    "transfer": ("transfer", "escalate", "hand_over", "forward"),
    "calculate": ("calculate", "compute", "evaluate"),
    "toggle": ("toggle", "switch", "flip"),
    "check": ("check", "verify", "inspect", "test"),
    "set": ("set", "configure", "assign"),
}
DEFAULT_VERBS = ("process", "handle", "manage", "review", "apply", "record")


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[_\W]+", name.lower()) if w]


def _distractor(tool: CatalogTool, domain: str, rng: random.Random, taken: set[str]) -> CatalogTool:
    """``tool`` moved into ``domain``: its verb kept or swapped, its nouns replaced by ``domain``'s, its description and
    parameters re-worded the same way."""
    words = _words(tool.name)
    verb = words[0] if words else "handle"
    nouns = INVENTED_DOMAINS[domain]
    new_verb = rng.choice(VERB_SYNONYMS.get(verb, DEFAULT_VERBS))
    objects = rng.sample(nouns, k=min(len(nouns), max(1, min(2, len(words) - 1))))
    base = "_".join([new_verb, *objects])
    name, suffix = base, 2
    while f"{domain}/{name}" in taken:
        name, suffix = f"{base}_{suffix}", suffix + 1
    taken.add(f"{domain}/{name}")
    swaps = {w: objects[i % len(objects)].replace("_", " ") for i, w in enumerate(words[1:])}
    swaps[verb] = new_verb.replace("_", " ")
    description = " ".join(swaps.get(w.lower().strip(".,:;'\"()"), w) for w in (tool.description or tool.name).split())
    description = f"{description} ({domain.replace('_', ' ')} system)"
    properties = {
        "_".join(swaps.get(w, w) for w in _words(key)).replace(" ", "_") or key: {
            "type": spec.get("type", "string") if isinstance(spec, dict) else "string",
            "description": " ".join(swaps.get(w.lower(), w) for w in str((spec or {}).get("description", key)).split()),
        }
        for key, spec in tool.parameters.get("properties", {}).items()
    }
    return CatalogTool(domain, name, description, {"type": "object", "properties": properties})


def distractors(tools: list[CatalogTool], count: int, seed: int = 0) -> list[CatalogTool]:
    """``count`` look-alike tools: each a seeded pick of a real tool moved into a seeded pick of invented domain.

    The same (tools, count, seed) always give the same list, and a longer list starts with the shorter one,
    so catalogs of growing size nest (the 500-tool catalog is the first 500 of the 2000-tool one).
    """
    if count <= 0:
        return []
    if not tools:
        raise CatalogError("distractors need real tools to imitate; the catalog has none")
    rng = random.Random(seed)
    domains = sorted(INVENTED_DOMAINS)
    taken = {t.id for t in tools}
    return [_distractor(rng.choice(tools), rng.choice(domains), rng, taken) for _ in range(count)]


@dataclass
class ToolCatalog:
    """The catalog as the config gives it: tau2 ``domains``, catalog ``files``, and ``distractors`` look-alikes."""

    domains: list[str] = field(default_factory=lambda: ["airline", "retail", "telecom", "mock"])
    files: list[str] = field(default_factory=list)
    distractors: int = 0
    seed: int = 0

    def real_tools(self) -> list[CatalogTool]:
        """The domains' tools, then the files', in order; a repeated id is refused (it would make labels ambiguous)."""
        tools = [t for d in self.domains for t in domain_tools(d)]
        tools += [t for path in self.files for t in load_catalog_file(path)]
        _refuse_duplicates(tools)
        if not tools:
            raise CatalogError(
                "the tool catalog is empty: stage.catalog.domains and stage.catalog.files give no tools; "
                "name at least one tau2 domain (airline, retail, telecom, mock) or a catalog JSONL file"
            )
        return tools

    def tools(self) -> list[CatalogTool]:
        """The real tools followed by the distractors."""
        real = self.real_tools()
        return real + distractors(real, self.distractors, self.seed)


def _refuse_duplicates(tools: Iterable[CatalogTool]) -> None:
    seen: set[str] = set()
    for tool in tools:
        if tool.id in seen:
            raise CatalogError(
                f"the tool catalog has tool id {tool.id!r} twice; give each file's tools a distinct domain or name"
            )
        seen.add(tool.id)


def write_catalog_file(tools: Iterable[CatalogTool], path: str | Path) -> Path:
    """``tools`` as a catalog JSONL file that ``load_catalog_file`` reads back."""
    path = Path(path)
    path.write_text("".join(json.dumps({**t.schema(), "domain": t.domain}) + "\n" for t in tools), encoding="utf-8")
    return path
