"""Training throughput (samples/s) and single-spectrum inference latency; prints figures."""

from __future__ import annotations

import time

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from defectnet.cli import CONF_DIR
from defectnet.data.cache import load_cache
from defectnet.metrics import masked_mse


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench/train")
def main(cfg: DictConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    ds = load_cache(cfg.data_path)
    x, mask, target = ds.inputs(), ds.mask, ds.targets
    module = instantiate(cfg.model)
    net = module.model
    opt = module.optimizer_factory(params=net.parameters())
    g = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(0, len(ds), (cfg.batch_size,), generator=g) for _ in range(cfg.steps + 5)
    ]
    net.train()
    for i, idx in enumerate(batches):
        if i == 5:
            t0 = time.perf_counter()
        pred, _ = net(x[idx], mask[idx])
        loss = masked_mse(pred, target[idx], mask[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_rate = cfg.steps * cfg.batch_size / (time.perf_counter() - t0)
    net.eval()
    times = []
    with torch.inference_mode():
        for i in range(cfg.latency_repeats + 10):
            t = time.perf_counter()
            net(x[i % len(ds)][None], mask[i % len(ds)][None])
            if i >= 10:
                times.append(time.perf_counter() - t)
    times = torch.tensor(times) * 1e3
    n_params = sum(p.numel() for p in net.parameters())
    print(
        f"DefectNet ({n_params:,} parameters), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CPU"
    )
    print(f"  training:  {train_rate:,.0f} samples/s (batch {cfg.batch_size}, {cfg.steps} steps)")
    print(
        f"  inference: {times.median():.2f} ms median, {times.quantile(0.9):.2f} ms p90 "
        f"per single spectrum"
    )


if __name__ == "__main__":
    main()
