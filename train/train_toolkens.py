"""Train toolkens from a YAML recipe; the same as `toolken train`, for `accelerate launch`.

    accelerate launch --multi_gpu --num_processes 2 train/train_toolkens.py configs/tiny.yaml  # CPU: gloo
    python train/train_toolkens.py configs/funcqa.yaml output_dir=outputs/funcqa
"""

import sys

from toolken.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
