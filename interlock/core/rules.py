"""Content-based routing rules: ``[[rules]]`` in config, matched against each chat request.

A rule names a ``[routes.*]`` route and any number of conditions; every condition
given must hold (AND), and the first rule in file order that matches sends the
request to its route. Conditions (all optional):

========================================  ==================================================
``model``                                 the requested model name, or a list of names;
                                          glob patterns (``"gpt-4*"``), case-sensitive
``min_prompt_tokens``/``max_prompt_tokens``  the estimated prompt size, inclusive bounds
                                          (see :func:`interlock.core.estimate.estimate_prompt_tokens`)
``tools``                                 ``true``: the request offers tools; ``false``: it does not
``images``                                any image part in any message (or none)
``json``                                  ``response_format`` is ``json_object``/``json_schema`` (or not)
``stream``                                a streaming request (or not)
``min_max_tokens``/``max_max_tokens``     the request's ``max_completion_tokens`` (else
                                          ``max_tokens``), inclusive; a request without
                                          a limit matches neither
``last_user_regex``                       ``re.search`` on the last user message's text
``system_regex``                          ``re.search`` on the system and developer messages' text
``keywords``                              any of the words, as a substring of the last user message
``headers``                               request header name -> exact value, or ``"~regex"``
``metadata``                              OpenAI ``metadata`` key -> exact value, or ``"~regex"``
``tags``                                  any of these tags in the request's ``x-interlock-tags``
========================================  ==================================================

Every regex and keyword is case-insensitive; exact header and metadata values are
not. Regexes are compiled when the config loads, so a bad one is a config error.
A rule with no condition at all is rejected (write ``model = "*"`` for a catch-all).
Rules apply to chat completions only; embeddings requests are never rerouted.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from interlock.core.estimate import IMAGE_PARTS, count_prompt, tokens_of
from interlock.core.types import RequestContext

_TEXT_ROLES_SYSTEM = frozenset({"system", "developer"})
_JSON_FORMATS = frozenset({"json_object", "json_schema"})

_INT_KEYS = ("min_prompt_tokens", "max_prompt_tokens", "min_max_tokens", "max_max_tokens")
_BOOL_KEYS = ("tools", "images", "json", "stream")
_REGEX_KEYS = ("last_user_regex", "system_regex")
_CONDITION_KEYS = frozenset(
    {"model", *_INT_KEYS, *_BOOL_KEYS, *_REGEX_KEYS, "keywords", "headers", "metadata", "tags"}
)
_RULE_KEYS = frozenset({"name", "route", "description", *_CONDITION_KEYS})


# --------------------------------------------------------------------------- #
# What a request looks like, computed at most once per request
# --------------------------------------------------------------------------- #


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "\n".join(texts)
    return ""


class RequestFacts:
    """Per-request values several rules may need, each computed on first use and kept.

    The built-in rules plugin makes one per request and passes it to every rule, so a
    list of rules costs one pass over the messages at most, however many test size.
    """

    __slots__ = ("ctx", "_tokens", "_images", "_last_user", "_last_user_lower", "_system")

    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx
        self._tokens: int | None = None
        self._images: bool | None = None
        self._last_user: str | None = None
        self._last_user_lower: str | None = None
        self._system: str | None = None

    @property
    def prompt_tokens(self) -> int:
        if self._tokens is None:
            chars, low, other = count_prompt(self.ctx.body)
            self._tokens = tokens_of(chars, low, other)
            self._images = bool(low or other)
        return self._tokens

    @property
    def images(self) -> bool:
        if self._images is None:
            self._images = self._any_image()
        return self._images

    def _any_image(self) -> bool:
        messages = self.ctx.body.get("messages")
        for msg in messages if isinstance(messages, list) else ():
            content = msg.get("content") if isinstance(msg, dict) else None
            if isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and part.get("type") in IMAGE_PARTS:
                        return True
        return False

    @property
    def last_user(self) -> str:
        if self._last_user is None:
            self._last_user = ""
            messages = self.ctx.body.get("messages")
            for msg in reversed(messages) if isinstance(messages, list) else ():
                if isinstance(msg, dict) and msg.get("role") == "user":
                    self._last_user = _text_of(msg.get("content"))
                    break
        return self._last_user

    @property
    def last_user_lower(self) -> str:
        if self._last_user_lower is None:
            self._last_user_lower = self.last_user.casefold()
        return self._last_user_lower

    @property
    def system(self) -> str:
        if self._system is None:
            messages = self.ctx.body.get("messages")
            self._system = "\n".join(
                _text_of(m.get("content"))
                for m in (messages if isinstance(messages, list) else ())
                if isinstance(m, dict) and m.get("role") in _TEXT_ROLES_SYSTEM
            )
        return self._system


# --------------------------------------------------------------------------- #
# A rule
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """An exact value, or a regex when config wrote ``"~regex"``."""

    text: str
    regex: re.Pattern[str] | None = None

    def __call__(self, value: str) -> bool:
        return self.regex.search(value) is not None if self.regex is not None else value == self.text


@dataclass(slots=True)
class Rule:
    """One ``[[rules]]`` entry: where matching requests go, and the conditions (all must hold)."""

    name: str
    route: str
    description: str = ""
    model: tuple[str, ...] = ()  # glob patterns
    min_prompt_tokens: int | None = None
    max_prompt_tokens: int | None = None
    tools: bool | None = None
    images: bool | None = None
    json: bool | None = None
    stream: bool | None = None
    min_max_tokens: int | None = None
    max_max_tokens: int | None = None
    last_user_regex: re.Pattern[str] | None = None
    system_regex: re.Pattern[str] | None = None
    keywords: tuple[str, ...] = ()
    headers: dict[str, ValueMatch] = field(default_factory=dict)  # lower-cased header names
    metadata: dict[str, ValueMatch] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    _model_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.model:
            self._model_re = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.model))

    # -- matching --------------------------------------------------------- #

    def matches(self, ctx: RequestContext, facts: RequestFacts | None = None) -> str | None:
        """Why this rule matches ``ctx`` (e.g. ``"prompt_tokens 41230 >= 32000"``), or None.

        Cheap conditions are tested first; the message scans happen only if they pass,
        and at most once per request when the caller shares ``facts`` between rules.
        """
        if ctx.endpoint != "chat":
            return None
        body = ctx.body
        why: list[str] = []
        if self._model_re is not None:
            model = body.get("model")
            if not isinstance(model, str) or self._model_re.match(model) is None:
                return None
            why.append(f"model {model!r}")
        if self.stream is not None:
            if ctx.stream != self.stream:
                return None
            why.append("stream" if ctx.stream else "not stream")
        if self.tools is not None:
            has = bool(body.get("tools") or body.get("functions"))
            if has != self.tools:
                return None
            why.append("tools" if has else "no tools")
        if self.json is not None:
            fmt = body.get("response_format")
            kind = fmt.get("type") if isinstance(fmt, dict) else None
            has = kind in _JSON_FORMATS
            if has != self.json:
                return None
            why.append(f"response_format {kind}" if has else "no json response_format")
        if self.min_max_tokens is not None or self.max_max_tokens is not None:
            limit = body.get("max_completion_tokens")
            if limit is None:
                limit = body.get("max_tokens")
            if not isinstance(limit, int) or isinstance(limit, bool):
                return None
            if self.min_max_tokens is not None:
                if limit < self.min_max_tokens:
                    return None
                why.append(f"max_tokens {limit} >= {self.min_max_tokens}")
            if self.max_max_tokens is not None:
                if limit > self.max_max_tokens:
                    return None
                why.append(f"max_tokens {limit} <= {self.max_max_tokens}")
        if self.tags:
            tag = next((t for t in self.tags if t in ctx.tags), None)
            if tag is None:
                return None
            why.append(f"tag {tag!r}")
        for name, want in self.headers.items():
            value = ctx.headers.get(name)
            if value is None or not want(value):
                return None
            why.append(f"header {name}: {value}")
        if self.metadata:
            meta = body.get("metadata")
            if not isinstance(meta, dict):
                return None
            for key, want in self.metadata.items():
                value = meta.get(key)
                if not isinstance(value, str) or not want(value):
                    return None
                why.append(f"metadata {key}={value}")
        if facts is None:
            facts = RequestFacts(ctx)
        if self.images is not None:
            if facts.images != self.images:
                return None
            why.append("images" if self.images else "no images")
        if self.min_prompt_tokens is not None or self.max_prompt_tokens is not None:
            tokens = facts.prompt_tokens
            if self.min_prompt_tokens is not None:
                if tokens < self.min_prompt_tokens:
                    return None
                why.append(f"prompt_tokens {tokens} >= {self.min_prompt_tokens}")
            if self.max_prompt_tokens is not None:
                if tokens > self.max_prompt_tokens:
                    return None
                why.append(f"prompt_tokens {tokens} <= {self.max_prompt_tokens}")
        if self.keywords:
            text = facts.last_user_lower
            word = next((k for k in self.keywords if k in text), None)
            if word is None:
                return None
            why.append(f"keyword {word!r}")
        if self.last_user_regex is not None:
            if self.last_user_regex.search(facts.last_user) is None:
                return None
            why.append(f"last user message ~ /{self.last_user_regex.pattern}/")
        if self.system_regex is not None:
            if self.system_regex.search(facts.system) is None:
                return None
            why.append(f"system ~ /{self.system_regex.pattern}/")
        return ", ".join(why)

    def describe(self) -> str:
        """The conditions as written, for ``interlock check``: ``prompt_tokens >= 32000, tools``."""
        out: list[str] = []
        if self.model:
            out.append("model " + " | ".join(self.model))
        for key, op in (("min_prompt_tokens", ">="), ("max_prompt_tokens", "<=")):
            if (v := getattr(self, key)) is not None:
                out.append(f"prompt_tokens {op} {v}")
        for key in _BOOL_KEYS:
            if (v := getattr(self, key)) is not None:
                out.append(f"{key}={'true' if v else 'false'}")
        for key, op in (("min_max_tokens", ">="), ("max_max_tokens", "<=")):
            if (v := getattr(self, key)) is not None:
                out.append(f"max_tokens {op} {v}")
        if self.last_user_regex is not None:
            out.append(f"last user ~ /{self.last_user_regex.pattern}/")
        if self.system_regex is not None:
            out.append(f"system ~ /{self.system_regex.pattern}/")
        if self.keywords:
            out.append("keywords " + " | ".join(self.keywords))
        out.extend(f"header {k}: {v.text}" for k, v in self.headers.items())
        out.extend(f"metadata {k}={v.text}" for k, v in self.metadata.items())
        if self.tags:
            out.append("tags " + " | ".join(self.tags))
        return ", ".join(out)


def match_first(rules: Any, ctx: RequestContext) -> tuple[Rule, str] | None:
    """The first rule in ``rules`` that matches ``ctx``, with its reason."""
    if not rules or ctx.endpoint != "chat":
        return None
    facts = RequestFacts(ctx)
    for rule in rules:
        if isinstance(rule, Rule):
            reason = rule.matches(ctx, facts)
            if reason is not None:
                return rule, reason
    return None


# --------------------------------------------------------------------------- #
# Parsing [[rules]]
# --------------------------------------------------------------------------- #


def _compile(pattern: str, path: str, rule: str, problems: list[tuple[str, str]]) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        problems.append((path, f"rule {rule!r}: invalid regex {pattern!r}: {exc}"))
        return None


def _value_table(
    value: Any, path: str, rule: str, problems: list[tuple[str, str]], *, lower_keys: bool
) -> dict[str, ValueMatch]:
    if not isinstance(value, dict) or not value:
        problems.append((path, 'must be a non-empty table of strings, e.g. { x-team = "search" }'))
        return {}
    out: dict[str, ValueMatch] = {}
    for key, v in value.items():
        if not isinstance(v, str):
            what = f"must be a string (an exact value, or \"~regex\"), not {type(v).__name__}"
            problems.append((f"{path}.{key}", what))
            continue
        name = key.lower() if lower_keys else key
        if v.startswith("~"):
            regex = _compile(v[1:], f"{path}.{key}", rule, problems)
            out[name] = ValueMatch(v, regex)
        else:
            out[name] = ValueMatch(v)
    return out


def _strings(value: Any, path: str, problems: list[tuple[str, str]], *, single: bool = False) -> tuple[str, ...]:
    if single and isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        what = "a non-empty string or list of strings" if single else "a non-empty list of strings"
        problems.append((path, f"must be {what}"))
        return ()
    return tuple(value)


def parse_rules(data: Any, problems: list[tuple[str, str]]) -> list[Rule]:
    """Validate the ``rules`` value of a config document (an array of tables) into rules.

    Problems go to ``problems`` as ``("rules[i].field", message)``, every one of them;
    rules with problems are left out of the result. Whether each rule's route exists
    is checked by the resolver, which knows the routes.
    """
    if data is None:
        return []
    if not isinstance(data, list):
        problems.append(("rules", "must be an array of tables: write each rule as [[rules]]"))
        return []
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(data):
        path = f"rules[{i}]"
        if not isinstance(table, dict):
            problems.append((path, "must be a table with 'name', 'route' and conditions"))
            continue
        before = len(problems)
        for key in table:
            if key not in _RULE_KEYS:
                problems.append((f"{path}.{key}", f"unknown key (known: {', '.join(sorted(_RULE_KEYS))})"))
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append((f"{path}.name", "required: a non-empty string naming the rule"))
            name = f"#{i}"
        elif name in seen:
            problems.append((f"{path}.name", f"duplicate rule name {name!r} (also rules[{seen[name]}])"))
        else:
            seen[name] = i
        route = table.get("route")
        if not isinstance(route, str) or not route:
            problems.append((f"{path}.route", "required: the name of a [routes.*] table"))
            route = ""
        description = table.get("description", "")
        if not isinstance(description, str):
            problems.append((f"{path}.description", "must be a string"))
            description = ""
        kw: dict[str, Any] = {}
        if "model" in table:
            kw["model"] = _strings(table["model"], f"{path}.model", problems, single=True)
        for key in _INT_KEYS:
            if key in table:
                v = table[key]
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    problems.append((f"{path}.{key}", f"must be a non-negative integer, not {v!r}"))
                else:
                    kw[key] = v
        for lo, hi in (("min_prompt_tokens", "max_prompt_tokens"), ("min_max_tokens", "max_max_tokens")):
            if lo in kw and hi in kw and kw[lo] > kw[hi]:
                problems.append((f"{path}.{lo}", f"{kw[lo]} is greater than {hi} {kw[hi]}: no request can match"))
        for key in _BOOL_KEYS:
            if key in table:
                if not isinstance(table[key], bool):
                    problems.append((f"{path}.{key}", f"must be true or false, not {table[key]!r}"))
                else:
                    kw[key] = table[key]
        for key in _REGEX_KEYS:
            if key in table:
                if not isinstance(table[key], str) or not table[key]:
                    problems.append((f"{path}.{key}", "must be a non-empty string (a Python regex)"))
                else:
                    kw[key] = _compile(table[key], f"{path}.{key}", name, problems)
        if "keywords" in table:
            kw["keywords"] = tuple(k.casefold() for k in _strings(table["keywords"], f"{path}.keywords", problems))
        if "tags" in table:
            kw["tags"] = _strings(table["tags"], f"{path}.tags", problems)
        if "headers" in table:
            kw["headers"] = _value_table(table["headers"], f"{path}.headers", name, problems, lower_keys=True)
            if "authorization" in kw["headers"]:
                problems.append((f"{path}.headers.authorization", "the authorization header is never visible to rules"))
        if "metadata" in table:
            kw["metadata"] = _value_table(table["metadata"], f"{path}.metadata", name, problems, lower_keys=False)
        if not any(key in table for key in _CONDITION_KEYS):
            hint = 'write model = "*" for a rule that matches every request'
            problems.append((path, f"rule {name!r} has no conditions; {hint}"))
        if len(problems) == before:
            rules.append(Rule(name=name, route=route, description=description, **kw))
    return rules
