"""The plan: stage estimates from the profile's shapes, the colab budget, and what `auto` picks."""
import shutil
from types import SimpleNamespace

import pytest
import torch

from memdec_helpers import load_profile, pipeline as P
from memdec_helpers.planning import devices as specs
from memdec_helpers.runtime import devices as device_memory
from memdec_helpers.planning.devices import T4
from memdec_helpers.planning.shapes import forward_flops, hub_shape
from memdec_helpers.planning.plan import format_plan, make_plan
from memdec_helpers.profiles import auto_choice


def test_gpt2_shapes_and_flops():
    small, medium = hub_shape("openai-community/gpt2"), hub_shape("gpt2-medium")
    assert abs(small.params - 124.4e6) < 0.5e6 and abs(medium.params - 354.8e6) < 1e6
    # 2 FLOPs per weight of the 12 blocks, attention over 1024 positions, the 50,257-way head
    assert forward_flops(small, 1024) == pytest.approx(2 * 84.9e6 + 2 * 12 * 1024 * 768
                                                       + 2 * 768 * 50257, rel=1e-3)


def test_colab_plan_on_a_t4_meets_its_budget():
    profile = load_profile("colab")
    plan = make_plan(profile, T4)
    goal = profile.budget()
    assert goal == {"minutes": 60, "gpu_gb": 14, "host_gb": 10, "disk_gb": 15}
    assert plan.minutes <= goal["minutes"] and plan.gpu_gb <= goal["gpu_gb"]
    assert plan.host_gb <= goal["host_gb"] and plan.disk_gb <= goal["disk_gb"]
    names = [s.name for s in plan.stages]
    assert any("kNN targets" in n for n in names) and any("ablation" in n for n in names)
    assert {"datastore keys, base 0", "datastore keys, base 1"} <= set(names)  # one per base
    assert any(n.startswith("DAPT") for n in names)
    table = format_plan(plan, goal)
    assert table.count("\n| ") == len(plan.stages) + 3  # header, rule, stages, total, budget


def test_plan_grows_with_the_caps():
    small, big = (make_plan(load_profile("colab", max_train_tokens=n), T4) for n in (1e6, 4e6))
    assert big.disk_gb > small.disk_gb + 4  # 3M more keys: 4.6 GB of fp16 keys alone
    target_minutes = [next(s.seconds for s in p.stages if s.name.startswith("kNN targets"))
                      for p in (small, big)]
    assert target_minutes[1] > 12 * target_minutes[0]  # exact search: quadratic in N


def machine(monkeypatch, name: str, gpu_gb: float, host_gb: float = 12.7, disk_gb: float = 80,
            colab: bool = True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=0: SimpleNamespace(name=name, total_memory=gpu_gb * 1e9))
    monkeypatch.setattr(device_memory, "host_total_bytes", lambda: host_gb * 1e9)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=disk_gb * 1e9))
    if colab:
        monkeypatch.setenv("COLAB_RELEASE_TAG", "test")
    else:
        monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
        monkeypatch.delenv("COLAB_GPU", raising=False)


def test_auto_picks_colab_on_a_t4(monkeypatch):
    machine(monkeypatch, "Tesla T4", 15.8)
    assert auto_choice() == ("colab", [])


@pytest.mark.parametrize("gpu,host,disk,speed,why", [(3.0, 12.7, 80, 1, "GPU memory"),
                                                     (15.8, 12.7, 80, 0.25, "over its budget of 60 min"),
                                                     (15.8, 2.0, 80, 1, "host memory"),
                                                     (15.8, 12.7, 6, 1, "free disk")])
def test_auto_passes_over_colab_when_its_plan_does_not_fit(monkeypatch, gpu, host, disk, speed,
                                                           why):
    machine(monkeypatch, "Tesla T4", gpu, host, disk)
    flops, *rest = specs.GPUS["T4"]
    monkeypatch.setitem(specs.GPUS, "T4", (flops * speed, *rest))  # speed < 1: a slower T4
    name, notes = auto_choice()
    assert name == "cpu" and why in notes[0] and "colab" in notes[0]


def test_auto_elsewhere_prefers_gpu_then_colab(monkeypatch):
    machine(monkeypatch, "NVIDIA H100 80GB HBM3", 80, 512, 2000, colab=False)
    assert auto_choice()[0] == "gpu"
    machine(monkeypatch, "NVIDIA H100 80GB HBM3", 80, 512, 100, colab=False)
    name, notes = auto_choice()
    assert name == "colab" and "'gpu'" in notes[0] and "free disk" in notes[0]


def test_setup_prints_the_plan_first(capsys, profile):
    P.setup(profile)
    out = capsys.readouterr().out
    assert "plan:" in out and "min" in out and "host" in out


def test_the_plan_costs_the_seeds_and_lesson_06s_full_length_runs():
    """main_seeds > 1 adds the decoder's seeds (lesson 03) and DAPT's (04); lesson 06 adds the
    same-size decoder and the base-1-taught decoder (with its targets) at the full schedule."""
    one, three = (make_plan(load_profile("tiny", main_seeds=n), T4) for n in (1, 3))
    lessons = {s.name: s.lesson for s in three.stages}
    assert lessons["train the Memory Decoder, other seeds (main_seeds)"] == "03"
    assert "train the Memory Decoder, other seeds (main_seeds)" not in {s.name for s in one.stages}
    dapt = [next(s.seconds for s in p.stages if s.name.startswith("DAPT: fine-tune"))
            for p in (one, three)]
    assert dapt[1] > 2.5 * dapt[0]  # three DAPT runs instead of one
    names = [s.name for s in three.stages if s.lesson == "05"]  # trained in 05, read in 06
    assert any(n.startswith("same-size decoder (") for n in names)
    assert any(n.startswith("teacher targets from base 1") for n in names)
    assert any(n.startswith("decoder taught by base 1") for n in names)
