"""Wrap your own PyTorch recommender through a declared mapping (no adapter code), compress it, serve it.

    python examples/wrap_declared_model.py [--out models/declared] [--epochs 3]

``MyRecommender`` stands for a model written from scratch: pre-LN blocks with a packed qkv
projection and names of its own. ``examples/my_recommender.yaml`` tells compress where each part
lives; wrapping carries every trained weight into the supernet. Runs in about a minute on a CPU.
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F
from torch import nn

import compress

D, HEADS, INNER, N = 64, 4, 128, 30


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm_a, self.norm_b = nn.LayerNorm(D), nn.LayerNorm(D)
        self.mix = nn.ModuleDict({"qkv": nn.Linear(D, 3 * D), "proj": nn.Linear(D, D)})
        self.up, self.down = nn.Linear(D, INNER), nn.Linear(INNER, D)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.view(b, n, HEADS, D // HEADS).transpose(1, 2) for t in self.mix["qkv"](self.norm_a(x)).chunk(3, -1))
        see = torch.ones(n, n, dtype=torch.bool).tril() & ~pad[:, None, None, :] | torch.eye(n, dtype=torch.bool)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=see).transpose(1, 2).reshape(b, n, D)
        x = x + self.drop(self.mix["proj"](a))
        return x + self.drop(self.down(F.relu(self.up(self.norm_b(x)))))


class MyRecommender(nn.Module):
    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.items, self.positions = nn.Embedding(n_items + 1, D, padding_idx=0), nn.Embedding(N, D)
        self.blocks = nn.ModuleList(Block() for _ in range(2))
        self.norm_out = nn.LayerNorm(D)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        x = self.items(items) + self.positions(torch.arange(items.shape[1]))
        for block in self.blocks:
            x = block(x, items == 0)
        return self.norm_out(x) @ self.items.weight.T  # (B, N, n_items + 1): a tied head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="models/declared")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    data = compress.load_dataset()
    model = MyRecommender(data.n_items)
    inputs, targets = compress.training_windows(data.train_sequences(), N)  # (W, N) each, 0 = padding
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(args.epochs):  # the user's own next-item training loop
        for idx in torch.randperm(len(inputs)).split(128):
            real = targets[idx] > 0
            loss = F.cross_entropy(model(inputs[idx])[real], targets[idx][real])
            opt.zero_grad()
            loss.backward()
            opt.step()

    mapping = os.path.join(os.path.dirname(os.path.abspath(__file__)), "my_recommender.yaml")
    supernet = compress.wrap(model.eval(), adapter=compress.DeclaredAdapter(mapping), item_ids=data.item_tokens,
                             space=compress.SearchSpace(hidden_ratios=(0.0, 0.5), inner_ratios=(0.0, 0.5)))
    result = compress.search(supernet, data, compress.SearchConfig(epochs=args.epochs, batch_size=128,
                                                                   max_flops="60%"), device="cpu")
    small = result.slice()  # a dense compress model of the decision's attention kind and gates
    compress.fit(small, data, compress.TrainConfig(epochs=args.epochs, batch_size=128), torch.device("cpu"))
    result.export(args.out, data, model=small, overwrite=True)
    served = compress.load(args.out)
    with open(os.path.join(args.out, "card.json")) as fh:
        card = json.load(fh)  # the exported model's cost beside that of the model it was compressed from
    print("decision:", result.arch)
    print(f"{card['params']:,} params and {card['flops']['analytic']['total']:,} FLOPs per sequence; "
          f"MyRecommender: {card['input']['params']:,} and {card['input']['flops']['total']:,}")
    print("exported to", args.out, "->", compress.Recommender(served).recommend([["0", "1"]], k=3)[0])


if __name__ == "__main__":
    main()
