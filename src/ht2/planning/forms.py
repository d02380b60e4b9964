"""Latency forms as a planning step: time the planned layers' equivalent forms on a copy of
the model with the plan applied, and write the fastest into the plan."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.surgery.apply import apply
from ht2.surgery.latency_aware import FormTiming
from ht2.surgery.plan_model import Plan


def plan_forms(
    model: nn.Module,
    plan: Plan,
    example_input: torch.Tensor | None,
    timing: FormTiming | None = None,
) -> Plan:
    """`plan` with each layer's execution form set to the fastest under `timing`; `model` is
    left unchanged. Forms depend on shapes only, so plain factors stand in for a data-aware
    fit here; the plan's provenance records how the forms were timed."""
    if example_input is None:
        raise HT2Error(
            "timing forms needs an example input of the model's shape", params="example_input"
        )
    timing = timing or FormTiming()
    trial = copy.deepcopy(model)
    plain = copy.copy(plan)
    plain.layers = [replace(layer, fit="plain") for layer in plan.layers]
    apply(trial, plain, example_input=example_input)
    choices = timing.choose(trial, example_input)
    forms = {choice.name: choice.form for choice in choices.layers}
    for layer in plan.layers:
        layer.form = forms.get(layer.name, layer.form)
    plan.provenance["forms"] = choices.settings()
    return plan
