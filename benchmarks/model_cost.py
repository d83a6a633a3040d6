"""Parameters, GFLOPs and PyTorch CPU latency of a trained run (or a preset).

    python benchmarks/model_cost.py --model runs/teacher --threads 2 --runs 50

Latency is the median (and p90) of `--runs` timed calls after 5 warm-up calls, batch 1:
the image path alone, and image + text paths with 8 phrases (for network v2 presets the phrase
decoder's GFLOPs on 8 phrases too).
"""

from __future__ import annotations

import argparse

import torch
from timing import median, percentile, timed
from torch.utils.flop_counter import FlopCounterMode

from groundrt.model.checkpoint import load_model
from groundrt.model.config import PRESETS
from groundrt.model.network import GroundingNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="run folder (default: an untrained --preset)")
    parser.add_argument("--preset", default="teacher", choices=sorted(PRESETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model) if args.model else GroundingNet(PRESETS[args.preset])
    model.eval()
    cfg = model.cfg
    image = torch.randn(1, 3, cfg.input_size, cfg.input_size)
    tokens = torch.randint(4, cfg.vocab_size, (1, 40))
    padding = torch.zeros(1, 40, dtype=torch.bool)
    spans = torch.tensor([[[1 + 4 * i, 4 + 4 * i] for i in range(8)]])

    with FlopCounterMode(display=False) as image_flops:  # (its module tracker needs autograd)
        model.image_encoder(image)
    with FlopCounterMode(display=False) as text_flops:
        token_embed = model.text_encoder(tokens, padding)
    phrase_flops = None
    if cfg.phrase_queries:  # network v2: the phrase decoder on 8 phrases of 3 tokens
        from groundrt.model.phrase_decoder import phrase_tokens

        graph_inputs = model.image_graph(image)
        own, valid = phrase_tokens(token_embed.detach(), spans)
        with FlopCounterMode(display=False) as phrase_flops:
            model.phrase_graph(graph_inputs["objects"], graph_inputs["memory"], own, valid)
    with torch.no_grad():
        image_ms = timed(lambda: model.image_encoder(image), args.runs)
        full_ms = timed(lambda: model(image, tokens, padding, spans), args.runs)

    params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.model or args.preset}, input {cfg.input_size}x{cfg.input_size}, "
          f"torch {torch.__version__}, {args.threads} threads")
    print(f"parameters: {params / 1e6:.3f} M "
          f"(image path {sum(p.numel() for p in model.image_encoder.parameters()) / 1e6:.3f} M)")
    print(f"GFLOPs (2 per multiply-add): image path {image_flops.get_total_flops() / 1e9:.3f}, "
          f"text path at 40 tokens {text_flops.get_total_flops() / 1e9:.4f}"
          + (f", phrase decoder at 8 phrases {phrase_flops.get_total_flops() / 1e9:.4f}"
             if phrase_flops else ""))
    for name, ms in (("image path", image_ms), ("image + text, 8 phrases", full_ms)):
        print(f"latency {name}: median {median(ms):.1f} ms, "
              f"p90 {percentile(ms, 0.9):.1f} ms over {args.runs}")


if __name__ == "__main__":
    main()
