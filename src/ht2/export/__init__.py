"""Inference export: fold BatchNorms into the convs before them; write ONNX and check it."""

from ht2.export.fold_bn import FoldReport, fold_batchnorms, fold_into_conv
from ht2.export.onnx_export import OnnxCheck, check_onnx, export_onnx
from ht2.export.ort import OrtRunner, require_onnx

__all__ = [
    "FoldReport",
    "OnnxCheck",
    "OrtRunner",
    "check_onnx",
    "export_onnx",
    "fold_batchnorms",
    "fold_into_conv",
    "require_onnx",
]
