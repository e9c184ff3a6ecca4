"""Entry point of mtlkit-face: light on purpose, it only names where the classes live."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtlkit.hookspecs import hookimpl

if TYPE_CHECKING:
    from mtlkit.registry import Registry


@hookimpl
def register_tasks(registry: Registry) -> None:
    registry.add(
        "face_identity",
        "mtlkit_face.tasks.identity:FaceIdentityTask",
        summary="identity classification + L2 embedding for verification",
    )
    registry.add(
        "expression",
        "mtlkit_face.tasks.expression:ExpressionTask",
        summary="facial-expression classification",
    )
    registry.add(
        "binary_attribute",
        "mtlkit_face.tasks.attribute:BinaryAttributeTask",
        summary="one binary face attribute (CelebA-style), target attr_<name>",
    )


@hookimpl
def register_datasets(registry: Registry) -> None:
    registry.add(
        "ck48",
        "mtlkit_face.data.ck48:CK48Data",
        summary="CK+48 folder layout <expression>/S<subj>_<seq>_<frame>.png",
    )
    registry.add(
        "manifest",
        "mtlkit_face.data.manifest:ManifestData",
        summary="CSV manifest path,subject,expression[,sequence][,attr_<name>...]",
    )
    registry.add(
        "image_folder",
        "mtlkit_face.data.folder:ImageFolderData",
        summary="one folder per person (or per expression) of face images",
    )
    registry.add(
        "webdataset",
        "mtlkit_face.data.shards:FaceShardsData",
        summary="WebDataset shards of a face dataset ('mtlkit data shard'), re-split by protocol",
    )
    registry.add(
        "synthetic_faces",
        "mtlkit_face.data.synthetic:SyntheticFacesData",
        summary="deterministic drawn faces (identity x expression)",
    )
    registry.add(
        "synthetic_attributes",
        "mtlkit_face.data.synthetic_attributes:SyntheticAttributesData",
        summary="drawn faces with up to 40 binary attributes (a CelebA stand-in)",
    )
