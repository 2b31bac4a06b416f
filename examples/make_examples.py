"""Write the app's example images from photos that ship with scikit-image (redistributable; see README.md here).

    python examples/make_examples.py
"""

from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from eye2face_hub.data import EYE_SIZE, crop, detect

HERE = Path(__file__).resolve().parent


def main() -> None:
    astronaut = skimage.data.astronaut()  # Eileen Collins, NASA: public domain
    Image.fromarray(astronaut).save(HERE / "astronaut.png", optimize=True)
    Image.fromarray(skimage.data.chelsea()).save(HERE / "chelsea-the-cat.png", optimize=True)  # CC0: no human face
    eyes = detect(astronaut).eyes
    if not eyes:
        raise SystemExit("no eye detected in the astronaut photo")
    eye: np.ndarray = crop(astronaut, eyes[0], EYE_SIZE)  # the eye on the left of the photo, as the app crops it
    Image.fromarray(eye).save(HERE / "astronaut-eye-crop.png")
    print(f"wrote {', '.join(p.name for p in sorted(HERE.glob('*.png')))}")


if __name__ == "__main__":
    main()
