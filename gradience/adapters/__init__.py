"""Getting adapter tensors in (and out): configs, layouts, safetensors and pickles."""

from gradience.adapters.config import AdapterConfig
from gradience.adapters.layout import LoraLayer
from gradience.adapters.load import Adapter, Factors, load_adapter

__all__ = ["Adapter", "AdapterConfig", "Factors", "LoraLayer", "load_adapter"]
