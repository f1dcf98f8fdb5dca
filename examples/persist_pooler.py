"""Fit a pooler, save it with joblib, load it and check the features agree.

The saved file contains the parameters and the PCA only; the network is rebuilt
from ``backbone`` and ``weights`` when the pooler is used again.

Run: python examples/persist_pooler.py
"""

import os
import tempfile

import joblib
import numpy as np
import skimage.data

from skcrosslayer import CrossLayerPooler


def main() -> None:
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.rocket()]
    training = photos + [np.ascontiguousarray(p[:, ::-1]) for p in photos]
    pooler = CrossLayerPooler(random_state=0).fit(training)
    features = pooler.transform(photos)

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "pooler.joblib")
        joblib.dump(pooler, path)
        print(f"saved {path}: {os.path.getsize(path) / 1e6:.2f} MB")
        loaded = joblib.load(path)

    again = loaded.transform(photos)
    print("features:", features.shape, features.dtype)
    print("identical after reload:", np.array_equal(features, again))


if __name__ == "__main__":
    main()
