"""Models, mappings and checkpoints that once wrapped wrong without a word or failed with a raw error: a user's
module adding its own head to a Hugging Face model, padding in another row than 0, vocabularies given beside
the model's own, adapters named by hand for a model they do not fit; each now ends in one typed line naming
the part and the fix, or in a warning where the model may be right."""
from __future__ import annotations

import warnings

import pytest
import torch
from test_adapter_inputs import GOOD, Config, bert_config, gpt2_config, state
from test_adapters import MY_MAPPING, N_ITEMS, SPACE, MyRecommender, SASRec
from torch import nn

import compress
from compress.adapters import DeclaredAdapter
from compress.adapters.recbole import read_checkpoint
from compress.errors import CheckpointError, ConfigError

transformers = pytest.importorskip("transformers")


def wrapped_warnings(model: nn.Module, **kwargs) -> list:
    """The messages of the warnings ``compress.wrap(model, **kwargs)`` gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compress.wrap(model, space=SPACE, **kwargs)
    return [str(w.message) for w in caught]


# ---- a Hugging Face model inside the user's own module --------------------------------------------------------

class GPTWithHead(nn.Module):
    """A GPT-2 body scored by the user's own, untied output layer: not what compress computes."""

    def __init__(self) -> None:
        super().__init__()
        self.gpt = transformers.GPT2Model(gpt2_config())
        self.head = nn.Linear(self.gpt.config.n_embd, N_ITEMS + 1)


def test_a_users_own_head_around_an_hf_model_is_refused():
    with pytest.raises(ConfigError, match=r"GPTWithHead holds parameters of its own \(head\.weight, head\.bias\) "
                                          r"beside its GPT2Model \(model\.gpt\), which compress would drop.*"
                                          r"wrap model\.gpt itself"):
        compress.wrap(GPTWithHead())


def test_a_module_holding_two_hf_models_is_refused():
    both = nn.Module()
    both.bert, both.gpt = transformers.BertModel(bert_config()), transformers.GPT2Model(gpt2_config())
    with pytest.raises(ConfigError, match=r"holds other Hugging Face models \(gpt: GPT2Model\) beside its BertModel "
                                          r"\(model\.bert\)"):
        compress.wrap(both)
    two = nn.Module()
    two.a, two.b = transformers.BertModel(bert_config()), transformers.BertModel(bert_config())
    with pytest.raises(ConfigError, match=r"holds more than one BertModel \(a, b\); pass the one that is the "
                                          r"recommender, e.g. model\.a"):
        compress.wrap(two)


def test_a_module_holding_only_an_hf_model_wraps_as_it():
    holder = nn.Module()
    holder.gpt = transformers.GPT2Model(gpt2_config())
    assert compress.wrap(holder, space=SPACE, item_ids=[str(i) for i in range(N_ITEMS)]).adapter.name == "hf-gpt2"


# ---- the padding row is row 0 ---------------------------------------------------------------------------------

def test_a_declared_padding_row_other_than_0_is_refused():
    model = MyRecommender()
    model.items = nn.Embedding(N_ITEMS + 1, model.items.embedding_dim, padding_idx=N_ITEMS)
    with pytest.raises(ConfigError, match=rf"item_embedding at items has padding_idx {N_ITEMS}: compress numbers "
                                          r"items 1\.\.n with row 0 the padding row; move row"):
        compress.wrap(model, adapter=DeclaredAdapter(MY_MAPPING))


def test_an_hf_pad_token_other_than_0_is_refused():
    with pytest.raises(ConfigError, match=rf"BertModel config has pad_token_id {N_ITEMS}: .*set pad_token_id 0"):
        compress.wrap(transformers.BertModel(bert_config(pad_token_id=N_ITEMS)))
    with pytest.raises(ConfigError, match="GPT2Model config has pad_token_id 3"):
        compress.wrap(transformers.GPT2Model(gpt2_config(pad_token_id=3)))


def test_fresh_rows_for_item_ids_are_counted_in_a_warning():
    """A GPT-2 numbering its items from row 0 (vocab_size n) given n ids looks like one item appended."""
    model = transformers.GPT2Model(gpt2_config(vocab_size=N_ITEMS))
    said = wrapped_warnings(model, item_ids=[f"sku{k}" for k in range(N_ITEMS)])
    assert any(f"the model has {N_ITEMS - 1} item rows" in m and "1 fresh row(s) added" in m for m in said), said


# ---- item ids without a vocabulary -----------------------------------------------------------------------------

def test_a_model_wrapped_without_item_ids_says_whose_numbering_it_takes():
    said = wrapped_warnings(transformers.GPT2Model(gpt2_config()))
    assert any("hf-gpt2 adapter without item_ids" in m and "give item_ids=" in m for m in said), said
    assert wrapped_warnings(transformers.GPT2Model(gpt2_config()), item_ids=[str(i) for i in range(N_ITEMS)]) == []
    builtin = compress.get_backbone("sasrec")(compress.ArchSpec(16, 32, 2, 1), N_ITEMS, 10)
    assert wrapped_warnings(builtin) == []  # numbered by compress's data from the start


# ---- adapters named for a model they do not fit ---------------------------------------------------------------

class SASRecLookAlike(nn.Module):
    """The user's own class named SASRec, with a trm_encoder but none of RecBole's settings."""

    def __init__(self) -> None:
        super().__init__()
        self.trm_encoder = nn.Linear(2, 2)


SASRecLookAlike.__name__ = "SASRec"


def test_an_adapter_that_does_not_fit_says_so():
    with pytest.raises(ConfigError, match="GPT2Model is not a compress backbone"):
        compress.wrap(transformers.GPT2Model(gpt2_config()), adapter="builtin")
    with pytest.raises(ConfigError, match="no adapter fits SASRec"):
        compress.wrap(SASRecLookAlike())
    with pytest.raises(ConfigError, match=r"SASRec is not a RecBole SASRec \(no hidden_size, inner_size"):
        compress.wrap(SASRecLookAlike(), adapter="recbole-sasrec")


def test_a_hidden_act_that_is_not_a_name_is_refused(tmp_path):
    model = SASRec()
    model.hidden_act = ["gelu"]
    with pytest.raises(ConfigError, match=r"RecBole hidden_act \['gelu'\] is not supported; use one of gelu, relu"):
        compress.wrap(model)
    path = tmp_path / "SASRec.pth"
    torch.save({"config": Config({**GOOD, "hidden_act": {"a": 1}}), "state_dict": state()}, path)
    with pytest.raises(CheckpointError, match=r"SASRec\.pth: RecBole hidden_act \{'a': 1\} is not supported"):
        read_checkpoint(str(path))


# ---- messages that name the part -------------------------------------------------------------------------------

def test_a_mapping_file_that_is_not_utf8_yaml_is_one_line(tmp_path):
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(ConfigError, match=r"weights\.yaml is not UTF-8 text \(byte 0\)"):
        DeclaredAdapter(str(binary))
    broken = tmp_path / "broken.yaml"
    broken.write_text("item_embedding: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        DeclaredAdapter(str(broken))
    assert "\n" not in str(info.value) and "not valid YAML: expected ',' or ']'" in str(info.value)
    assert str(info.value).endswith("at line 2, column 1")


@pytest.mark.parametrize("rows", [1, 2])
def test_an_item_table_without_items_names_the_rows_it_needs(rows):
    with pytest.raises(ConfigError, match=rf"item embedding embeddings\.word_embeddings has {rows} row\(s\); it "
                                          r"needs 3 or more: row 0 for padding, a last row for the mask token"):
        compress.wrap(transformers.BertModel(bert_config(vocab_size=rows)))


def test_a_recbole_checkpoint_with_one_row_or_nan_names_recboles_parameter(tmp_path):
    path = tmp_path / "SASRec.pth"
    torch.save({"config": Config(GOOD), "state_dict": state(**{"item_embedding.weight": torch.zeros(1, 8)})}, path)
    with pytest.raises(CheckpointError, match=r"item_embedding\.weight has 1 row\(s\); it needs 2 or more"):
        read_checkpoint(str(path))
    torch.save({"config": Config(GOOD), "state_dict": state(**{"LayerNorm.weight": torch.full((8,), float("nan"))})},
               path)
    with pytest.raises(CheckpointError, match=r"the state_dict's LayerNorm\.weight holds NaN or infinity"):
        read_checkpoint(str(path))
