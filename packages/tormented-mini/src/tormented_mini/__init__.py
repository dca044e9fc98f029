"""tormented-mini: a hybrid, looped, bidirectional masked-LM encoder (Tormented-BERT Frankenstein and Mini)."""

from tormented_mini.modeling_tormented import (
    PRESETS,
    ConfigError,
    TormentedBertConfig,
    TormentedBertForMaskedLM,
    TormentedBertForSequenceClassification,
    TormentedBertFrankenstein,
    TormentedBertMini,
    TormentedBertModel,
    UltraConfig,
)


def _register_auto_classes() -> None:
    """Let Auto* classes resolve model_type "tormented-bert" in-process (no trust_remote_code needed)."""
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

    AutoConfig.register(TormentedBertConfig.model_type, TormentedBertConfig, exist_ok=True)
    AutoModel.register(TormentedBertConfig, TormentedBertModel, exist_ok=True)
    AutoModelForMaskedLM.register(TormentedBertConfig, TormentedBertForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(
        TormentedBertConfig, TormentedBertForSequenceClassification, exist_ok=True
    )


_register_auto_classes()

__all__ = [
    "PRESETS",
    "ConfigError",
    "TormentedBertConfig",
    "TormentedBertForMaskedLM",
    "TormentedBertForSequenceClassification",
    "TormentedBertFrankenstein",
    "TormentedBertMini",
    "TormentedBertModel",
    "UltraConfig",
]
