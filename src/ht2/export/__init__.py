"""Inference export: fold BatchNorms into the convs before them; write ONNX and check it; run
it in ONNX Runtime or OpenVINO."""

from ht2._lazy import lazy_exports

_EXPORTS = {
    "FoldReport": "ht2.export.fold_bn",
    "fold_batchnorms": "ht2.export.fold_bn",
    "fold_into_conv": "ht2.export.fold_bn",
    "OnnxCheck": "ht2.export.onnx_export",
    "check_onnx": "ht2.export.onnx_export",
    "export_onnx": "ht2.export.onnx_export",
    "OpenVinoRunner": "ht2.export.openvino_runtime",
    "OrtRunner": "ht2.export.ort",
    "require_onnx": "ht2.export.ort",
    "require_openvino": "ht2.export.openvino_runtime",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "FoldReport",
    "OnnxCheck",
    "OpenVinoRunner",
    "OrtRunner",
    "check_onnx",
    "export_onnx",
    "fold_batchnorms",
    "fold_into_conv",
    "require_onnx",
    "require_openvino",
]
