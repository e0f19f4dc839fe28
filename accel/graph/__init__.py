"""accel's graph IR: tracing a function into a flat SSA graph, compiling it per backend, interpreting it."""
