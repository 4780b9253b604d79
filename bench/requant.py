"""Re-quantise a GGUF file's Q4_1 weights to another block type (for the knob table in
bench/README.md: the same weights in the quantisations candle has kernels for).

    python bench/requant.py IN.gguf OUT.gguf Q8_0     # or Q4_0, Q4_1, F16, F32

Every Q4_1 tensor is dequantised and quantised again with the `gguf` package (what llama.cpp's
own tools do); metadata and all other tensors are copied unchanged.
"""

import sys

import gguf
import numpy as np


def main() -> None:
    src, dst, target_name = sys.argv[1], sys.argv[2], sys.argv[3]
    target = gguf.GGMLQuantizationType[target_name]
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub_type)
    changed = 0
    for tensor in reader.tensors:
        if tensor.tensor_type == gguf.GGMLQuantizationType.Q4_1:
            weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            if target == gguf.GGMLQuantizationType.F32:
                data, raw = weights.astype(np.float32), None
            elif target == gguf.GGMLQuantizationType.F16:
                data, raw = weights.astype(np.float16), None
            else:
                data, raw = gguf.quants.quantize(weights, target), target
            changed += 1
        else:
            data, raw = tensor.data, tensor.tensor_type
        if raw is None:
            writer.add_tensor(tensor.name, data)
        else:
            writer.add_tensor(tensor.name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"{dst}: {changed} tensors re-quantised from Q4_1 to {target_name}")


if __name__ == "__main__":
    main()
