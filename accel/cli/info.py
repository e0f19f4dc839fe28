"""`accel info`: installed backends (or why not), their devices, and native op/dtype coverage."""
from __future__ import annotations

import os

import accel
from accel import ops
from accel.core.registry import backend_class


def register(sub) -> None:
    p = sub.add_parser("info", help="backends, devices and native op/dtype coverage")
    p.add_argument("--backend", help="show only this backend")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.backend:  # an unknown name (or device) is an error, not an empty listing
        backend_class(args.backend.split(":")[0])
        if ":" in args.backend:
            accel.get_backend(args.backend)
    statuses = accel.available_backends()
    print(f"accel {accel.__version__}: {len(ops.PRIMITIVES)} primitive ops, {len(ops.COMPOSITES)} composite ops")
    print(default_backend_line(statuses))
    for name, status in statuses.items():
        if args.backend and name != args.backend.split(":")[0]:
            continue
        if not status.available:
            hint = f" ({status.install_hint})" if status.install_hint else ""
            print(f"\n{name}: unavailable: {status.reason}{hint}")
            continue
        print(f"\n{name}: available, devices: {', '.join(status.devices) or '-'}")
        for device in status.devices:
            backend = accel.get_backend(f"{name}:{device}" if not accel.backend_class_is_cpu_only(name) else name)
            caps = backend.capabilities()
            native_prims = [op.name for op in ops.PRIMITIVES if op.name in caps.native_ops]
            missing = [op.name for op in ops.PRIMITIVES if op.name not in caps.native_ops]
            fused = [op.name for op in ops.COMPOSITES if op.name in caps.native_ops]
            print(f"  {backend.spec}")
            for key, value in caps.facts.items():
                if key != "collective_backend":  # declared in Capabilities: printed below
                    print(f"    {key}: {value}")
            print(f"    collective_backend: {caps.collective_backend or 'none (cannot join a multi-process job)'}")
            print(f"    primitives native: {len(native_prims)}/{len(ops.PRIMITIVES)}"
                  + (f" (host fallback: {', '.join(missing)})" if missing else ""))
            print(f"    composites fused: {', '.join(fused) or 'none'} (others decompose)")
            print(f"    dtypes: {', '.join(sorted(caps.dtypes, key=_dtype_order))}")
            for op_name, dts in sorted(caps.op_dtypes.items()):
                print(f"      {op_name}: {', '.join(sorted(dts, key=_dtype_order))}")
    return 0


def default_backend_line(statuses) -> str:
    """Which backend runs when none is named, and why (ACCEL_BACKEND, or the auto-detect ranking:
    each available backend's declared priority, accelerators high, the reference numpy at -1)."""
    chosen = accel.current_backend().spec
    env = os.environ.get("ACCEL_BACKEND")
    if env:
        return f"default backend: {chosen} (set by ACCEL_BACKEND={env})"
    ranked = sorted(((-1 if backend_class(n).is_reference else backend_class(n).priority, n)
                     for n, st in statuses.items() if st.available), reverse=True)
    order = " > ".join(f"{n} ({p})" for p, n in ranked)
    return (f"default backend: {chosen} (auto-detected: the available backend of highest priority: "
            f"{order}; name one with --backend or ACCEL_BACKEND)")


def _dtype_order(name: str) -> int:
    return [d.name for d in accel.ALL_DTYPES].index(name)
