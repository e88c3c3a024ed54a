//! Reads a `.tflite` file (the TensorFlow Lite FlatBuffers schema) into
//! plain structs: tensors, operators with their options, buffers. Only the
//! fields the microWakeWord models use are read; field numbers follow the
//! schema (`tensorflow/lite/schema/schema.fbs`).

use crate::flatbuf::{Result, Table};

/// Builtin operator codes (schema enum `BuiltinOperator`).
pub(crate) mod code {
    pub const CONCATENATION: i32 = 2;
    pub const CONV_2D: i32 = 3;
    pub const DEPTHWISE_CONV_2D: i32 = 4;
    pub const FULLY_CONNECTED: i32 = 9;
    pub const LOGISTIC: i32 = 14;
    pub const RESHAPE: i32 = 22;
    pub const STRIDED_SLICE: i32 = 45;
    pub const SPLIT_V: i32 = 102;
    pub const QUANTIZE: i32 = 114;
    pub const CALL_ONCE: i32 = 129;
    pub const VAR_HANDLE: i32 = 142;
    pub const READ_VARIABLE: i32 = 143;
    pub const ASSIGN_VARIABLE: i32 = 144;
}

/// Tensor element types (schema enum `TensorType`).
pub(crate) mod ty {
    pub const INT32: u8 = 2;
    pub const UINT8: u8 = 3;
    pub const INT8: u8 = 9;
}

pub(crate) struct Tensor {
    pub(crate) name: String,
    pub(crate) shape: Vec<i32>,
    pub(crate) ty: u8,
    pub(crate) buffer: usize,
    pub(crate) scales: Vec<f32>,
    pub(crate) zero_points: Vec<i64>,
}

impl Tensor {
    /// Number of elements (saturating: absurd shapes are refused later).
    pub(crate) fn len(&self) -> usize {
        self.shape
            .iter()
            .fold(1usize, |n, &d| n.saturating_mul(d.max(0) as usize))
    }

    /// The per-tensor scale and zero point (the first, if per channel).
    pub(crate) fn quant(&self) -> (f32, i32) {
        (
            self.scales.first().copied().unwrap_or(0.0),
            self.zero_points.first().copied().unwrap_or(0) as i32,
        )
    }
}

/// The operator options the engine reads, by operator.
#[derive(Clone, Debug)]
pub(crate) enum Options {
    None,
    Conv {
        padding: u8,
        stride: [i32; 2],
        act: u8,
        dilation: [i32; 2],
    },
    Depthwise {
        padding: u8,
        stride: [i32; 2],
        multiplier: i32,
        act: u8,
        dilation: [i32; 2],
    },
    FullyConnected {
        act: u8,
        weights_format: u8,
    },
    Concat {
        axis: i32,
        act: u8,
    },
    StridedSlice {
        begin_mask: i32,
        end_mask: i32,
        other_masks: i32,
        offset: bool,
    },
    VarHandle {
        shared_name: String,
    },
    CallOnce {
        init: usize,
    },
}

pub(crate) struct Operator {
    pub(crate) code: i32,
    pub(crate) inputs: Vec<i32>,
    pub(crate) outputs: Vec<i32>,
    pub(crate) options: Options,
}

pub(crate) struct Subgraph {
    pub(crate) tensors: Vec<Tensor>,
    pub(crate) inputs: Vec<i32>,
    pub(crate) outputs: Vec<i32>,
    pub(crate) operators: Vec<Operator>,
}

pub(crate) struct Model {
    pub(crate) subgraphs: Vec<Subgraph>,
    pub(crate) buffers: Vec<Vec<u8>>,
}

fn ints(t: &Table<'_>, index: usize) -> Result<Vec<i32>> {
    Ok(t.vector(index, 4)?.map(|v| v.i32s()).unwrap_or_default())
}

/// Parses a whole model; errors say what is malformed.
pub(crate) fn parse(buf: &[u8]) -> Result<Model> {
    if buf.get(4..8) != Some(b"TFL3") {
        return Err("it has no TFL3 identifier: not a TensorFlow Lite model".into());
    }
    let root = Table::root(buf)?;
    let mut codes = Vec::new();
    if let Some(v) = root.vector(1, 4)? {
        for i in 0..v.len() {
            let c = v.table(i)?;
            if c.string(1)?.is_some() {
                return Err(format!("operator code {i} is a custom operator"));
            }
            // Old files keep the code in a byte field, new ones in an int.
            codes.push((c.u8(0, 0)? as i8 as i32).max(c.i32(3, 0)?));
        }
    }
    let mut buffers = Vec::new();
    if let Some(v) = root.vector(4, 4)? {
        for i in 0..v.len() {
            let b = v.table(i)?;
            if b.u64(1, 0)? != 0 {
                return Err(format!(
                    "buffer {i} lies outside the flatbuffer (offset form), which is not read"
                ));
            }
            buffers.push(
                b.vector(0, 1)?
                    .map(|d| d.bytes().to_vec())
                    .unwrap_or_default(),
            );
        }
    }
    let graphs = root.vector(2, 4)?.ok_or("it has no subgraphs")?;
    let mut subgraphs = Vec::new();
    for g in 0..graphs.len() {
        let sg = graphs.table(g)?;
        let mut tensors = Vec::new();
        if let Some(v) = sg.vector(0, 4)? {
            for i in 0..v.len() {
                tensors.push(
                    tensor(&v.table(i)?, buffers.len()).map_err(|e| format!("tensor {i}: {e}"))?,
                );
            }
        }
        let mut operators = Vec::new();
        if let Some(v) = sg.vector(3, 4)? {
            for i in 0..v.len() {
                let op = v.table(i)?;
                let index = op.u32(0, 0)? as usize;
                let code = *codes
                    .get(index)
                    .ok_or(format!("operator {i} has unknown code {index}"))?;
                let options = options(code, &op).map_err(|e| format!("operator {i}: {e}"))?;
                operators.push(Operator {
                    code,
                    inputs: ints(&op, 1)?,
                    outputs: ints(&op, 2)?,
                    options,
                });
            }
        }
        subgraphs.push(Subgraph {
            tensors,
            inputs: ints(&sg, 1)?,
            outputs: ints(&sg, 2)?,
            operators,
        });
    }
    Ok(Model { subgraphs, buffers })
}

fn tensor(t: &Table<'_>, buffers: usize) -> Result<Tensor> {
    let buffer = t.u32(2, 0)? as usize;
    if buffer >= buffers.max(1) {
        return Err(format!("buffer {buffer} does not exist"));
    }
    let (mut scales, mut zero_points) = (Vec::new(), Vec::new());
    if let Some(q) = t.table(4)? {
        scales = q.vector(2, 4)?.map(|v| v.f32s()).unwrap_or_default();
        zero_points = q.vector(3, 8)?.map(|v| v.i64s()).unwrap_or_default();
    }
    Ok(Tensor {
        name: t.string(3)?.unwrap_or("").to_string(),
        shape: ints(t, 0)?,
        ty: t.u8(1, 0)?,
        buffer,
        scales,
        zero_points,
    })
}

fn options(code: i32, op: &Table<'_>) -> Result<Options> {
    let Some(o) = op.table(4)? else {
        return Ok(match code {
            code::FULLY_CONNECTED => Options::FullyConnected {
                act: 0,
                weights_format: 0,
            },
            _ => Options::None,
        });
    };
    Ok(match code {
        code::CONV_2D => Options::Conv {
            padding: o.u8(0, 0)?,
            stride: [o.i32(2, 0)?, o.i32(1, 0)?],
            act: o.u8(3, 0)?,
            dilation: [o.i32(5, 1)?, o.i32(4, 1)?],
        },
        code::DEPTHWISE_CONV_2D => Options::Depthwise {
            padding: o.u8(0, 0)?,
            stride: [o.i32(2, 0)?, o.i32(1, 0)?],
            multiplier: o.i32(3, 0)?,
            act: o.u8(4, 0)?,
            dilation: [o.i32(6, 1)?, o.i32(5, 1)?],
        },
        code::FULLY_CONNECTED => Options::FullyConnected {
            act: o.u8(0, 0)?,
            weights_format: o.u8(1, 0)?,
        },
        code::CONCATENATION => Options::Concat {
            axis: o.i32(0, 0)?,
            act: o.u8(1, 0)?,
        },
        code::STRIDED_SLICE => Options::StridedSlice {
            begin_mask: o.i32(0, 0)?,
            end_mask: o.i32(1, 0)?,
            other_masks: o.i32(2, 0)? | o.i32(3, 0)? | o.i32(4, 0)?,
            offset: o.u8(5, 0)? != 0,
        },
        code::VAR_HANDLE => Options::VarHandle {
            shared_name: o.string(1)?.unwrap_or("").to_string(),
        },
        code::CALL_ONCE => Options::CallOnce {
            init: o.i32(0, 0)?.max(0) as usize,
        },
        _ => Options::None,
    })
}
