"""The evaluation sets as published: names, tasks, source files (URLs, sha256, md5, sizes), sample counts.

Plain data, no converters and no heavy imports (no torch, webdataset, numpy, PIL): the workflow reads it
while parsing (``workflow/rules/data_common.smk``: which sets have public downloads, their file names).
The converters (``imagenet.py``, ``coco.py``, ``linear_probe.py``) add their ``convert`` function to
each entry (``converter.spec_from_registry``); ``build.EVAL_SETS`` is the full registry.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["REGISTRY", "EvalSetSource", "Resource"]


@dataclass(frozen=True)
class Resource:
    """One published file a dataset is made from.

    ``url`` None: there is no public download (ImageNet); the user passes the file (``archives``).
    ``sha256`` None: not pinned yet; the file's sha256 is logged and recorded in the manifest so it can
    be pinned (``sha256`` overrides). ``md5``: the checksum torchvision's dataset class checks, verified too.
    ``optional``: the converter can do without it (ImageNet's devkit when a labels file is given).
    """

    filename: str
    url: str | None
    sha256: str | None
    md5: str | None = None
    size: int | None = None
    optional: bool = False
    note: str = ""

    def source_url(self, base_url: str | None = None) -> str | None:
        """Where the file is fetched from: ``base_url/<filename>`` for a mirror, else ``url`` (None: none)."""
        if base_url:
            return f"{base_url.rstrip('/')}/{urllib.parse.quote(self.filename)}"
        return self.url


@dataclass(frozen=True)
class EvalSetSource:
    """An evaluation set as published: its family (which converter), task, files and sample counts.

    ``expected_counts``: split -> number of samples of the published set.
    """

    name: str
    family: str
    task: str
    description: str
    resources: tuple[Resource, ...]
    expected_counts: Mapping[str, int] | None = None


# ----------------------------------------------------------------------------------------------- ImageNet
IMAGENET_VAL_FILE = "ILSVRC2012_img_val.tar"
IMAGENET_DEVKIT_FILE = "ILSVRC2012_devkit_t12.tar.gz"
# Published checksums (the same torchvision's ImageNet resources pin).
IMAGENET_VAL_SHA256 = "c7e06a6c0baccf06d8dbeb6577d71efff84673a5dbdd50633ab44f8ea0456ae0"
IMAGENET_DEVKIT_SHA256 = "b59243268c0d266621fd587d2018f69e906fb22875aca0e295b48cafaa927953"
_IMAGENET_NOTE = "register on https://image-net.org and download it there"

# ImageNetV2 on the Hugging Face hub (the original S3 bucket's files); sha256 and sizes as TFDS pins them.
IMAGENETV2_URL = "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/{file}"
IMAGENETV2_VARIANTS: dict[str, tuple[str, str, int]] = {
    # set name: (variant in the file names, sha256, size in bytes)
    "imagenetv2_matched": (
        "matched-frequency",
        "f0c37fdf925916b19ea1323cd9a2208cdb6959ba2c32eef2a7fc393835c9ca7c",
        1_264_079_360,
    ),
    "imagenetv2_threshold": (
        "threshold0.7",
        "32142bfe998f9cfa4141be691f6a80eeb1e27b24bd532a668eb08c26d98897a2",
        1_249_906_176,
    ),
    "imagenetv2_top": (
        "top-images",
        "85e4ace30f3f0d660152062254b8759dda66267b27f7ec0fd8d5768f1073a04b",
        1_245_927_936,
    ),
}
IMAGENET_R_URL = "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"
IMAGENET_R_SHA256 = "18c6bf493b39a0d975d48e587437f562caab9c52ae6327dcfa9dd8eb54aa1b52"


def _imagenetv2(name: str, variant: str, sha256: str, size: int) -> EvalSetSource:
    filename = f"imagenetv2-{variant}.tar.gz"
    return EvalSetSource(
        name=name,
        family="imagenet",
        task="zeroshot",
        description=f"ImageNetV2 {variant} (10,000 images, ImageNet's 1000 classes)",
        resources=(Resource(filename, IMAGENETV2_URL.format(file=filename), sha256, size=size),),
        expected_counts={"test": 10_000},
    )


# ------------------------------------------------------------------------------------------------- COCO
IMAGES_FILE = "val2014.zip"
CAPTIONS_FILE = "caption_datasets.zip"

# ----------------------------------------------------------------------------------- linear-probe sets
_TORONTO = "https://www.cs.toronto.edu/~kriz/"
_VGG = "https://www.robots.ox.ac.uk/~vgg/data/"
_GTSRB = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
_SVHN = "http://ufldl.stanford.edu/housenumbers/"


def _linear_probe(name: str, description: str, resources, counts: dict[str, int]) -> EvalSetSource:
    return EvalSetSource(
        name=name,
        family="linear_probe",
        task="linear_probe",
        description=description,
        resources=tuple(resources),
        expected_counts=counts,
    )


REGISTRY: dict[str, EvalSetSource] = {
    "imagenet1k": EvalSetSource(
        name="imagenet1k",
        family="imagenet",
        task="zeroshot",
        description="ImageNet-1K (ILSVRC2012) validation: 50,000 images, 1000 classes",
        resources=(
            Resource(IMAGENET_VAL_FILE, None, IMAGENET_VAL_SHA256, size=6_744_924_160, note=_IMAGENET_NOTE),
            Resource(IMAGENET_DEVKIT_FILE, None, IMAGENET_DEVKIT_SHA256, optional=True, note=_IMAGENET_NOTE),
        ),
        expected_counts={"test": 50_000},
    ),
    **{name: _imagenetv2(name, *values) for name, values in IMAGENETV2_VARIANTS.items()},
    "imagenet_r": EvalSetSource(
        name="imagenet_r",
        family="imagenet",
        task="zeroshot",
        description="ImageNet-R: 30,000 renditions of 200 ImageNet classes (labels in the 1000-class space)",
        resources=(Resource("imagenet-r.tar", IMAGENET_R_URL, IMAGENET_R_SHA256, size=2_191_079_936),),
        expected_counts={"test": 30_000},
    ),
    "mscoco_karpathy": EvalSetSource(
        name="mscoco_karpathy",
        family="coco",
        task="retrieval",
        description="MS-COCO Karpathy 5k test split, 5 captions per image (25,000 captions)",
        resources=(
            Resource(
                IMAGES_FILE,
                "http://images.cocodataset.org/zips/val2014.zip",
                "fe9be816052049c34717e077d9e34aa60814a55679f804cd043e3cbee3b9fde0",
                size=6_645_013_297,
            ),
            Resource(
                CAPTIONS_FILE,
                "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
                "4cfd70132527b80933105e5829dc9034eaab9573482e2e680abbab6130244817",
                size=36_745_453,
            ),
        ),
        expected_counts={"test": 5_000},
    ),
    "cifar10": _linear_probe(
        "cifar10",
        "CIFAR-10: 50,000 train / 10,000 test images, 10 classes",
        [
            Resource(
                "cifar-10-python.tar.gz",
                _TORONTO + "cifar-10-python.tar.gz",
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                md5="c58f30108f718f92721af3b95e74349a",
                size=170_498_071,
            )
        ],
        {"train": 50_000, "test": 10_000},
    ),
    "cifar100": _linear_probe(
        "cifar100",
        "CIFAR-100: 50,000 train / 10,000 test images, 100 classes",
        [
            Resource(
                "cifar-100-python.tar.gz",
                _TORONTO + "cifar-100-python.tar.gz",
                "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
                md5="eb9058c3a382ffc7106e4002c42a8d85",
                size=169_001_437,
            )
        ],
        {"train": 50_000, "test": 10_000},
    ),
    "dtd": _linear_probe(
        "dtd",
        "Describable Textures (partition 1): 3,760 train+val / 1,880 test images, 47 classes",
        [
            Resource(
                "dtd-r1.0.1.tar.gz",
                _VGG + "dtd/download/dtd-r1.0.1.tar.gz",
                "e42855a52a4950a3b59612834602aa253914755c95b0cff9ead6d07395f8e205",
                md5="fff73e5086ae6bdbea199a49dfb8a4c1",
                size=625_239_812,
            )
        ],
        {"train": 3_760, "test": 1_880},
    ),
    "fgvc_aircraft": _linear_probe(
        "fgvc_aircraft",
        "FGVC-Aircraft 2013b (variants): 6,667 trainval / 3,333 test images, 100 classes",
        [
            Resource(
                "fgvc-aircraft-2013b.tar.gz",
                _VGG + "fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
                # the file Oxford serves now (2,753,340,328 bytes); TFDS pins an older 2,770,575,360-byte
                # copy (sha256 d5f68b1b...). torchvision checks no md5 for it.
                "e4e323d410e29f0370c81eabdcbb0e2b813acea1de22891b70b58ff41bfc9834",
                size=2_753_340_328,
            )
        ],
        {"train": 6_667, "test": 3_333},
    ),
    "food101": _linear_probe(
        "food101",
        "Food-101: 75,750 train / 25,250 test images, 101 classes",
        [
            Resource(
                "food-101.tar.gz",
                "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
                "d97d15e438b7f4498f96086a4f7e2fa42a32f2712e87d3295441b2b6314053a4",
                md5="85eeb15f3717b99a5da872d97d918f87",
                size=4_996_278_331,
            )
        ],
        {"train": 75_750, "test": 25_250},
    ),
    "gtsrb": _linear_probe(
        "gtsrb",
        "German Traffic Sign Recognition Benchmark: 26,640 train / 12,630 test images, 43 classes",
        [
            Resource(
                "GTSRB-Training_fixed.zip",
                _GTSRB + "GTSRB-Training_fixed.zip",
                "df4144942083645bd60b594de348aa6930126c3e0e5de09e39611630abf8455a",
                md5="513f3c79a4c5141765e10e952eaa2478",
            ),
            Resource(
                "GTSRB_Final_Test_Images.zip",
                _GTSRB + "GTSRB_Final_Test_Images.zip",
                "48ba6fab7e877eb64eaf8de99035b0aaecfbc279bee23e35deca4ac1d0a837fa",
                md5="c7e4e6327067d32654124b0fe9e82185",
            ),
            Resource(
                "GTSRB_Final_Test_GT.zip",
                _GTSRB + "GTSRB_Final_Test_GT.zip",
                "f94e5a7614d75845c74c04ddb26b8796b9e483f43541dd95dd5b726504e16d6d",
                md5="fe31e9c9270bbcd7b84b7f21a9d9d9e5",
            ),
        ],
        {"train": 26_640, "test": 12_630},
    ),
    "pets": _linear_probe(
        "pets",
        "Oxford-IIIT Pets: 3,680 trainval / 3,669 test images, 37 breeds",
        [
            Resource(
                "images.tar.gz",
                _VGG + "pets/data/images.tar.gz",
                "67195c5e1c01f1ab5f9b6a5d22b8c27a580d896ece458917e61d459337fa318d",
                md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
            ),
            Resource(
                "annotations.tar.gz",
                _VGG + "pets/data/annotations.tar.gz",
                "52425fb6de5c424942b7626b428656fcbd798db970a937df61750c0f1d358e91",
                md5="95a8c909bbe2e81eed6a22bccdf3f68f",
            ),
        ],
        {"train": 3_680, "test": 3_669},
    ),
    "renderedsst2": _linear_probe(
        "renderedsst2",
        "Rendered SST2: 7,792 train+val / 1,821 test images of rendered sentences, 2 classes",
        [
            Resource(
                "rendered-sst2.tgz",
                "https://openaipublic.azureedge.net/clip/data/rendered-sst2.tgz",
                None,  # to be pinned: no published sha256 found; torchvision's md5 is checked
                md5="2384d08e9dcfa4bd55b324e610496ee5",
            )
        ],
        {"train": 7_792, "test": 1_821},
    ),
    "stl10": _linear_probe(
        "stl10",
        "STL-10: 5,000 train / 8,000 test images, 10 classes (the unlabelled part is not used)",
        [
            Resource(
                "stl10_binary.tar.gz",
                "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
                "f31fd99273a1acb8609c8db427cebb1de3f71de77758cdc0e22956e1289b9866",
                md5="91f7769df0f17e558f3565bffb0c7dfb",
                size=2_640_397_119,
            )
        ],
        {"train": 5_000, "test": 8_000},
    ),
    "svhn": _linear_probe(
        "svhn",
        "Street View House Numbers (cropped digits): 73,257 train / 26,032 test images, 10 classes",
        [
            Resource(
                "train_32x32.mat",
                _SVHN + "train_32x32.mat",
                "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
                md5="e26dedcc434d2e4c54c9b2d4a06d8373",
            ),
            Resource(
                "test_32x32.mat",
                _SVHN + "test_32x32.mat",
                "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
                md5="eb5a983be6a315427106f1b164d9cef3",
            ),
        ],
        {"train": 73_257, "test": 26_032},
    ),
}
