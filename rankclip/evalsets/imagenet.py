"""ImageNet-1K validation, ImageNetV2 (three variants) and ImageNet-R as zero-shot classification sets.

All three keep ImageNet's 1000-class label space: the standard class index is the position of a WordNet
id in the sorted list ``IMAGENET_WNIDS`` (the order of ``open_clip.IMAGENET_CLASSNAMES``), class names
are open_clip's ``IMAGENET_CLASSNAMES`` and the prompts its 80 ``OPENAI_IMAGENET_TEMPLATES`` (with
``{c}``). Images are stored as published (the JPEG bytes, never re-encoded).

- **ImageNet-1K val** (``imagenet1k``): there is no public URL; the user passes ``ILSVRC2012_img_val.tar``
  (50,000 ``ILSVRC2012_val_NNNNNNNN.JPEG``) and either ``ILSVRC2012_devkit_t12.tar.gz`` (its
  ``data/meta.mat`` maps the ground truth's ILSVRC2012 ids 1..1000 to WordNet ids, and
  ``data/ILSVRC2012_validation_ground_truth.txt`` holds one id per image) or a labels file (one line per
  image: the file name or its number, then a WordNet id or a class index 0..999; blank lines and ``#``
  comments are skipped). Both files are checked against their published sha256 and the image count
  against 50,000.
- **ImageNetV2** (``imagenetv2_matched``, ``imagenetv2_threshold``, ``imagenetv2_top``): the
  matched-frequency, threshold-0.7 and top-images tarballs (10,000 images each, folders ``0`` .. ``999``
  named by class index).
- **ImageNet-R** (``imagenet_r``): ``imagenet-r.tar``, 30,000 renditions in 200 WordNet-id folders; labels
  stay in the 1000-class space and ``class_subset.txt`` lists the 200 classes
  (``rankclip.evalsets.imagenet_facts.IMAGENET_R_CLASS_INDICES``), so zero-shot logits are restricted to them.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from rankclip.evalsets.converter import (
    EvalSetError,
    EvalSetSpec,
    check_count,
    safe_key,
    spec_from_registry,
    write_layout,
    write_split,
)
from rankclip.evalsets.imagenet_facts import IMAGENET_R_CLASS_INDICES, openai_imagenet_templates
from rankclip.evalsets.registry import (
    IMAGENET_DEVKIT_FILE,
    IMAGENET_DEVKIT_SHA256,
    IMAGENET_VAL_FILE,
    IMAGENET_VAL_SHA256,
    IMAGENETV2_VARIANTS,
)

__all__ = [
    "IMAGENET_DEVKIT_SHA256",
    "IMAGENET_VAL_SHA256",
    "IMAGENET_WNIDS",
    "SETS",
    "imagenet_classnames",
    "read_devkit_labels",
    "read_labels_file",
]

log = logging.getLogger(__name__)

# The 1000 ImageNet-1K WordNet ids, sorted: a class's index is its position here.
IMAGENET_WNIDS: tuple[str, ...] = tuple(
    """
    n01440764 n01443537 n01484850 n01491361 n01494475 n01496331 n01498041 n01514668 n01514859 n01518878
    n01530575 n01531178 n01532829 n01534433 n01537544 n01558993 n01560419 n01580077 n01582220 n01592084
    n01601694 n01608432 n01614925 n01616318 n01622779 n01629819 n01630670 n01631663 n01632458 n01632777
    n01641577 n01644373 n01644900 n01664065 n01665541 n01667114 n01667778 n01669191 n01675722 n01677366
    n01682714 n01685808 n01687978 n01688243 n01689811 n01692333 n01693334 n01694178 n01695060 n01697457
    n01698640 n01704323 n01728572 n01728920 n01729322 n01729977 n01734418 n01735189 n01737021 n01739381
    n01740131 n01742172 n01744401 n01748264 n01749939 n01751748 n01753488 n01755581 n01756291 n01768244
    n01770081 n01770393 n01773157 n01773549 n01773797 n01774384 n01774750 n01775062 n01776313 n01784675
    n01795545 n01796340 n01797886 n01798484 n01806143 n01806567 n01807496 n01817953 n01818515 n01819313
    n01820546 n01824575 n01828970 n01829413 n01833805 n01843065 n01843383 n01847000 n01855032 n01855672
    n01860187 n01871265 n01872401 n01873310 n01877812 n01882714 n01883070 n01910747 n01914609 n01917289
    n01924916 n01930112 n01943899 n01944390 n01945685 n01950731 n01955084 n01968897 n01978287 n01978455
    n01980166 n01981276 n01983481 n01984695 n01985128 n01986214 n01990800 n02002556 n02002724 n02006656
    n02007558 n02009229 n02009912 n02011460 n02012849 n02013706 n02017213 n02018207 n02018795 n02025239
    n02027492 n02028035 n02033041 n02037110 n02051845 n02056570 n02058221 n02066245 n02071294 n02074367
    n02077923 n02085620 n02085782 n02085936 n02086079 n02086240 n02086646 n02086910 n02087046 n02087394
    n02088094 n02088238 n02088364 n02088466 n02088632 n02089078 n02089867 n02089973 n02090379 n02090622
    n02090721 n02091032 n02091134 n02091244 n02091467 n02091635 n02091831 n02092002 n02092339 n02093256
    n02093428 n02093647 n02093754 n02093859 n02093991 n02094114 n02094258 n02094433 n02095314 n02095570
    n02095889 n02096051 n02096177 n02096294 n02096437 n02096585 n02097047 n02097130 n02097209 n02097298
    n02097474 n02097658 n02098105 n02098286 n02098413 n02099267 n02099429 n02099601 n02099712 n02099849
    n02100236 n02100583 n02100735 n02100877 n02101006 n02101388 n02101556 n02102040 n02102177 n02102318
    n02102480 n02102973 n02104029 n02104365 n02105056 n02105162 n02105251 n02105412 n02105505 n02105641
    n02105855 n02106030 n02106166 n02106382 n02106550 n02106662 n02107142 n02107312 n02107574 n02107683
    n02107908 n02108000 n02108089 n02108422 n02108551 n02108915 n02109047 n02109525 n02109961 n02110063
    n02110185 n02110341 n02110627 n02110806 n02110958 n02111129 n02111277 n02111500 n02111889 n02112018
    n02112137 n02112350 n02112706 n02113023 n02113186 n02113624 n02113712 n02113799 n02113978 n02114367
    n02114548 n02114712 n02114855 n02115641 n02115913 n02116738 n02117135 n02119022 n02119789 n02120079
    n02120505 n02123045 n02123159 n02123394 n02123597 n02124075 n02125311 n02127052 n02128385 n02128757
    n02128925 n02129165 n02129604 n02130308 n02132136 n02133161 n02134084 n02134418 n02137549 n02138441
    n02165105 n02165456 n02167151 n02168699 n02169497 n02172182 n02174001 n02177972 n02190166 n02206856
    n02219486 n02226429 n02229544 n02231487 n02233338 n02236044 n02256656 n02259212 n02264363 n02268443
    n02268853 n02276258 n02277742 n02279972 n02280649 n02281406 n02281787 n02317335 n02319095 n02321529
    n02325366 n02326432 n02328150 n02342885 n02346627 n02356798 n02361337 n02363005 n02364673 n02389026
    n02391049 n02395406 n02396427 n02397096 n02398521 n02403003 n02408429 n02410509 n02412080 n02415577
    n02417914 n02422106 n02422699 n02423022 n02437312 n02437616 n02441942 n02442845 n02443114 n02443484
    n02444819 n02445715 n02447366 n02454379 n02457408 n02480495 n02480855 n02481823 n02483362 n02483708
    n02484975 n02486261 n02486410 n02487347 n02488291 n02488702 n02489166 n02490219 n02492035 n02492660
    n02493509 n02493793 n02494079 n02497673 n02500267 n02504013 n02504458 n02509815 n02510455 n02514041
    n02526121 n02536864 n02606052 n02607072 n02640242 n02641379 n02643566 n02655020 n02666196 n02667093
    n02669723 n02672831 n02676566 n02687172 n02690373 n02692877 n02699494 n02701002 n02704792 n02708093
    n02727426 n02730930 n02747177 n02749479 n02769748 n02776631 n02777292 n02782093 n02783161 n02786058
    n02787622 n02788148 n02790996 n02791124 n02791270 n02793495 n02794156 n02795169 n02797295 n02799071
    n02802426 n02804414 n02804610 n02807133 n02808304 n02808440 n02814533 n02814860 n02815834 n02817516
    n02823428 n02823750 n02825657 n02834397 n02835271 n02837789 n02840245 n02841315 n02843684 n02859443
    n02860847 n02865351 n02869837 n02870880 n02871525 n02877765 n02879718 n02883205 n02892201 n02892767
    n02894605 n02895154 n02906734 n02909870 n02910353 n02916936 n02917067 n02927161 n02930766 n02939185
    n02948072 n02950826 n02951358 n02951585 n02963159 n02965783 n02966193 n02966687 n02971356 n02974003
    n02977058 n02978881 n02979186 n02980441 n02981792 n02988304 n02992211 n02992529 n02999410 n03000134
    n03000247 n03000684 n03014705 n03016953 n03017168 n03018349 n03026506 n03028079 n03032252 n03041632
    n03042490 n03045698 n03047690 n03062245 n03063599 n03063689 n03065424 n03075370 n03085013 n03089624
    n03095699 n03100240 n03109150 n03110669 n03124043 n03124170 n03125729 n03126707 n03127747 n03127925
    n03131574 n03133878 n03134739 n03141823 n03146219 n03160309 n03179701 n03180011 n03187595 n03188531
    n03196217 n03197337 n03201208 n03207743 n03207941 n03208938 n03216828 n03218198 n03220513 n03223299
    n03240683 n03249569 n03250847 n03255030 n03259280 n03271574 n03272010 n03272562 n03290653 n03291819
    n03297495 n03314780 n03325584 n03337140 n03344393 n03345487 n03347037 n03355925 n03372029 n03376595
    n03379051 n03384352 n03388043 n03388183 n03388549 n03393912 n03394916 n03400231 n03404251 n03417042
    n03424325 n03425413 n03443371 n03444034 n03445777 n03445924 n03447447 n03447721 n03450230 n03452741
    n03457902 n03459775 n03461385 n03467068 n03476684 n03476991 n03478589 n03481172 n03482405 n03483316
    n03485407 n03485794 n03492542 n03494278 n03495258 n03496892 n03498962 n03527444 n03529860 n03530642
    n03532672 n03534580 n03535780 n03538406 n03544143 n03584254 n03584829 n03590841 n03594734 n03594945
    n03595614 n03598930 n03599486 n03602883 n03617480 n03623198 n03627232 n03630383 n03633091 n03637318
    n03642806 n03649909 n03657121 n03658185 n03661043 n03662601 n03666591 n03670208 n03673027 n03676483
    n03680355 n03690938 n03691459 n03692522 n03697007 n03706229 n03709823 n03710193 n03710637 n03710721
    n03717622 n03720891 n03721384 n03724870 n03729826 n03733131 n03733281 n03733805 n03742115 n03743016
    n03759954 n03761084 n03763968 n03764736 n03769881 n03770439 n03770679 n03773504 n03775071 n03775546
    n03776460 n03777568 n03777754 n03781244 n03782006 n03785016 n03786901 n03787032 n03788195 n03788365
    n03791053 n03792782 n03792972 n03793489 n03794056 n03796401 n03803284 n03804744 n03814639 n03814906
    n03825788 n03832673 n03837869 n03838899 n03840681 n03841143 n03843555 n03854065 n03857828 n03866082
    n03868242 n03868863 n03871628 n03873416 n03874293 n03874599 n03876231 n03877472 n03877845 n03884397
    n03887697 n03888257 n03888605 n03891251 n03891332 n03895866 n03899768 n03902125 n03903868 n03908618
    n03908714 n03916031 n03920288 n03924679 n03929660 n03929855 n03930313 n03930630 n03933933 n03935335
    n03937543 n03938244 n03942813 n03944341 n03947888 n03950228 n03954731 n03956157 n03958227 n03961711
    n03967562 n03970156 n03976467 n03976657 n03977966 n03980874 n03982430 n03983396 n03991062 n03992509
    n03995372 n03998194 n04004767 n04005630 n04008634 n04009552 n04019541 n04023962 n04026417 n04033901
    n04033995 n04037443 n04039381 n04040759 n04041544 n04044716 n04049303 n04065272 n04067472 n04069434
    n04070727 n04074963 n04081281 n04086273 n04090263 n04099969 n04111531 n04116512 n04118538 n04118776
    n04120489 n04125021 n04127249 n04131690 n04133789 n04136333 n04141076 n04141327 n04141975 n04146614
    n04147183 n04149813 n04152593 n04153751 n04154565 n04162706 n04179913 n04192698 n04200800 n04201297
    n04204238 n04204347 n04208210 n04209133 n04209239 n04228054 n04229816 n04235860 n04238763 n04239074
    n04243546 n04251144 n04252077 n04252225 n04254120 n04254680 n04254777 n04258138 n04259630 n04263257
    n04264628 n04265275 n04266014 n04270147 n04273569 n04275548 n04277352 n04285008 n04286575 n04296562
    n04310018 n04311004 n04311174 n04317175 n04325704 n04326547 n04328186 n04330267 n04332243 n04335435
    n04336792 n04344873 n04346328 n04347754 n04350905 n04355338 n04355933 n04356056 n04357314 n04366367
    n04367480 n04370456 n04371430 n04371774 n04372370 n04376876 n04380533 n04389033 n04392985 n04398044
    n04399382 n04404412 n04409515 n04417672 n04418357 n04423845 n04428191 n04429376 n04435653 n04442312
    n04443257 n04447861 n04456115 n04458633 n04461696 n04462240 n04465501 n04467665 n04476259 n04479046
    n04482393 n04483307 n04485082 n04486054 n04487081 n04487394 n04493381 n04501370 n04505470 n04507155
    n04509417 n04515003 n04517823 n04522168 n04523525 n04525038 n04525305 n04532106 n04532670 n04536866
    n04540053 n04542943 n04548280 n04548362 n04550184 n04552348 n04553703 n04554684 n04557648 n04560804
    n04562935 n04579145 n04579432 n04584207 n04589890 n04590129 n04591157 n04591713 n04592741 n04596742
    n04597913 n04599235 n04604644 n04606251 n04612504 n04613696 n06359193 n06596364 n06785654 n06794110
    n06874185 n07248320 n07565083 n07579787 n07583066 n07584110 n07590611 n07613480 n07614500 n07615774
    n07684084 n07693725 n07695742 n07697313 n07697537 n07711569 n07714571 n07714990 n07715103 n07716358
    n07716906 n07717410 n07717556 n07718472 n07718747 n07720875 n07730033 n07734744 n07742313 n07745940
    n07747607 n07749582 n07753113 n07753275 n07753592 n07754684 n07760859 n07768694 n07802026 n07831146
    n07836838 n07860988 n07871810 n07873807 n07875152 n07880968 n07892512 n07920052 n07930864 n07932039
    n09193705 n09229709 n09246464 n09256479 n09288635 n09332890 n09399592 n09421951 n09428293 n09468604
    n09472597 n09835506 n10148035 n10565667 n11879895 n11939491 n12057211 n12144580 n12267677 n12620546
    n12768682 n12985857 n12998815 n13037406 n13040303 n13044778 n13052670 n13054560 n13133613 n15075141
    """.split()  # noqa: SIM905 -- a list literal would take 1000 lines
)
WNID_INDEX = {wnid: index for index, wnid in enumerate(IMAGENET_WNIDS)}

IMAGENET_R_WNIDS = frozenset(IMAGENET_WNIDS[i] for i in IMAGENET_R_CLASS_INDICES)

_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})(?:\.JPEG)?", re.IGNORECASE)
_WNID = re.compile(r"n\d{8}")
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def imagenet_classnames() -> list[str]:
    """open_clip's 1000 prompt-ready class names, in class-index order."""
    from open_clip import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def _write_imagenet_layout(out: Path, class_subset=None) -> None:
    write_layout(
        out,
        "classification",
        classnames=imagenet_classnames(),
        templates=openai_imagenet_templates(),
        class_subset=class_subset,
    )


# ------------------------------------------------------------------------------------------ ImageNet val
def _class_index(token: str, where: str) -> int:
    if _WNID.fullmatch(token):
        if token not in WNID_INDEX:
            raise EvalSetError(f"{where}: {token} is not one of the 1000 ImageNet-1K WordNet ids")
        return WNID_INDEX[token]
    if token.isdigit() and int(token) < len(IMAGENET_WNIDS):
        return int(token)
    raise EvalSetError(f"{where}: expected a WordNet id (n01440764) or a class index 0..999, got {token!r}")


def read_labels_file(path: Path) -> dict[int, int]:
    """Image number (1..50000) -> class index, from a labels file (see the module docstring).

    Accepts Caffe's ``val.txt`` (``ILSVRC2012_val_00000001.JPEG 65``), Kaggle's ``LOC_val_solution.csv``
    (``ILSVRC2012_val_00000001,n01751748 ...``; its header is skipped) and similar two-column files.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet labels file {path} does not exist")
    labels: dict[int, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text or text.lower().startswith("imageid"):
            continue
        tokens = re.split(r"[\s,]+", text)
        where = f"{path}, line {number}"
        if len(tokens) < 2:
            raise EvalSetError(f"{where}: expected an image name and a label, got {line!r}")
        match = _VAL_NAME.fullmatch(tokens[0])
        image = int(match.group(1)) if match else int(tokens[0]) if tokens[0].isdigit() else None
        if image is None:
            raise EvalSetError(f"{where}: {tokens[0]!r} is not ILSVRC2012_val_NNNNNNNN[.JPEG] or a number")
        if image in labels:
            raise EvalSetError(f"{where}: image {image} is labelled twice")
        labels[image] = _class_index(tokens[1], where)
    if not labels:
        raise EvalSetError(f"{path}: no labels in the file")
    return labels


def read_devkit_labels(path: Path) -> dict[int, int]:
    """Image number (1..50000) -> class index, from ``ILSVRC2012_devkit_t12.tar.gz``."""
    import scipy.io

    path = Path(path)
    wanted = {"meta": "data/meta.mat", "truth": "data/ILSVRC2012_validation_ground_truth.txt"}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                for name, suffix in wanted.items():
                    if member.isfile() and member.name.endswith(suffix):
                        found[name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise EvalSetError(f"{path}: not a readable devkit tarball ({error})") from None
    missing = [suffix for name, suffix in wanted.items() if name not in found]
    if missing:
        raise EvalSetError(f"{path}: the devkit has no {' or '.join(missing)}")
    try:
        synsets = scipy.io.loadmat(io.BytesIO(found["meta"]), squeeze_me=True)["synsets"]
        leaves = {
            int(ilsvrc_id): str(wnid)
            for ilsvrc_id, wnid, children in zip(
                synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"], strict=True
            )
            if int(children) == 0
        }
    except (KeyError, ValueError, TypeError) as error:
        raise EvalSetError(f"{path}: data/meta.mat is not the devkit's synsets table ({error})") from None
    if sorted(leaves.values()) != list(IMAGENET_WNIDS):
        raise EvalSetError(f"{path}: data/meta.mat's leaf synsets are not the 1000 ImageNet-1K classes")
    labels = {}
    for number, line in enumerate(found["truth"].decode("ascii").split(), 1):
        if not line.isdigit() or int(line) not in leaves:
            raise EvalSetError(
                f"{path}: ground truth line {number}: {line!r} is not an ILSVRC2012 id 1..1000"
            )
        labels[number] = WNID_INDEX[leaves[int(line)]]
    return labels


def _val_members(archive: Path) -> dict[int, tarfile.TarInfo]:
    """Image number -> tar member of ILSVRC2012_img_val.tar (headers only; names checked)."""
    members: dict[int, tarfile.TarInfo] = {}
    try:
        with tarfile.open(archive, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                match = _VAL_NAME.fullmatch(Path(member.name).name)
                if match is None or not member.name.upper().endswith(".JPEG"):
                    raise EvalSetError(
                        f"{archive}: unexpected member {member.name!r} (not ILSVRC2012_val_*.JPEG)"
                    )
                members[int(match.group(1))] = member
    except (tarfile.TarError, OSError, EOFError) as error:
        raise EvalSetError(f"{archive}: not a readable (uncompressed) tar file ({error})") from None
    return members


def _convert_imagenet_val(spec: EvalSetSpec, out: Path, files: dict[str, Path], options) -> dict:
    archive = files[IMAGENET_VAL_FILE]
    if options.labels is not None:
        labels, labels_from = read_labels_file(options.labels), str(options.labels)
    elif IMAGENET_DEVKIT_FILE in files:
        devkit = files[IMAGENET_DEVKIT_FILE]
        labels, labels_from = read_devkit_labels(devkit), str(devkit)
    else:
        raise EvalSetError(
            f"imagenet1k needs labels: pass {IMAGENET_DEVKIT_FILE} with --archive, "
            "or a labels file with --labels"
        )
    members = _val_members(archive)
    check_count(str(archive), len(members), options.expected(spec, "test"))
    unlabelled = sorted(set(members) - set(labels))
    if unlabelled:
        raise EvalSetError(
            f"{labels_from} has no label for {len(unlabelled)} image(s) of {archive}, "
            f"e.g. ILSVRC2012_val_{unlabelled[0]:08d}.JPEG"
        )

    def samples():
        with tarfile.open(archive, "r:") as tar:
            for number in sorted(members):
                yield {
                    "__key__": f"ILSVRC2012_val_{number:08d}",
                    "jpg": tar.extractfile(members[number]).read(),
                    "cls": str(labels[number]).encode("ascii"),
                }

    split = write_split(samples(), out / "test", options.shard_size)
    _write_imagenet_layout(out)
    return {"splits": {"test": split}, "num_classes": len(IMAGENET_WNIDS), "labels_from": labels_from}


# --------------------------------------------------------------------------- ImageNetV2 and ImageNet-R
def _stream_images(archive: Path) -> Iterator[tuple[tuple[str, ...], bytes]]:
    """(path parts below the top folder, bytes) of every image of a (compressed) tar, in archive order.

    Hidden files and text files (READMEs) are skipped; any other non-image member is an error.
    """
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                parts = tuple(p for p in member.name.split("/") if p not in ("", "."))
                if not member.isfile() or parts[-1].startswith("."):
                    continue
                if not parts[-1].lower().endswith(_IMAGE_SUFFIXES):
                    if parts[-1].lower().endswith((".txt", ".md")):
                        log.info("%s: skipping %s", archive, member.name)
                        continue
                    raise EvalSetError(f"{archive}: unexpected member {member.name!r} (not an image)")
                yield parts[1:], tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise EvalSetError(f"{archive}: cannot read the tar file ({error})") from None


def _image_ext(name: str) -> str:
    return "png" if name.lower().endswith(".png") else "jpg"


def _convert_imagenetv2(spec: EvalSetSpec, out: Path, files: dict[str, Path], options) -> dict:
    (archive,) = files.values()

    def samples():
        for parts, data in _stream_images(archive):
            if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) >= len(IMAGENET_WNIDS):
                raise EvalSetError(
                    f"{archive}: {'/'.join(parts)} is not <class 0..999>/<image> below the top folder"
                )
            stem = parts[1].rsplit(".", 1)[0]
            yield {
                "__key__": safe_key(f"{int(parts[0]):03d}_{stem}"),
                _image_ext(parts[1]): data,
                "cls": str(int(parts[0])).encode("ascii"),
            }

    split = write_split(samples(), out / "test", options.shard_size)
    check_count(str(archive), split["num_samples"], options.expected(spec, "test"))
    _write_imagenet_layout(out)
    return {"splits": {"test": split}, "num_classes": len(IMAGENET_WNIDS), "variant": spec.extra["variant"]}


def _convert_imagenet_r(spec: EvalSetSpec, out: Path, files: dict[str, Path], options) -> dict:
    (archive,) = files.values()
    folders: set[str] = set()

    def samples():
        for parts, data in _stream_images(archive):
            if len(parts) != 2 or parts[0] not in IMAGENET_R_WNIDS:
                raise EvalSetError(
                    f"{archive}: {'/'.join(parts)} is not <one of ImageNet-R's 200 WordNet ids>/<image> "
                    "below the top folder"
                )
            folders.add(parts[0])
            stem = parts[1].rsplit(".", 1)[0]
            yield {
                "__key__": safe_key(f"{parts[0]}_{stem}"),
                _image_ext(parts[1]): data,
                "cls": str(WNID_INDEX[parts[0]]).encode("ascii"),
            }

    split = write_split(samples(), out / "test", options.shard_size)
    check_count(str(archive), split["num_samples"], options.expected(spec, "test"))
    if options.check_counts and options.expected_counts is None and len(folders) != len(IMAGENET_R_WNIDS):
        raise EvalSetError(f"{archive}: {len(folders)} class folders, expected {len(IMAGENET_R_WNIDS)}")
    _write_imagenet_layout(out, class_subset=IMAGENET_R_CLASS_INDICES)
    return {
        "splits": {"test": split},
        "num_classes": len(IMAGENET_WNIDS),
        "class_subset": len(IMAGENET_R_CLASS_INDICES),
        "class_folders": len(folders),
    }


# --------------------------------------------------------------------------------------------- registry
SETS: dict[str, EvalSetSpec] = {
    "imagenet1k": spec_from_registry("imagenet1k", _convert_imagenet_val),
    **{
        name: spec_from_registry(name, _convert_imagenetv2, extra={"variant": variant})
        for name, (variant, _, _) in IMAGENETV2_VARIANTS.items()
    },
    "imagenet_r": spec_from_registry("imagenet_r", _convert_imagenet_r),
}
