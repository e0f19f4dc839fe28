"""The conformance suite: cases generated from op declarations, judged against numpy float64."""
