"""The core layer: Tensor, dtypes, errors, the Op object, dispatch, the backend contract, the registry.

Everything else in accel (ops, graph, autodiff, tools) builds on these modules; they import
nothing above them.
"""
