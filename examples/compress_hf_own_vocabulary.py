"""Compress a Hugging Face GPT-2 recommender that numbers your items its own way, then serve raw item ids.

    python examples/compress_hf_own_vocabulary.py [--out models/hf-own-vocabulary] [--epochs 2]

Your catalog has its own ids ("sku-00042") and your GPT2Model has its own numbering of them (here, as a
tokenizer would: the SKUs sorted, row 0 for padding), which is not the one compress would choose (first
appearance in time). ``item_ids`` carries your numbering into ``compress.wrap`` and
``compress.load_dataset``, so every embedding row keeps meaning the same SKU through the search, the
retraining, ``compress.export`` and serving: ``compress.Recommender`` takes SKU histories and returns SKUs.
Keeping softmax attention and no gates also writes the smaller model back as a GPT2Model
(MODEL_DIR/native, with its items.json). Runs in well under a minute on a laptop CPU.
"""
import argparse
import os
import tempfile

import torch
import torch.nn.functional as F
import transformers

import compress

SEQ_LEN = 20


def write_event_log(path: str) -> str:
    """Your interaction log, as your systems export it: user, SKU, timestamp (here the bundled sample)."""
    sample = compress.load_dataset()
    with open(path, "w") as fh:
        fh.write("user_id\titem_id\ttimestamp\n")
        for u, seq in enumerate(sample.sequences()):
            fh.writelines(f"user-{u}\tsku-{int(sample.item_tokens[i - 1]):05d}\t{t}\n" for t, i in enumerate(seq))
    return path


def train_next_item(gpt: transformers.GPT2Model, data: compress.SequenceDataset, epochs: int) -> None:
    """Your own training loop: every position predicts the next item, scores = hidden states × wte."""
    inputs, targets = compress.training_windows(data.train_sequences(), SEQ_LEN)  # (W, N) each, rows of your ids
    opt = torch.optim.Adam(gpt.parameters(), lr=2e-3)
    gpt.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(inputs)).split(128):
            x, y = inputs[batch], targets[batch]
            h = gpt(input_ids=x, attention_mask=(x > 0).long()).last_hidden_state  # (B, N, d)
            loss = F.cross_entropy((h @ gpt.wte.weight.T).flatten(0, 1), y.flatten(), ignore_index=0)
            opt.zero_grad()
            loss.backward()
            opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="models/hf-own-vocabulary")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        events = write_event_log(os.path.join(tmp, "events.tsv"))
        their_ids = sorted({line.split("\t")[1] for line in open(events).readlines()[1:]})  # your numbering
        data = compress.load_dataset(events, item_ids=their_ids)  # read onto your vocabulary
        ours = compress.load_dataset(events).vocabulary()
        print(f"compress's own numbering would differ: {ours.difference(data.vocabulary())}")

    gpt = transformers.GPT2Model(transformers.GPT2Config(
        vocab_size=len(their_ids) + 1, n_positions=SEQ_LEN, n_embd=32, n_layer=2, n_head=2, n_inner=64,
        bos_token_id=None, eos_token_id=None))  # rows are items: no text tokens
    train_next_item(gpt, data, args.epochs)

    supernet = compress.wrap(gpt, item_ids=their_ids, attention="softmax", gate_layers=0,
                             space=compress.SearchSpace(hidden_ratios=(0.0, 0.5), inner_ratios=(0.0, 0.5)))
    result = compress.search(supernet, data, compress.SearchConfig(epochs=args.epochs, batch_size=128,
                                                                   max_flops="60%"), device="cpu")
    small = result.slice()
    compress.fit(small, data, compress.TrainConfig(epochs=args.epochs, batch_size=128), torch.device("cpu"))
    print("adapter:", supernet.adapter.name, "decision:", result.arch.label())

    card = compress.export(small, args.out, dataset=data, metrics=compress.split_metrics(small, data),
                           baseline=supernet, overwrite=True)
    print(f"exported to {args.out}: {card['params']:,} params (GPT-2 had {card['input']['params']:,}), "
          f"test NDCG@10 {card['metrics']['test/full']['ndcg@10']:.4f}; read {args.out}/README.md")

    recommender = compress.Recommender.load(args.out)  # from the files alone
    history = [their_ids[i - 1] for i in data.sequence(0)[-5:]]
    print("history:", history)
    print("recommended:", [sku for sku, _ in recommender.recommend([history], k=5)[0]])
    smaller = transformers.GPT2Model.from_pretrained(os.path.join(args.out, "native"))
    print(f"GPT2Model n_embd {gpt.config.n_embd} -> {smaller.config.n_embd}, saved in {args.out}/native")


if __name__ == "__main__":
    main()
