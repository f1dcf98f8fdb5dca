"""Classify real photos with cross-layer pooling and a linear SVM.

Builds a two-class problem from photos bundled with scikit-image (a cat and a
cup of coffee, each under crops, flips and colour changes), then chooses the
SVM's C and the sign quantisation by grid search over a Pipeline.

Run: python examples/classify_photos.py
"""

import numpy as np
import skimage.data
from PIL import Image, ImageEnhance, ImageOps
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC

from skcrosslayer import CrossLayerPooler, SignQuantizer


def edited_versions(photo: np.ndarray, n_versions: int) -> list[Image.Image]:
    image = Image.fromarray(photo)
    versions = []
    for i in range(n_versions):
        box = (i * 7, i * 5, image.width - i * 9, image.height - i * 4)
        edited = ImageEnhance.Color(image.crop(box)).enhance(0.5 + 0.1 * i)
        versions.append(ImageOps.mirror(edited) if i % 2 else edited)
    return versions


def main() -> None:
    images, labels = [], []
    for label, photo in enumerate([skimage.data.chelsea(), skimage.data.coffee()]):
        versions = edited_versions(photo, 10)
        images += versions
        labels += [label] * len(versions)
    labels = np.asarray(labels)
    train_images, test_images, y_train, y_test = train_test_split(
        images, labels, test_size=0.4, stratify=labels, random_state=0
    )

    pipeline = Pipeline(
        [
            ("pooler", CrossLayerPooler(random_state=0)),
            ("signs", SignQuantizer()),
            ("svm", LinearSVC(random_state=0)),
        ]
    )
    search = GridSearchCV(
        pipeline,
        {"svm__C": [0.1, 1.0], "signs": [SignQuantizer(), FunctionTransformer()]},
        cv=3,
    )
    search.fit(train_images, y_train)
    print("best parameters:", search.best_params_)
    print(f"test accuracy: {search.score(test_images, y_test):.3f}")


if __name__ == "__main__":
    main()
