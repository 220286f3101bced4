"""Training images/s on this machine: plain fp32 against channels-last + bf16 autocast.

    python -m aiscan.benchmarks.train_speed [--arch tf_efficientnet_lite0] [--size 224]

Synthetic batches of 32 (data loading excluded), Adam, cross entropy, 2 warm-up steps and
5 timed steps per setting.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from aiscan.model.console import Parser


def steps_per_s(arch: str, size: int, channels_last: bool, bf16: bool, steps: int = 5) -> float:
    import torch

    from aiscan.model.factory import create

    torch.manual_seed(0)
    model = create(arch).train()
    x, y = torch.randn(32, 3, size, size), torch.randint(0, 2, (32,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-4, weight_decay=1e-5)
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return 32 * steps / (time.perf_counter() - t0)


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(description=__doc__)
    p.add_argument("--arch", default="tf_efficientnet_lite0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/train_speed_cpu.json"))
    args = p.parse_args(argv)
    rows = []
    for cl, bf in ((False, False), (True, False), (False, True), (True, True)):
        ips = steps_per_s(args.arch, args.size, cl, bf)
        rows.append(
            {
                "arch": args.arch,
                "size": args.size,
                "channels_last": cl,
                "bf16": bf,
                "images_per_s": round(ips, 1),
            }
        )
        print(json.dumps(rows[-1]))
    from .runners import machine

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
