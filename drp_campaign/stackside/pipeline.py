"""Turn our DRP-shaped pipeline spec (configs/pipelines/*.yaml) into a real pipe_base pipeline of
lsst.pipe.base.tests.mocks.DynamicTestPipelineTask tasks.

Rules:
- every dataset type gets one storage class: the spec's `storage_class` where it declares one,
  else from its name (catalogs and tables ArrowAstropy, everything else StructuredDataDict);
  mocked by the mock framework (`_mock_<class>`) unless a real task makes it (below);
- an input whose dimensions are not contained in the task's dimensions (after the universe's
  implied dimensions) is `multiple=True` (e.g. many detectors for a per-visit task);
- a prerequisite (a calibration, found by the quantum's time; a sky-pixel shard, by its region) is
  looked up by pipe_base when the quantum graph is built: a missing one leaves no quantum;
- each step is a labeled subset, and a pipeline for one step holds exactly that step's tasks;
- a fault `LABEL:EXPR` sets the mock's `fail_condition` (daf_butler expression on the quantum's
  data ID, e.g. `tract = 2`), so those quanta raise ValueError;
- a task with a `task_class` (a real task of ours, stackside/tasks.py) runs that class; a dataset
  type it produces is real (un-mocked) everywhere: its producer's output and every consumer's input
  use the spec's declared storage class, and a mock consuming it records it without reading it;
- a config override `LABEL:FIELD=VALUE` (a drill, or a deliberate change) sets one field of one
  task's config; VALUE is a number or a bool, nothing else, since it is written into config code.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from ..config import PipelineSpec
from ._errors import StacksideError

TASK_CLASS = "lsst.pipe.base.tests.mocks.DynamicTestPipelineTask"

_TABLE_LIKE = re.compile(r"(_star|_summary|_table|_metrics|_qa_summary|_fit|_calib)$")


def storage_class_for(dataset_type: str) -> str:
    """The (un-mocked) storage class a dataset type of the spec gets when it declares none."""
    return "ArrowAstropy" if _TABLE_LIKE.search(dataset_type) else "StructuredDataDict"


def dataset_storage_class(spec: PipelineSpec, name: str) -> str:
    """The storage class of dataset type NAME: the spec's declared one, else derived from the name."""
    return spec.dataset_types[name].storage_class or storage_class_for(name)


def real_dataset_types(spec: PipelineSpec) -> set[str]:
    """Dataset types produced by a real task (one with a task_class): un-mocked everywhere."""
    return {name for task in spec.tasks.values() if task.task_class for name in task.outputs}


def task_class(spec: PipelineSpec, label: str) -> str:
    return spec.tasks[label].task_class or TASK_CLASS


def parse_faults(faults: list[str] | None, spec: PipelineSpec, labels: list[str]) -> dict[str, str]:
    """Parse `LABEL:EXPR` strings into {label: expr}; several for one label are OR-ed."""
    out: dict[str, list[str]] = {}
    for text in faults or []:
        label, sep, expr = text.partition(":")
        label, expr = label.strip(), expr.strip()
        if not sep or not label or not expr:
            raise StacksideError(f"--fail {text!r}: expected LABEL:EXPR, e.g. isolatedStarAssociation:'tract = 2'")
        if label not in spec.tasks:
            raise StacksideError(f"--fail {text!r}: unknown task label {label!r} in {spec.file}")
        if label not in labels:
            raise StacksideError(f"--fail {text!r}: task {label!r} is not part of this step ({', '.join(labels)})")
        try:
            from lsst.daf.butler.queries.expressions.parser import parse_expression

            parse_expression(expr)
        except ImportError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise StacksideError(f"--fail {text!r}: {expr!r} is not a valid data ID expression ({exc})") from None
        out.setdefault(label, []).append(expr)
    return {label: " OR ".join(f"({e})" for e in exprs) if len(exprs) > 1 else exprs[0] for label, exprs in out.items()}


_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_config_overrides(overrides: list[str] | None, spec: PipelineSpec, labels: list[str]) -> dict[str, dict]:
    """Parse `LABEL:FIELD=VALUE` strings into {label: {field: value}}; VALUE is an int, a float or a
    bool literal (it is written into the task's config code: nothing else is accepted), and the
    field must exist in the task's config class with a type that takes VALUE."""
    import ast

    out: dict[str, dict] = {}
    for text in overrides or []:
        label, sep, assignment = text.partition(":")
        field, eq, literal = assignment.partition("=")
        label, field, literal = label.strip(), field.strip(), literal.strip()
        if not sep or not eq or not label or not field or not literal:
            raise StacksideError(
                f"--config {text!r}: expected LABEL:FIELD=VALUE, e.g. makeObjectTable:flux_calibration_scale=1.01"
            )
        if label not in spec.tasks:
            raise StacksideError(f"--config {text!r}: unknown task label {label!r} in {spec.file}")
        if label not in labels:
            raise StacksideError(f"--config {text!r}: task {label!r} is not part of this step ({', '.join(labels)})")
        if not _FIELD.match(field):
            raise StacksideError(f"--config {text!r}: {field!r} is not a config field name (an identifier)")
        try:
            value = ast.literal_eval(literal)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            value = None
        if not _plain_value(value):
            raise StacksideError(
                f"--config {text!r}: {literal!r} is not a plain value; only a number (1, 1.01, -2e-3) or "
                "True/False may be set from the command line"
            )
        _check_field(text, task_class(spec, label), field, value)
        out.setdefault(label, {})[field] = value
    return out


def _plain_value(value) -> bool:
    """An int, a finite float or a bool: what a config override may write into config code."""
    return isinstance(value, bool | int | float) and (not isinstance(value, float) or math.isfinite(value))


def _check_field(text: str, class_name: str, field: str, value) -> None:
    """Does the task's config class have FIELD, and does it take VALUE (pex_config's own checks)?
    Skipped where the stack is not importable (the controller env): pipetask checks it again."""
    try:
        from lsst.utils.doImport import doImportType
    except ImportError:
        return
    config = doImportType(class_name).ConfigClass()
    if field not in config._fields:  # noqa: SLF001 - pex_config's list of fields
        raise StacksideError(
            f"--config {text!r}: {class_name} has no config field {field!r}; "
            f"its fields: {', '.join(sorted(config._fields))}"  # noqa: SLF001
        )
    dtype = config._fields[field].dtype  # noqa: SLF001
    if isinstance(value, bool) != (dtype is bool):
        raise StacksideError(
            f"--config {text!r}: {field} is a {getattr(dtype, '__name__', dtype)} field; {value!r} is not one"
        )
    try:
        setattr(config, field, value)
    except Exception as exc:  # noqa: BLE001 - pex_config's type and range errors
        raise StacksideError(f"--config {text!r}: {field} does not take {value!r} ({exc})") from None


def _is_multiple(universe, task_dims: list[str], input_dims: list[str]) -> bool:
    task_group = universe.conform(task_dims)
    input_group = universe.conform(input_dims)
    return not set(input_group.required).issubset(set(task_group.names))


def _unmocked(name: str, real: set[str]) -> str:
    return ", mock_storage_class=False" if name in real else ""


def _config_python(
    spec: PipelineSpec, label: str, universe, fail_condition: str | None, overrides: dict | None = None
) -> str:
    task = spec.tasks[label]
    real = real_dataset_types(spec)
    lines = [
        "from lsst.pipe.base.tests.mocks import DynamicConnectionConfig",
        f"config.dimensions = {task.dimensions!r}",
    ]
    for name in task.inputs:
        dims = spec.dataset_types[name].dimensions
        multiple = _is_multiple(universe, task.dimensions, dims)
        lines.append(
            f"config.inputs[{name!r}] = DynamicConnectionConfig(dataset_type_name={name!r}, "
            f"dimensions={dims!r}, storage_class={dataset_storage_class(spec, name)!r}, multiple={multiple!r}"
            f"{_unmocked(name, real)})"
        )
    for name in task.prerequisites:
        dims = spec.dataset_types[name].dimensions
        lines.append(
            f"config.prerequisite_inputs[{name!r}] = DynamicConnectionConfig(dataset_type_name={name!r}, "
            f"dimensions={dims!r}, storage_class={dataset_storage_class(spec, name)!r}, "
            f"is_calibration={spec.dataset_types[name].calibration!r}, "
            f"multiple={_is_multiple(universe, task.dimensions, dims)!r}{_unmocked(name, real)})"
        )
    for name in task.outputs:
        dims = spec.dataset_types[name].dimensions
        task_group = universe.conform(task.dimensions)
        if not set(universe.conform(dims).required).issubset(set(task_group.names)):
            raise StacksideError(
                f"{spec.file}: task {label} output {name} has dimensions {dims} that are not part of the "
                f"task's dimensions {task.dimensions}: fix the spec"
            )
        lines.append(
            f"config.outputs[{name!r}] = DynamicConnectionConfig(dataset_type_name={name!r}, "
            f"dimensions={dims!r}, storage_class={dataset_storage_class(spec, name)!r}{_unmocked(name, real)})"
        )
    if fail_condition:
        lines.append(f"config.fail_condition = {fail_condition!r}")
    for field, value in (overrides or {}).items():
        # Checked by parse_config_overrides: an identifier and an int, float or bool.
        if not _FIELD.match(field) or not _plain_value(value):
            raise StacksideError(f"task {label}: refusing config override {field}={value!r}")
        lines.append(f"config.{field} = {value!r}")
    return "\n".join(lines) + "\n"


class _Literal(str):
    pass


def _literal_representer(dumper, data):
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")


yaml.add_representer(_Literal, _literal_representer, Dumper=yaml.SafeDumper)


def build_pipeline_yaml(
    spec: PipelineSpec,
    step: str | None = None,
    faults: dict[str, str] | None = None,
    overrides: dict[str, dict] | None = None,
) -> str:
    """pipe_base pipeline YAML: STEP's tasks only (or all, with one labeled subset per step)."""
    from lsst.daf.butler import DimensionUniverse

    universe = DimensionUniverse()
    labels = spec.step_tasks(step) if step else list(spec.tasks)
    faults = faults or {}
    overrides = overrides or {}
    doc: dict = {
        "description": f"{spec.description} [{step or 'all steps'}] (generated from {spec.file.name})",
        "tasks": {},
    }
    for label in labels:
        doc["tasks"][label] = {
            "class": task_class(spec, label),
            "config": {
                "python": _Literal(_config_python(spec, label, universe, faults.get(label), overrides.get(label)))
            },
        }
    subsets = {}
    for s in spec.steps():
        members = [lbl for lbl in spec.step_tasks(s) if lbl in labels]
        if members:
            subsets[s] = {"subset": members, "description": f"{s} of the DRP-shaped mock pipeline"}
    doc["subsets"] = subsets
    return yaml.safe_dump(doc, sort_keys=False, width=200)


def write_pipeline(
    spec: PipelineSpec,
    path: Path,
    step: str | None = None,
    faults: dict[str, str] | None = None,
    overrides: dict[str, dict] | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_pipeline_yaml(spec, step, faults, overrides))
    return path


def load_pipeline_graph(path: Path):
    """Check the generated file with pipe_base itself (raises on any error)."""
    from lsst.pipe.base import Pipeline

    return Pipeline.from_uri(str(path)).to_graph()
