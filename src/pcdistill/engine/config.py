"""Typed run configuration: YAML files plus `key=value` overrides.

Pydantic does the checking, so a wrong key or value is reported with its dotted
path (`optim.lr`) and what was expected, before any work starts.
"""

from __future__ import annotations

import json
from difflib import get_close_matches
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from pcdistill.errors import ConfigError


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _existing_absolute(v: str) -> str:
    """A path that exists, made absolute; anything else (`builtin`, a shipped weights key,
    a missing path that then fails naming itself) as typed."""
    path = Path(v).expanduser()
    return str(path.resolve()) if path.exists() else v


# Paths are stored absolute, so a run's config.yaml and checkpoints mean the same from
# any folder: inputs when they exist (relative to the working directory), outputs always.
InputPath = Annotated[str, AfterValidator(_existing_absolute)]
OutputPath = Annotated[str, AfterValidator(lambda v: str(Path(v).expanduser().resolve()))]


class DataConfig(Section):
    root: InputPath = Field(
        "builtin",
        description=(
            "dataset folder or file (format by `format`), or `builtin` (the small bundled cut)"
        ),
    )
    format: str = Field(
        "auto",
        description=("modelnet_h5, modelnet_resampled, scanobjectnn, folders, or auto (detected)"),
    )
    # Every cloud is rotated into the z-up frame on read, so models and augmentations
    # see z up.
    up_axis: Literal["x", "y", "z"] | None = Field(
        None,
        description=("the files' up axis; null: the format's own (modelnet_resampled y, others z)"),
    )
    columns: str | None = Field(
        None,
        description=(
            "column names of table files (.txt/.xyz/.pts/.npy), comma separated, e.g. x,y,z,i "
            "or x,y,z,nx,ny,nz,label; null: 3 columns xyz, 6 xyz + unit normals"
        ),
    )
    num_points: int = Field(1024, ge=1, description="points per cloud given to the model")
    sampling: Literal["first", "random", "fps"] = Field(
        "first", description=("how num_points are picked from a larger cloud")
    )
    classes: str | list[str] | None = Field(
        None, description=("a subset of classes: a list of names, or modelnet10; null: all")
    )
    normalize: bool = Field(
        False,
        description=(
            "centre each cloud and scale it into the unit sphere (recorded in checkpoints)"
        ),
    )
    fps_order: bool = Field(
        False,
        description=(
            "store every cloud in farthest-point order (with model.kwargs.fps_ordered: "
            "FPS becomes a prefix)"
        ),
    )
    val_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description=(
            "fraction of the train split held out (stratified, seeded) to pick best.pt; the "
            "test split never selects anything"
        ),
    )
    shape_augment: list[dict[str, Any]] = Field(
        default_factory=lambda: [
            {"name": "anisotropic_scale", "low": 2 / 3, "high": 3 / 2},
            {"name": "translate", "shift": 0.2},
        ],
        description="shape-level augmentation as ShapeAugment specs (what `record` records)",
    )
    jitter: float = Field(
        0.0,
        ge=0,
        description=("std of the Gaussian noise added to every coordinate (clipped at 5 std)"),
    )
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description=(
            "max fraction of points dropped per cloud (PointNet++'s random input dropout)"
        ),
    )
    shuffle: bool = Field(False, description="shuffle each cloud's point order per step")

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, v: str | None) -> str | None:
        from pcdistill.data.fileio import parse_columns  # h5py and trimesh: only when needed

        if v is not None:
            parse_columns(v)
        return v


class ModelConfig(Section):
    name: str = Field("pointnet2_ssg", description="zoo model (pcdistill models lists them)")
    width: float = Field(1.0, gt=0, description="channel width multiplier (T3DNet's tiny: 0.125)")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description=("further model arguments, e.g. {in_features: 3, fps_ordered: true}"),
    )


class OptimConfig(Section):
    name: Literal["sgd", "adam", "adamw"] = Field("adamw", description="optimizer")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="weight decay")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum (sgd only)")


class SchedConfig(Section):
    name: Literal["none", "cosine", "step", "onecycle"] = Field(
        "cosine", description=("learning-rate schedule over the run's steps")
    )
    step_size: int = Field(20, ge=1, description="epochs between decays (step)")
    gamma: float = Field(0.7, gt=0, le=1, description="decay factor per step_size epochs (step)")
    min_lr: float = Field(0.0, ge=0, description="the schedule's floor")
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up epochs before the schedule")


class TrainConfig(Section):
    epochs: int = Field(10, ge=1, description="epochs (a finished run extends with --resume)")
    batch_size: int = Field(32, ge=1, description="training batch (global under torchrun)")
    eval_batch_size: int = Field(64, ge=1, description="evaluation batch")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm; null: none")
    amp: bool = Field(False, description="mixed precision (CUDA)")
    device: str = Field("auto", description="auto, cpu, mps or cuda[:N]")
    vote: int = Field(0, ge=0, description="extra augmented copies averaged at evaluation")
    checkpoint_every: int = Field(
        0,
        ge=0,
        description=(
            "steps between mid-epoch checkpoints; 0: epoch ends (and checkpoint_minutes) only"
        ),
    )
    checkpoint_minutes: float = Field(
        5.0,
        ge=0,
        description=(
            "also checkpoint at the first step after this many minutes without one (0: off), "
            "so a kill loses minutes, not an epoch"
        ),
    )
    threads: int | None = Field(
        None, ge=1, description=("CPU threads (torch and the point kernels); null: torch's default")
    )
    sync_bn: bool = Field(
        False,
        description=(
            "under torchrun: BatchNorm statistics over the global batch, not each rank's slice"
        ),
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "mps") and not v.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu, mps or cuda[:N], got {v!r}")
        return v


class RunConfig(Section):
    seed: int = Field(0, description="seeds every random draw (per epoch and step)")
    out: OutputPath = Field("runs/default", description="run folder (stored absolute)")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    sched: SchedConfig = Field(default_factory=SchedConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


def _section_keys(schema: type[BaseModel], loc: tuple) -> list[str]:
    """The keys of the section at `loc` (a pydantic error location, its last part the
    bad key), or [] where it is not a Section (a free-form dict such as model.kwargs)."""
    model: Any = schema
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        sections = [t for t in (field.annotation, *get_args(field.annotation))
                    if isinstance(t, type) and issubclass(t, Section)]  # fmt: skip
        if not sections:
            return []
        model = sections[0]
    return list(model.model_fields)


def _suggest(schema: type[BaseModel], loc: tuple) -> str:
    """'; did you mean ...?' for a misspelt key, else the section's keys, else ''."""
    keys = _section_keys(schema, loc)
    close = get_close_matches(str(loc[-1]), keys, n=1)
    if close:
        return f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?"
    section = ".".join(map(str, loc[:-1])) or "the top level"
    return f"; {section} has {', '.join(keys)}" if keys else ""


def _format_errors(err: ValidationError, source: str, schema: type[BaseModel]) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        if e["type"] == "extra_forbidden":
            msg += _suggest(schema, e["loc"])
        msg = msg.removeprefix("Value error, ")
        got = "" if e["type"] == "extra_forbidden" else f" (got {e.get('input')!r})"
        lines.append(f"{key}: {msg}{got}")
    return f"invalid config {source}: " + "; ".join(lines)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
        node = child
    node[leaf] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["optim.lr=0.01", "model.name=dgcnn"]` -> nested dict; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    schema: type[RunConfig] = RunConfig,
) -> RunConfig:
    """Read a YAML config (or defaults), apply overrides, validate against `schema`."""
    tree: dict[str, Any] = {}
    source = "(defaults)"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping, got {type(loaded).__name__}"
            )
        tree = loaded or {}
    if overrides:
        tree = _merge(tree, parse_overrides(overrides))
    return validate_config(tree, schema, source)


def validate_config(tree: dict[str, Any], schema: type[RunConfig], source: str) -> RunConfig:
    """`tree` as a `schema` config; errors name `source` (a file) and each bad key."""
    try:
        return schema.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source, schema)) from None


def describe_keys(schema: type[BaseModel] = RunConfig, prefix: str = "") -> list[dict[str, str]]:
    """Every key of `schema` as {key, type, default, meaning}, sections expanded; an
    optional section (a loss term, netaug) is listed as off by default, then its keys."""
    rows = []
    for name, field in schema.model_fields.items():
        key = f"{prefix}{name}"
        args = get_args(field.annotation)
        sections = [t for t in (field.annotation, *args)
                    if isinstance(t, type) and issubclass(t, Section)]  # fmt: skip
        if sections:
            if type(None) in args:
                rows.append({"key": key, "type": "section", "default": "off (null)",
                             "meaning": field.description or ""})  # fmt: skip
            rows += describe_keys(sections[0], f"{key}.")
            continue
        default = json.dumps(field.get_default(call_default_factory=True))
        meaning = field.description or ""
        rows.append({"key": key, "type": _type_name(field.annotation), "default": default,
                     "meaning": meaning})  # fmt: skip
    return rows


def _type_name(annotation: Any) -> str:
    """int, float, list[float], mapping, a|b|c for a Literal, '| null' where None is allowed."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "|".join(map(str, args))
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is list:
        return f"list[{_type_name(args[0])}]" if args else "list"
    if origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
