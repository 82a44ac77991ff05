"""Compress a BERT4Rec-style recommender built on Hugging Face's BertModel and get a smaller BertModel back.

    python examples/compress_hf_bert.py [--out models/hf-bert] [--epochs 3]

The recommender is a plain ``transformers.BertModel`` whose word embeddings are the item table
(ids 1..n_items, 0 = padding, n_items + 1 = the mask token) and whose scores are hidden states times
that table, trained by cloze as BERT4Rec is. ``compress.wrap`` finds the ``hf-bert`` adapter by
itself. Keeping softmax attention and no gates lets the decision be written back as a BertModel
(MODEL_DIR/native) that ``from_pretrained`` loads as-is. Runs in about a minute on a laptop CPU.
"""
import argparse

import torch
import torch.nn.functional as F
import transformers

import compress


def train_cloze(bert: transformers.BertModel, data: compress.SequenceDataset, epochs: int) -> None:
    """The user's own training loop: mask 20% of each history, predict the masked items."""
    windows = compress.pad_right(data.train_sequences(), bert.config.max_position_embeddings)  # (U, N)
    opt = torch.optim.Adam(bert.parameters(), lr=1e-3)
    bert.train()
    for _ in range(epochs):
        for batch in windows[torch.randperm(len(windows))].split(128):
            masked = (torch.rand(batch.shape) < 0.2) & (batch > 0)
            inputs = batch.masked_fill(masked, data.n_items + 1)
            h = bert(input_ids=inputs, attention_mask=(batch > 0).long()).last_hidden_state  # (B, N, d)
            loss = F.cross_entropy(h[masked] @ bert.get_input_embeddings().weight.T, batch[masked])
            opt.zero_grad()
            loss.backward()
            opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="models/hf-bert")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    data = compress.load_dataset()  # the embedded default dataset
    config = transformers.BertConfig(vocab_size=data.n_items + 2, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=256, max_position_embeddings=30)
    bert = transformers.BertModel(config)
    train_cloze(bert, data, args.epochs)

    # Channels ordered by importance first, so a narrower candidate keeps the important ones.
    # item_ids: BERT's row i is the data's item i, as train_cloze numbered them (compress's numbering)
    supernet = compress.wrap(bert, space=compress.SearchSpace(hidden_ratios=(0.0, 0.5), inner_ratios=(0.0, 0.5)),
                             attention="softmax", gate_layers=0, reorder="magnitude", item_ids=data.item_tokens)
    result = compress.search(supernet, data, compress.SearchConfig(epochs=args.epochs, batch_size=128,
                                                                   max_flops="50%"), device="cpu")
    small = result.slice()
    compress.fit(small, data, compress.TrainConfig(epochs=args.epochs, batch_size=128), torch.device("cpu"))
    print("adapter:", supernet.adapter.name, "decision:", result.arch)
    print("test NDCG@10 (full):", round(compress.split_metrics(small, data)["test/full"]["ndcg@10"], 4))
    result.export(args.out, data, model=small, overwrite=True)
    smaller = transformers.BertModel.from_pretrained(f"{args.out}/native")
    print(f"BertModel hidden_size {config.hidden_size} -> {smaller.config.hidden_size}, layers "
          f"{config.num_hidden_layers} -> {smaller.config.num_hidden_layers}, saved in {args.out}/native")


if __name__ == "__main__":
    main()
