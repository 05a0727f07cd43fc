"""Hardware profiles: how a candidate is timed (execution providers, threads, batch,
input shape, CPU cores, warmup, repeats, passes). YAML in, validated on load; built-ins
live in autocompress/profiles/ (`autocompress profiles` lists them). onnxruntime is
imported only when a session is made."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from autocompress.errors import ConfigError
from autocompress.names import BITS

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
_OPT_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class HardwareProfile:
    """Where and how latency is measured. Candidate and teacher are timed in alternating
    blocks of `repeats` runs, `passes` times (see evaluation.latency)."""

    name: str
    description: str = ""
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    batch_size: int = 1
    warmup: int = 20
    repeats: int = 40
    passes: int = 7  # at least this many block pairs ...
    max_passes: int = 31  # ... and more until the ratio's 95% interval is within target_ci, up to this many
    target_ci: float = 0.03  # relative half-width of the ratio's 95% confidence interval
    # during the search, at most this many pairs (None: max_passes); the front and the hand
    # recipes are timed again at the end with up to max_passes (see screening())
    search_max_passes: Optional[int] = None
    graph_optimization: str = "all"
    # one sample's shape for timing (default: the task's real batch as it is): a tuple for a
    # task with one input, or ((input name, shape), ...) per input (YAML: a mapping)
    input_shape: Optional[tuple] = None
    cpu_affinity: Optional[tuple[int, ...]] = None  # cores the timing process may run on (default: any)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["providers"] = list(self.providers)
        for key in ("input_shape", "cpu_affinity", "search_max_passes"):  # unset: left out (older runs' fingerprints stay valid)
            if d[key] is None:
                del d[key]
            elif key == "input_shape" and self.per_input_shapes is not None:
                d[key] = {name: list(shape) for name, shape in self.per_input_shapes.items()}
            elif key != "search_max_passes":
                d[key] = list(d[key])
        return d

    def screening(self) -> "HardwareProfile":
        """The protocol for timing candidates during the search: at most `search_max_passes`
        pairs of blocks. Every number a user reads (the teacher, the front, the hand
        recipes, `verify`) is timed with the full protocol (up to `max_passes`)."""
        from dataclasses import replace

        if self.search_max_passes is None or self.search_max_passes >= self.max_passes:
            return self
        return replace(self, max_passes=self.search_max_passes, search_max_passes=None)

    def timing_shape(self, task_shape: tuple[int, ...]) -> tuple[int, ...]:
        """One sample's input shape for timing: the profile's override or the task's."""
        return tuple(self.input_shape) if self.input_shape is not None and self.per_input_shapes is None else tuple(task_shape)

    @property
    def per_input_shapes(self) -> Optional[dict[str, tuple[int, ...]]]:
        """The per-input override as {name: shape}, or None (no override, or one tuple)."""
        if self.input_shape and isinstance(self.input_shape[0], tuple):
            return {name: tuple(shape) for name, shape in self.input_shape}
        return None

    def timing_input(self, task_shape: tuple[int, ...]):
        """A batch of fixed random float32 values of one sample shape (a file timed without a
        task: the profile's override or `task_shape`)."""
        import numpy as np

        return np.random.default_rng(0).standard_normal((self.batch_size, *self.timing_shape(task_shape))).astype(np.float32)

    def timing_feed(self, real: Mapping[str, Any]) -> dict[str, Any]:
        """The feed models are timed on, from real samples of the task (input name -> numpy
        array, dtype kept): `batch_size` rows (the samples repeated when there are fewer),
        each input whose shape the profile overrides filled to that shape by repeating its
        values. ConfigError when the override does not fit the task's inputs."""
        import numpy as np

        shapes = self.per_input_shapes
        if shapes is None and self.input_shape is not None:
            if len(real) != 1:
                raise ConfigError(f"input_shape {list(self.input_shape)} of profile {self.name!r} is one shape; the task has inputs "
                                  f"{list(real)}: give one per input, e.g. input_shape: {{{next(iter(real))}: [...]}}")
            shapes = {next(iter(real)): tuple(self.input_shape)}
        unknown = sorted(set(shapes or {}) - set(real))
        if unknown:
            raise ConfigError(f"input_shape of profile {self.name!r} names {unknown[0]!r}, which is not an input of the task {list(real)}")
        out = {}
        for name, arr in real.items():
            arr = np.asarray(arr)
            shape = (shapes or {}).get(name, arr.shape[1:])
            out[name] = np.ascontiguousarray(np.resize(arr, (self.batch_size, *shape)))
        return out

    def feed_for(self, session, timing: Any) -> dict[str, Any]:
        """The feed of `session` for `timing`: a feed of real samples (timing_feed of it, the
        inputs the session has), or one sample shape (timing_input, its one input)."""
        if isinstance(timing, Mapping):
            full = self.timing_feed(timing)
            return {i.name: full[i.name] for i in session.get_inputs()}
        return {session.get_inputs()[0].name: self.timing_input(tuple(timing))}

    def pin_process(self) -> None:
        """Restrict the calling process to `cpu_affinity` (no-op when unset)."""
        if self.cpu_affinity is not None:
            os.sched_setaffinity(0, set(self.cpu_affinity))

    @property
    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def session_options(self):
        """onnxruntime.SessionOptions for this profile."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.intra_op_threads
        so.inter_op_num_threads = self.inter_op_threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.graph_optimization]
        so.log_severity_level = 3
        return so

    def session(self, path: str | Path):
        import onnxruntime as ort

        return ort.InferenceSession(str(path), sess_options=self.session_options(), providers=list(self.providers))


_INT_FIELDS = {
    "intra_op_threads": (0, 1024),
    "inter_op_threads": (0, 1024),
    "batch_size": (1, 65536),
    "warmup": (0, 100_000),
    "repeats": (1, 100_000),
    "passes": (1, 1000),
    "max_passes": (1, 1000),
    "search_max_passes": (1, 1000),
}


def profile_from_dict(data: Any, *, source: str = "<dict>") -> HardwareProfile:
    if not isinstance(data, Mapping):
        raise ConfigError(f"hardware profile must be a mapping, got {type(data).__name__} ({source})")
    known = set(HardwareProfile.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown hardware-profile key {sorted(unknown)[0]!r}; allowed: {sorted(known)} ({source})")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise ConfigError(f"profile name must be a non-empty string, got {data.get('name')!r} ({source})")
    kw: dict[str, Any] = {"name": data["name"]}
    if "description" in data:
        if not isinstance(data["description"], str):
            raise ConfigError(f"description must be a string, got {data['description']!r} ({source})")
        kw["description"] = data["description"]
    for key, (lo, hi) in _INT_FIELDS.items():
        if key in data:
            v = data[key]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"{key} must be an integer in [{lo}, {hi}], got {v!r} ({source})")
            kw[key] = v
    if "target_ci" in data:
        v = data["target_ci"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise ConfigError(f"target_ci must be a number in (0, 1) (relative half-width, e.g. 0.03), got {v!r} ({source})")
        kw["target_ci"] = float(v)
    if kw.get("max_passes", 31) < kw.get("passes", 7):
        raise ConfigError(f"max_passes must be >= passes, got max_passes {kw.get('max_passes', 31)} < passes {kw.get('passes', 7)} ({source})")
    if "search_max_passes" in kw and not kw.get("passes", 7) <= kw["search_max_passes"] <= kw.get("max_passes", 31):
        raise ConfigError(f"search_max_passes must be between passes and max_passes, got {kw['search_max_passes']} "
                          f"(passes {kw.get('passes', 7)}, max_passes {kw.get('max_passes', 31)}) ({source})")
    if "graph_optimization" in data:
        v = data["graph_optimization"]
        if v not in _OPT_LEVELS:
            raise ConfigError(f"graph_optimization must be one of {list(_OPT_LEVELS)}, got {v!r} ({source})")
        kw["graph_optimization"] = v
    if "providers" in data:
        v = data["providers"]
        if not isinstance(v, list) or not v or not all(isinstance(p, str) for p in v):
            raise ConfigError(f"providers must be a non-empty list of names, got {v!r} ({source})")
        kw["providers"] = tuple(v)
    shapes = data.get("input_shape")
    if isinstance(shapes, Mapping):
        if not shapes:
            raise ConfigError(f"input_shape must name at least one input, got {{}} ({source})")
        pairs = []
        for name, shape in shapes.items():
            if not isinstance(shape, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 1 for i in shape):
                raise ConfigError(f"input_shape[{name!r}] must be a list of sizes >= 1 (one sample, without the batch), got {shape!r} ({source})")
            pairs.append((str(name), tuple(shape)))
        kw["input_shape"] = tuple(pairs)
    for key, what, lo in (("input_shape", "sizes >= 1 (one sample, without the batch), or a mapping input name -> such a list", 1),
                          ("cpu_affinity", "distinct core numbers >= 0", 0)):
        v = data.get(key)
        if key == "input_shape" and isinstance(v, Mapping):
            continue
        if v is None:
            continue
        if (not isinstance(v, list) or not v or not all(isinstance(i, int) and not isinstance(i, bool) and i >= lo for i in v)
                or (key == "cpu_affinity" and len(set(v)) != len(v))):
            raise ConfigError(f"{key} must be a non-empty list of {what}, got {v!r} ({source})")
        kw[key] = tuple(v)
    return HardwareProfile(**kw)


# Weight bit widths whose quantized ONNX files each execution provider runs. Checked here
# for the CPU EP of ONNX Runtime 1.32 (int4: QDQ with com.microsoft Q/DQ, run as
# DequantizeLinear -> float Conv). Providers not listed are not assumed to run any.
# The CUDA EP's quantized kernels were not checked on a GPU: it is held to fp32.
SUPPORTED_BITS: dict[str, tuple[str, ...]] = {"CPUExecutionProvider": BITS}


def supported_bits(profile: HardwareProfile) -> tuple[str, ...]:
    """The weight bit widths the profile's first (preferred) execution provider runs."""
    return SUPPORTED_BITS.get(profile.providers[0], ("fp32",))


def check_available(profile: HardwareProfile) -> None:
    """Refuse a profile this machine cannot run: an execution provider this onnxruntime
    lacks (e.g. CUDA without a GPU build), or CPU cores this process may not use."""
    why = unavailable_reason(profile)
    if why:
        raise ConfigError(f"profile {profile.name!r}: {why}")


def unavailable_reason(profile: HardwareProfile) -> Optional[str]:
    """Why `profile` cannot run here, or None."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in profile.providers if p not in available]
    if missing:
        return f"execution provider {missing[0]!r} is not available here; available: {available}"
    if profile.cpu_affinity is not None:
        usable = sorted(os.sched_getaffinity(0))
        outside = [c for c in profile.cpu_affinity if c not in usable]
        if outside:
            return f"cpu_affinity core {outside[0]} is not available here; usable cores: {usable}"
    return None


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def profiles_table() -> str:
    """The built-in profiles, one line each, with whether each can run on this machine."""
    rows, notes = [("name", "providers", "threads", "batch", "runs here", "description")], []
    for name in builtin_profiles():
        p = read_profile(name)
        why = unavailable_reason(p)
        if why:
            notes.append(f"{p.name}: {why}")
        rows.append((p.name, ",".join(x.removesuffix("ExecutionProvider") for x in p.providers),
                     "all" if p.intra_op_threads == 0 else str(p.intra_op_threads), str(p.batch_size), "yes" if why is None else "no", p.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:], "", *notes, "Use one with --profile NAME, or give a YAML file."])


def load_profile(name_or_path: str = "cpu-1thread") -> HardwareProfile:
    """A built-in profile by name or a YAML file, validated and checked to run here."""
    profile = read_profile(name_or_path)
    check_available(profile)
    return profile


def read_profile(name_or_path: str) -> HardwareProfile:
    """A built-in profile by name or a YAML file, validated (not checked against this machine)."""
    import yaml

    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        path = PROFILES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"--profile: unknown profile {name_or_path!r}; built-in: {builtin_profiles()}, or give a .yaml path")
    elif not path.is_file():
        raise ConfigError(f"--profile: {name_or_path!r} is not a file" if path.exists() else f"--profile: no such file {name_or_path!r}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return profile_from_dict(data, source=str(path))
