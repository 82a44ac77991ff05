"""Compress a SASRec you already trained: wrap it, search width and depth, slice, retrain, export.

    python examples/compress_trained_sasrec.py [--out models/example] [--epochs 3]

Runs in about a minute on a laptop CPU with the embedded Gowalla sample.
"""
import argparse

import torch

import compress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="models/example")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    data = compress.load_dataset()  # the embedded default dataset
    arch = compress.ArchSpec(hidden=32, inner=64, heads=4, layers=2)
    model = compress.get_backbone("sasrec")(arch, data.n_items, max_len=30)
    compress.fit(model, data, compress.TrainConfig(epochs=args.epochs, batch_size=128), torch.device("cpu"))

    # Warm start: the trained weights initialise the supernet; linear attention and gates are injected.
    # Channels are first ordered by importance (group magnitude), so narrow candidates keep the important ones.
    supernet = compress.wrap(model, space=compress.SearchSpace(hidden_ratios=(0.0, 0.5), inner_ratios=(0.0, 0.5)),
                             reorder="magnitude")
    result = compress.search(supernet, data, compress.SearchConfig(epochs=args.epochs, batch_size=128,
                                                                   max_flops="60%"), device="cpu")
    small = result.slice()  # dense, physically smaller, weights transferred from the supernet
    compress.fit(small, data, compress.TrainConfig(epochs=args.epochs, batch_size=128), torch.device("cpu"))
    print("decision:", result.arch)
    print("FLOPs:", compress.measured_flops(small, small.max_len), "vs", compress.measured_flops(model, model.max_len))
    print("test NDCG@10 (full):", round(compress.split_metrics(small, data)["test/full"]["ndcg@10"], 4))
    result.export(args.out, data, model=small, overwrite=True)
    print("exported to", args.out, "->", compress.Recommender.load(args.out).recommend([["0", "1"]], k=3)[0])


if __name__ == "__main__":
    main()
