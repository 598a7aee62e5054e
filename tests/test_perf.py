"""The MFU denominator (datasheet peak on CUDA, measured matmul on the CPU) with stubbed CUDA device names,
the 100% cap, and ``ThroughputMeter.summary`` built on them."""

import warnings

import lightning as L
import pytest
import torch

from instructune import perf
from instructune.perf import (
    Peak,
    ThroughputMeter,
    compute_dtype,
    device_peak,
    model_flops_utilisation,
)


@pytest.fixture
def gpu(monkeypatch):
    """Pretend ``cuda`` is a GPU of the given name and compute capability (Lightning reads both through torch.cuda);
    any CPU measurement on the way fails the test."""
    def use(name: str, capability: tuple[int, int] = (9, 0)) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(perf, "measure_matmul_peak", lambda *a, **k: pytest.fail("measured a peak on CUDA"))
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "highest")
    return use


def peak_of(gpu, name: str, dtype: torch.dtype, capability: tuple[int, int] = (9, 0)) -> Peak:
    gpu(name, capability)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lightning's "FLOPs not found" warning goes into ``source``, not stderr
        return device_peak("cuda:0", dtype)


def test_lightning_table_gives_the_datasheet_peak_of_the_h100_and_a100(gpu):
    assert peak_of(gpu, "NVIDIA H100 80GB HBM3", torch.bfloat16) == Peak(
        989.4e12, "datasheet: NVIDIA H100 80GB HBM3, bf16 (Lightning's table)")
    assert peak_of(gpu, "NVIDIA H100 80GB HBM3", torch.float16).flops == 989.4e12
    assert peak_of(gpu, "NVIDIA H100 PCIe", torch.bfloat16).flops == 756e12
    assert peak_of(gpu, "NVIDIA A100-SXM4-80GB", torch.bfloat16) == Peak(
        312e12, "datasheet: NVIDIA A100-SXM4-80GB, bf16 (Lightning's table)")
    assert peak_of(gpu, "NVIDIA L4", torch.bfloat16).flops == 121e12


def test_fp32_is_tf32_on_ampere_unless_matmul_precision_is_highest(gpu, monkeypatch):
    assert peak_of(gpu, "NVIDIA A100-SXM4-80GB", torch.float32, (8, 0)) == Peak(
        19.5e12, "datasheet: NVIDIA A100-SXM4-80GB, fp32 (Lightning's table)")
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")  # what allow_tf32 = True sets
    assert peak_of(gpu, "NVIDIA A100-SXM4-80GB", torch.float32, (8, 0)) == Peak(
        156e12, "datasheet: NVIDIA A100-SXM4-80GB, tf32 (Lightning's table)")
    assert peak_of(gpu, "NVIDIA H100 80GB HBM3", torch.float32).flops == 494.7e12
    assert peak_of(gpu, "NVIDIA H200", torch.float32).source == "datasheet: NVIDIA H200, tf32 (instructune's table)"
    # before Ampere there is no TF32: the plain fp32 peak
    assert peak_of(gpu, "Tesla V100-SXM2-16GB", torch.float32, (7, 0)) == Peak(
        15.7e12, "datasheet: Tesla V100-SXM2-16GB, fp32 (Lightning's table)")


def test_own_table_covers_what_lightning_lacks_or_misreads(gpu):
    # Lightning finds no entry for these names (its H200 numbers are with sparsity) ...
    assert peak_of(gpu, "NVIDIA H200", torch.bfloat16) == Peak(
        989.4e12, "datasheet: NVIDIA H200, bf16 (instructune's table)")
    assert peak_of(gpu, "NVIDIA GH200 480GB", torch.bfloat16).flops == 989.4e12
    assert peak_of(gpu, "NVIDIA B200", torch.bfloat16).flops == 2.25e15
    # ... has a pair of cards' figures for the NVL and reads the L40 and L40S as the L4 (121 TFLOP/s)
    assert peak_of(gpu, "NVIDIA H100 NVL", torch.bfloat16).flops == 835.5e12
    assert peak_of(gpu, "NVIDIA H200 NVL", torch.float16).flops == 835.5e12
    assert peak_of(gpu, "NVIDIA L40S", torch.bfloat16) == Peak(
        362.05e12, "datasheet: NVIDIA L40S, bf16 (instructune's table)")
    assert peak_of(gpu, "NVIDIA L40", torch.bfloat16).flops == 181.05e12


def test_unknown_device_or_dtype_gives_no_peak_and_says_why(gpu):
    assert peak_of(gpu, "NVIDIA Quantum 9000", torch.bfloat16) == Peak(
        None, "unknown: FLOPs not found for 'NVIDIA Quantum 9000'")
    assert peak_of(gpu, "NVIDIA GB200", torch.bfloat16) == Peak(None, "unknown: FLOPs not found for 'NVIDIA GB200'")
    assert peak_of(gpu, "Tesla T4", torch.bfloat16, (7, 5)) == Peak(
        None, "unknown: 'Tesla T4' does not support torch.bfloat16")
    assert peak_of(gpu, "NVIDIA B200", torch.float32, (10, 0)) == Peak(
        None, "unknown: no fp32 figure for 'NVIDIA B200' in instructune's table")
    assert device_peak("meta", torch.float32) == Peak(None, "unknown: no datasheet table or measurement for meta devices")


def test_cpu_peak_is_the_measured_matmul_in_the_training_dtype(monkeypatch):
    calls = []
    monkeypatch.setattr(perf, "measure_matmul_peak", lambda *args: calls.append(args) or 5e10)
    assert device_peak("cpu", torch.float32) == Peak(5e10, "measured: 1024x1024 fp32 matmul on cpu")
    assert device_peak(torch.device("cpu"), torch.bfloat16) == Peak(5e10, "measured: 1024x1024 bf16 matmul on cpu")
    assert calls == [("cpu", torch.float32, 1024), ("cpu", torch.bfloat16, 1024)]


def test_mfu_is_a_ratio_up_to_one_and_none_past_it_or_without_a_peak():
    assert model_flops_utilisation(0.5e12, Peak(1e12, "datasheet: x")) == 0.5
    assert model_flops_utilisation(1e12, Peak(1e12, "datasheet: x")) == 1.0
    assert model_flops_utilisation(1.2e12, Peak(1e12, "datasheet: x")) is None
    assert model_flops_utilisation(0.5e12, Peak(None, "unknown: x")) is None


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-mixed", torch.bfloat16), ("bf16-true", torch.bfloat16),
                                                 ("16-mixed", torch.float16), ("16-true", torch.float16),
                                                 ("32-true", torch.float32), ("64-true", torch.float64)])
def test_precision_names_map_to_their_matmul_dtype(precision, dtype):
    assert compute_dtype(precision) is dtype


class Tiny(L.LightningModule):
    """Embedding + one bias-free linear: a forward + backward of 2x5 tokens is 3 x 2*10*4*8 = 1920 counted FLOPs
    (forward, input gradient, weight gradient; the embedding's backward is no matmul)."""

    architecture = "causal"

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.out = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 8, bias=False)

    def forward(self, batch):
        return self.out(self.emb(batch["input_ids"]))

    @staticmethod
    def token_loss(logits, targets):
        return logits.square().mean(), targets.numel()

    def training_step(self, batch, batch_idx):
        return self.token_loss(self(batch), batch["labels"])[0]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def batch() -> dict[str, torch.Tensor]:
    ids = torch.arange(10).view(2, 5)
    return {"input_ids": ids, "attention_mask": (ids < 8).long(), "labels": ids}  # 8 real tokens of 10


def meter_after(seconds: float, device: str, dtype: torch.dtype) -> ThroughputMeter:
    meter = ThroughputMeter()
    meter.on_train_batch_start(None, Tiny(), batch(), 0)
    meter.on_train_batch_start(None, Tiny(), batch(), 1)
    meter.seconds, meter.device, meter.dtype = seconds, torch.device(device), dtype
    return meter


def test_summary_divides_real_token_flops_by_the_training_devices_datasheet_peak(gpu):
    gpu("NVIDIA H100 80GB HBM3")
    module = Tiny()  # on the CPU, as after Lightning's teardown; the run trained on cuda
    t = meter_after(2.0, "cuda:0", torch.bfloat16).summary(module)
    achieved = 192 * 16 / 2.0  # 1920 FLOPs / 10 positions, 16 real tokens in 2 s
    assert {k: t[k] for k in ("flops_per_token", "achieved_flops", "peak_flops", "peak_source", "mfu")} == {
        "flops_per_token": 192, "achieved_flops": 1536, "peak_flops": 989_400_000_000_000,
        "peak_source": "datasheet: NVIDIA H100 80GB HBM3, bf16 (Lightning's table)", "mfu": round(achieved / 989.4e12, 4)}


def test_summary_reports_the_peak_unknown_rather_than_an_mfu_over_100_percent(gpu):
    gpu("NVIDIA H100 80GB HBM3")
    t = meter_after(1e-15, "cuda:0", torch.bfloat16).summary(Tiny())
    assert t["mfu"] is None and t["peak_flops"] is None
    assert t["peak_source"] == ("unknown: achieved 3.072e+18 FLOP/s exceeds the 9.894e+14 of "
                                "'datasheet: NVIDIA H100 80GB HBM3, bf16 (Lightning's table)'")
    gpu("NVIDIA Quantum 9000")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = meter_after(2.0, "cuda:0", torch.bfloat16).summary(Tiny())
    assert (t["peak_flops"], t["mfu"], t["achieved_flops"]) == (None, None, 1536)


def test_summary_counts_flops_where_the_parameters_are(monkeypatch):
    monkeypatch.setattr(perf, "measure_matmul_peak", lambda *args: 1e6)
    counted_on = []
    real_step_flops = perf.step_flops
    monkeypatch.setattr(perf, "step_flops", lambda m, b: counted_on.append({v.device for v in b.values()})
                        or real_step_flops(m, b))
    module = Tiny()
    module._device = torch.device("meta")  # ``module.device`` out of step with its parameters (on the CPU)
    t = meter_after(2.0, "cpu", torch.float32).summary(module)
    assert counted_on == [{torch.device("cpu")}]
    assert (t["flops_per_token"], t["peak_flops"], t["mfu"]) == (192, 1_000_000, 0.0015)


def test_fit_records_the_training_device_and_the_precisions_dtype(monkeypatch):
    monkeypatch.setattr(perf, "measure_matmul_peak", lambda *args: 1e12)
    meter, module = ThroughputMeter(), Tiny()
    data = torch.utils.data.DataLoader([batch()] * 3, batch_size=None)
    L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=3, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, callbacks=[meter]).fit(module, data)
    assert (meter.device, meter.dtype) == (torch.device("cpu"), torch.bfloat16)
    t = meter.summary(module)
    assert (t["real_tokens"], t["flops_per_token"], t["peak_flops"]) == (24, 192, 1_000_000_000_000)
    assert t["peak_source"] == "measured: 1024x1024 bf16 matmul on cpu"
    assert t["mfu"] == pytest.approx(t["achieved_flops"] / 1e12, abs=1e-4)
