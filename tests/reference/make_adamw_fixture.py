#!/usr/bin/env python3
"""make_adamw_fixture.py: the PyTorch reference for trainer/optim.c (tests/unit/test_train_optim.c).

Two parameters (shapes [3, 4] and [5]) are trained for 5 optimizer steps with
torch.optim.AdamW, transformers' get_cosine_schedule_with_warmup (stepped once per optimizer
step), optionally torch.nn.utils.clip_grad_norm_ and gradient accumulation (the micro-batch
gradients are summed into .grad, then scaled by 1/accum, as backward of loss/accum would).
The gradients are given (seeded random), not computed, so the fixture isolates the optimizer.

Output (text, one record a line: `key n v1 ... vn`, floats as %.9g, exactly fp32 round trips):
  case NAME / cfg lr wd warmup total clip accum / init P / grad STEP MICRO P / lr STEP x /
  norm STEP x / final P   (P = both parameters' values, flattened and concatenated)
Usage: python3 tests/reference/make_adamw_fixture.py tests/data/train/adamw.txt
"""
import sys

import torch
from transformers import get_cosine_schedule_with_warmup

SHAPES = [(3, 4), (5,)]
CASES = [
    # name, lr, wd, warmup (float, as the reference's 0.1*total), total, clip (0 = none), accum
    ("clip_accum", 1e-2, 0.01, 1.5, 5, 1.0, 2),
    ("plain", 1e-3, 0.01, 0.5, 5, 0.0, 1),
    ("clip_inactive", 5e-3, 0.01, 2.0, 5, 1e6, 1),
]


def flat(ts):
    return torch.cat([t.detach().reshape(-1) for t in ts])


def line(out, key, vals):
    out.write(key + " " + str(len(vals)) + "".join(" %.9g" % float(v) for v in vals) + "\n")


def main():
    out = open(sys.argv[1], "w")
    gen = torch.Generator().manual_seed(2020)
    for name, lr, wd, warmup, total, clip, accum in CASES:
        params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]
        out.write("case %s\n" % name)
        line(out, "cfg", [lr, wd, warmup, total, clip, accum])
        line(out, "init", flat(params).tolist())
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=(0.9, 0.999), eps=1e-8,
                                foreach=False)
        # transformers' scheduler takes an int warmup in its signature but only divides by it,
        # so the reference's float 0.1*total works unchanged.
        sched = get_cosine_schedule_with_warmup(opt, warmup, total)
        for step in range(total):
            for p in params:
                p.grad = torch.zeros_like(p)
            for micro in range(accum):
                gs = [torch.randn(s, generator=gen) * 3.0 for s in SHAPES]
                line(out, "grad %d %d" % (step, micro), flat(gs).tolist())
                for p, g in zip(params, gs):
                    p.grad.add_(g)
            if accum > 1:
                for p in params:
                    p.grad.mul_(1.0 / accum)
            norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
            line(out, "norm %d" % step, [norm.item()])
            line(out, "lr %d" % step, [opt.param_groups[0]["lr"]])
            opt.step()
            sched.step()
        line(out, "final", flat(params).tolist())
    out.close()


if __name__ == "__main__":
    main()
