"""Session fixtures: each tiny Hugging Face model is built and saved once (see hf_tiny.py)."""
from __future__ import annotations

import pytest

from hf_tiny import build_hf


@pytest.fixture(scope="session")
def hf_model(request, tmp_path_factory):
    """(transformers model, directory it was saved in) for the variant given by indirect param."""
    variant = request.param
    folder = str(tmp_path_factory.mktemp(variant))
    return build_hf(variant, folder), folder


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("llama-plain"))
    build_hf("llama-gqa", folder)
    return folder

