"""Cross-convolutional-layer pooling of pretrained CNNs as scikit-learn estimators."""

__version__ = "0.1.0.dev0"

from .backbones import BACKBONES, list_layers  # noqa: E402
from .baselines import GlobalPooler, PCAWhitening  # noqa: E402
from .binary import FeatureBinarizer  # noqa: E402
from .fc import FullyConnectedPooler  # noqa: E402
from .pooler import CrossLayerPooler  # noqa: E402
from .quantization import SignQuantizer  # noqa: E402
from .regional import RegionalCrossLayerPooler  # noqa: E402
from .search import ImageRetriever  # noqa: E402
from .selection import ChannelSelector, SelectedChannelRetriever  # noqa: E402

__all__ = [
    "BACKBONES",
    "ChannelSelector",
    "CrossLayerPooler",
    "FeatureBinarizer",
    "FullyConnectedPooler",
    "GlobalPooler",
    "ImageRetriever",
    "PCAWhitening",
    "RegionalCrossLayerPooler",
    "SelectedChannelRetriever",
    "SignQuantizer",
    "list_layers",
]
