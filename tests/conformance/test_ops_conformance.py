"""Every op against numpy float64, per backend (`pytest --backend NAME`): the suite shipped in
`accel.conformance.test_backend`, collected here so `make test` runs it on every backend."""
from accel.conformance.test_backend import test_model_conforms, test_op_conforms  # noqa: F401
