"""Model registry: build any architecture by name, in the style of timm.

Each architecture file decorates its factory functions with `register_model`;
`create_model` then checks the arguments once, here, so every model reports a
bad name, width or keyword the same way, as a `ModelError` naming the value.
"""

import difflib
import inspect
import math
import numbers
from collections.abc import Callable

from pcdistill.errors import ModelError
from pcdistill.models.layers import PointClassifier

ModelFactory = Callable[..., PointClassifier]

_MODELS: dict[str, ModelFactory] = {}


def register_model(factory: ModelFactory) -> ModelFactory:
    """Register `factory` under its function name.

    A factory takes `(num_classes: int = 40, width: float = 1.0, **kwargs)` and
    returns a classifier mapping points (B, N, 3 + extra) to logits (B, num_classes).
    """
    name = factory.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = factory
    return factory


def list_models() -> list[str]:
    """Names accepted by `create_model`, sorted."""
    return sorted(_MODELS)


def create_model(
    name: str,
    num_classes: int = 40,
    width: float = 1.0,
    pretrained: str | None = None,
    **kwargs: object,
) -> PointClassifier:
    """Build the registered model `name` with `num_classes` outputs at width multiplier `width`.

    `width` scales every hidden width (see `layers.scale_width`); extra keyword
    arguments are those of the model's factory, e.g. `in_features` or `fps_ordered`.
    `pretrained="modelnet40"` loads the shipped weights trained so (checksum verified;
    `pcdistill models` lists them), in eval mode; the architecture is the entry's own.
    """
    if pretrained is not None:
        return _create_pretrained(name, num_classes, width, pretrained, kwargs)
    factory = _MODELS.get(name)
    if factory is None:
        close = difflib.get_close_matches(name, _MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ModelError(f"unknown model {name!r}.{hint} Available: {', '.join(list_models())}")
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, numbers.Integral)
        or num_classes < 2
    ):
        raise ModelError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if (
        isinstance(width, bool)
        or not isinstance(width, numbers.Real)
        or not math.isfinite(width)
        or width <= 0
    ):
        raise ModelError(f"width must be a finite number > 0, got {width!r}")
    accepted = [
        p for p in inspect.signature(factory).parameters if p not in {"num_classes", "width"}
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        rejected = ", ".join(map(repr, unknown))
        options = ", ".join(accepted) or "none besides num_classes and width"
        raise ModelError(f"model {name!r} does not accept {rejected}; its options: {options}")
    return factory(num_classes=int(num_classes), width=float(width), **kwargs)


def _create_pretrained(
    name: str, num_classes: int, width: float, tag: str, kwargs: dict
) -> PointClassifier:
    from pcdistill.models import pretrained

    entry = pretrained.find(name, width, tag)
    spec = entry["model"]
    if num_classes != spec["num_classes"]:
        raise ModelError(f"shipped weights {entry['key']!r} have {spec['num_classes']} classes, "
                         f"not num_classes={num_classes}")  # fmt: skip
    differ = {k: v for k, v in kwargs.items() if k not in spec["kwargs"] or spec["kwargs"][k] != v}
    if differ:
        raise ModelError(f"shipped weights {entry['key']!r} were trained with "
                         f"{spec['kwargs']}, not {differ}")  # fmt: skip
    model = create_model(name, num_classes, width, **spec["kwargs"])
    model.load_state_dict(pretrained.load_weights(entry))
    return model.eval()
