"""Checks for the Kyverno policy `imgtrack export allowlist` writes, without a cluster.

* The schema: Kyverno's ClusterPolicy CRD as pydantic models, generated from Kyverno's own CRDs and
  checked in under tests/fixtures/kyverno/ (its README names the source and the licence): nothing is
  downloaded at test time. The models' runtime package needs Python 3.14, so the generated module is
  loaded with small stand-ins for the runtime's builder classes, and with unknown fields forbidden
  (the CRD would prune them silently).
* The meaning: a small evaluator of exactly the constructs the policy uses (a precondition, a
  `foreach` over a JMESPath list, `deny` conditions with Equals and AnyNotIn), following Kyverno's
  rules: `{{ }}` holds a JMESPath expression; AnyNotIn matches wildcards in both directions. It is not
  Kyverno's engine; it checks that our expressions select the right images and digests.
"""

from __future__ import annotations

import hashlib
import importlib.util
import lzma
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import jmespath
import pydantic

# Kyverno 1.19's CRDs as pydantic models, checked in (tests/fixtures/kyverno/README.md: source, licence).
MODELS = Path(__file__).resolve().parent / "fixtures" / "kyverno" / "v1.py.xz"
MODELS_SHA256 = "9fa9715b276e369870dc5e1d8f9cbe374d34ff4afdea82f8bd732231883b9531"


def _models_source() -> bytes:
    data = lzma.decompress(MODELS.read_bytes())
    assert hashlib.sha256(data).hexdigest() == MODELS_SHA256, f"{MODELS} is not the file its README names"
    return data


class _Builder:
    """Stands in for the runtime's builder helpers: only subclassed and subscripted at import."""

    def __class_getitem__(cls, item: object) -> type:
        return cls


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(populate_by_name=True, extra="forbid")


class _ObjectMeta(_Strict):
    Builder: typing.ClassVar[type] = _Builder
    name: str
    annotations: dict[str, str] | None = None
    labels: dict[str, str] | None = None


def clusterpolicy_model(work: Path) -> Any:
    """Kyverno's `kyverno.io/v1` models module (ClusterPolicy and its parts)."""
    source = work / "kyverno_v1.py"
    source.write_bytes(_models_source())
    stand_ins = {
        "cloudcoil": {},
        "cloudcoil.pydantic": {
            "UNSET": object(),
            "BaseModel": _Strict,
            "BaseBuilder": _Builder,
            "BaseModelBuilder": _Builder,
            "BuilderContextBase": _Builder,
            "GenericListBuilder": _Builder,
            "ListBuilderContext": _Builder,
            "Never": typing.Never,
            "Self": typing.Self,
        },
        "cloudcoil.apimachinery": {"ObjectMeta": _ObjectMeta},
        "cloudcoil.resources": {"Resource": _Strict},
    }
    saved = {name: sys.modules.get(name) for name in stand_ins}
    try:
        for name, attrs in stand_ins.items():
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            sys.modules[name] = module
        spec = importlib.util.spec_from_file_location("kyverno_v1", source)
        assert spec is not None and spec.loader is not None
        models = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(models)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    models.ClusterPolicy.model_rebuild()
    return models


def operators(models: Any) -> set[str]:
    """The condition operators Kyverno's CRD enumerates (deny conditions are free-form in the CRD)."""
    field = models.ClusterPolicySpecRulesItemValidateForeachItemPreconditionsAnyItem.model_fields["operator"]
    literal = next(a for a in typing.get_args(field.annotation) if typing.get_origin(a) is typing.Literal)
    return set(typing.get_args(literal))


# --- evaluation --------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"^\{\{(.*)\}\}$", re.S)


def _value(template: object, context: dict[str, Any]) -> object:
    if isinstance(template, str) and (m := _VARIABLE.match(template.strip())):
        return jmespath.search(m.group(1).strip(), context)
    return template


def _wildcard(pattern: str, text: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.S) is not None


def _holds(condition: dict[str, Any], context: dict[str, Any]) -> bool:
    key, value, op = _value(condition["key"], context), _value(condition["value"], context), condition["operator"]
    if op == "Equals":
        return key == value
    if op == "NotEquals":
        return key != value
    if op == "AnyNotIn":
        keys = key if isinstance(key, list) else [key]
        values = value if isinstance(value, list) else [value]
        return any(not any(_wildcard(str(v), str(k)) or _wildcard(str(k), str(v)) for v in values) for k in keys)
    raise AssertionError(f"operator {op} is not one the allowlist uses")


def _all_or_any(block: dict[str, Any], context: dict[str, Any]) -> bool:
    if "all" in block:
        return all(_holds(c, context) for c in block["all"])
    return any(_holds(c, context) for c in block["any"])


def admits(policy: dict[str, Any], pod: dict[str, Any], operation: str = "CREATE") -> bool:
    """Whether the policy's rules let `pod` through (a rule whose precondition fails is skipped)."""
    context: dict[str, Any] = {"request": {"operation": operation, "object": pod}}
    for rule in policy["spec"]["rules"]:
        if "preconditions" in rule and not _all_or_any(rule["preconditions"], context):
            continue
        for loop in rule["validate"]["foreach"]:
            for element in jmespath.search(loop["list"], context) or []:
                if _all_or_any(loop["deny"]["conditions"], {**context, "element": element}):
                    return False
    return True
