"""The device logic, run on CPU with torch's CUDA entry points faked: torch's own rules apply
(``torch.cuda.set_device`` is the real function; only the driver call beneath it is faked)."""

from __future__ import annotations

import os

import pytest
import torch

from mtlzoo.contract.errors import ConfigError
from mtlzoo.runtime import distributed as D
from mtlzoo.runtime.evaluate import amp_dtype, wants_cache, wants_channels_last
from mtlzoo.runtime.loading import CUDA_PREFETCH, auto_workers, available_cores, loader_settings
from mtlzoo.runtime.process import set_determinism, wants_determinism

CUDA0 = torch.device("cuda", 0)
CPU = torch.device("cpu")


@pytest.fixture
def fake_cuda(monkeypatch):
    """Two fake GPUs: availability, count and current device faked; ``torch.cuda.set_device``
    stays torch's own (it refuses an index-less device), only the driver call records the index."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch._C, "_cuda_setDevice", chosen.append, raising=False)
    for key in ("WORLD_SIZE", "LOCAL_RANK", "RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    return chosen


def test_torch_refuses_an_index_less_cuda_device(fake_cuda):
    # the rule the old code broke: this is what every GPU run died of at start-up
    with pytest.raises(ValueError, match="Expected a torch.device with a specified index"):
        torch.cuda.set_device(torch.device("cuda"))


@pytest.mark.parametrize(
    ("requested", "device", "chosen"),
    [("cuda", CUDA0, [0]), ("auto", CUDA0, [0]), ("cuda:1", torch.device("cuda", 1), [1]), ("cpu", CPU, [])],
)
def test_a_cuda_device_always_gets_its_index(fake_cuda, requested, device, chosen):
    assert D.local_device(requested) == device
    assert fake_cuda == chosen


def test_each_torchrun_rank_takes_the_gpu_of_its_local_rank(fake_cuda, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert D.local_device("cuda") == torch.device("cuda", 1)
    assert D.local_device("auto") == torch.device("cuda", 1)
    assert fake_cuda == [1, 1]


def test_device_mistakes_are_one_line(fake_cuda, monkeypatch):
    with pytest.raises(ConfigError, match=r"cuda:2 does not exist, 2 GPU\(s\) are visible"):
        D.local_device("cuda:2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(ConfigError, match="local rank 3 but only 2 GPU"):
        D.local_device("cuda")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ConfigError, match="would put every rank on one GPU"):
        D.local_device("cuda:0")
    assert fake_cuda == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA was asked for but is not available"):
        D.local_device("cuda")
    assert D.local_device("auto") == CPU


def test_determinism_is_on_for_cpu_and_off_for_cuda_unless_asked():
    assert wants_determinism(None, CPU) is True
    assert wants_determinism(None, CUDA0) is False
    assert wants_determinism(True, CUDA0) is True and wants_determinism(False, CPU) is False


def test_cuda_determinism_settings(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    try:
        set_determinism(False, CUDA0)
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
        assert not torch.are_deterministic_algorithms_enabled()
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        set_determinism(True, CUDA0)
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # cuBLAS is deterministic only with it
        assert torch.are_deterministic_algorithms_enabled()
        set_determinism(True, CPU)
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=True)
        torch.backends.cudnn.benchmark = before[1]
        torch.backends.cudnn.deterministic = False


def test_loader_defaults_follow_the_device(monkeypatch):
    monkeypatch.setattr("mtlzoo.runtime.loading.available_cores", lambda: 16)
    cuda = loader_settings(CUDA0, None, None)
    assert cuda == {
        "num_workers": 8,
        "pin_memory": True,
        "persistent_workers": True,
        "prefetch_factor": CUDA_PREFETCH,
    }
    assert loader_settings(CPU, None, None) == {
        "num_workers": 0,
        "pin_memory": False,
        "persistent_workers": False,
    }
    # what the spec says wins
    assert (
        loader_settings(CUDA0, 2, False)["num_workers"] == 2
        and not loader_settings(CUDA0, 2, False)["pin_memory"]
    )
    assert loader_settings(CPU, 3, None) == {
        "num_workers": 3,
        "pin_memory": False,
        "persistent_workers": True,
        "prefetch_factor": 2,
    }


@pytest.mark.parametrize(
    ("cores", "processes", "workers"), [(16, 1, 8), (16, 4, 3), (4, 1, 3), (2, 1, 2), (1, 1, 1), (8, 8, 1)]
)
def test_auto_workers_share_the_cores(cores, processes, workers):
    # one core of each process's share stays with the training loop once there are more than 2
    assert auto_workers(CUDA0, cores, processes) == workers
    assert auto_workers(CPU, cores, processes) == 0


def test_mtlzoo_cores_caps_the_cores_a_process_counts(monkeypatch):
    monkeypatch.setenv("MTLZOO_CORES", "1")
    assert available_cores() == 1
    monkeypatch.setenv("MTLZOO_CORES", "not a number")
    assert available_cores() == len(os.sched_getaffinity(0))


def test_amp_and_channels_last_follow_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert amp_dtype("auto", CUDA0) is torch.bfloat16 and amp_dtype("auto", CPU) is None
    assert amp_dtype("bf16", CPU) is torch.bfloat16 and amp_dtype("off", CUDA0) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert amp_dtype("auto", CUDA0) is None
    assert wants_channels_last(None, CUDA0) and not wants_channels_last(None, CPU)
    assert wants_channels_last(True, CPU) and not wants_channels_last(False, CUDA0)


class _Sized:
    """A stand-in pipeline dataset of ``n`` samples of ``nbytes`` each."""

    def __init__(self, n, nbytes, cacheable=True):
        from types import SimpleNamespace

        self.n, self.nbytes = n, nbytes
        self.base = SimpleNamespace(info=SimpleNamespace(cacheable=cacheable))

    def __len__(self):
        return self.n

    def enable_cache(self):
        pass

    def entry_bytes(self, index=0):
        return self.nbytes


def test_cache_auto_keeps_a_split_that_fits(monkeypatch):
    monkeypatch.setattr("mtlzoo.runtime.evaluate.memory_bytes", lambda: 16 * 2**30)
    assert wants_cache("auto", _Sized(701, 2**20))  # CamVid-sized: 0.7 GiB of 4 GiB
    assert not wants_cache("auto", _Sized(701, 2**20), processes=8)  # 8 ranks on the node: 0.5 GiB each
    assert not wants_cache("auto", _Sized(100_000, 2**20))  # 98 GiB
    assert not wants_cache("auto", _Sized(10, 10, cacheable=False))
    assert wants_cache("on", _Sized(100_000, 2**20)) and not wants_cache("off", _Sized(1, 1))


def test_the_optimizer_fuses_its_kernels_on_cuda_only():
    from types import SimpleNamespace

    from mtlzoo.runtime.optim import fused_kernels

    on = SimpleNamespace(device=CUDA0)
    assert fused_kernels([on, on])
    assert not fused_kernels([on, SimpleNamespace(device=CPU)])  # fused kernels need every tensor on CUDA
    assert not fused_kernels([torch.nn.Parameter(torch.zeros(2))]) and not fused_kernels([])
