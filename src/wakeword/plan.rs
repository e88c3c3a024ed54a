//! Turns a model's operators into the interpreter's steps: checks each
//! operator's operands, shapes and quantization, works out its multipliers,
//! tables and copy plans, and runs the `CALL_ONCE` initialisation subgraph
//! for the variables' start values. Everything that can be wrong with a
//! model file is found here, at load time.

use std::collections::HashMap;

use crate::graph::{MAX_RANK, Step};
use crate::ops::{self, Conv, FullyConnected, Multiplier, Requant, Requantize};
use crate::tflite::{self, Options, Tensor, code, ty};

type Result<T> = std::result::Result<T, String>;

fn arg(list: &[i32], i: usize) -> Result<i32> {
    list.get(i)
        .copied()
        .filter(|&t| t >= 0)
        .ok_or(format!("operand {i} is missing"))
}

pub(crate) struct Builder<'m> {
    model: &'m tflite::Model,
    sg: usize,
    /// Variable ids by shared name.
    names: HashMap<String, usize>,
    /// Variable ids by (subgraph, resource tensor).
    resources: HashMap<(usize, i32), usize>,
    pub(crate) start: Vec<Vec<i8>>,
}

impl<'m> Builder<'m> {
    pub(crate) fn new(model: &'m tflite::Model) -> Builder<'m> {
        Builder {
            model,
            sg: 0,
            names: HashMap::new(),
            resources: HashMap::new(),
            start: Vec::new(),
        }
    }

    pub(crate) fn tensor(&self, t: i32) -> Result<&'m Tensor> {
        let sg = &self.model.subgraphs[self.sg];
        usize::try_from(t)
            .ok()
            .and_then(|t| sg.tensors.get(t))
            .ok_or(format!("tensor {t} does not exist"))
    }

    fn constant(&self, t: i32) -> Result<&'m [u8]> {
        let tensor = self.tensor(t)?;
        self.model
            .buffers
            .get(tensor.buffer)
            .map(|d| &d[..])
            .filter(|d| !d.is_empty())
            .ok_or(format!("tensor {} must be a constant", tensor.name))
    }

    fn ints(&self, t: i32) -> Result<Vec<i32>> {
        if self.tensor(t)?.ty != ty::INT32 {
            return Err(format!("tensor {} must be int32", self.tensor(t)?.name));
        }
        Ok(self
            .constant(t)?
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn var(&self, t: i32) -> Result<usize> {
        self.resources
            .get(&(self.sg, t))
            .copied()
            .ok_or(format!("resource tensor {t} has no VAR_HANDLE before it"))
    }

    pub(crate) fn step(&mut self, op: &tflite::Operator) -> Result<Option<Step>> {
        let input = |i| arg(&op.inputs, i);
        let output = |i| arg(&op.outputs, i);
        let idx = |t: i32| t as usize;
        if op.outputs.iter().any(|o| op.inputs.contains(o)) {
            return Err("an operator that writes one of its own inputs".into());
        }
        Ok(Some(match (op.code, &op.options) {
            (code::CALL_ONCE, Options::CallOnce { init }) => {
                self.init(*init)?;
                return Ok(None);
            }
            (code::VAR_HANDLE, Options::VarHandle { shared_name }) => {
                let next = self.names.len();
                let id = *self.names.entry(shared_name.clone()).or_insert(next);
                if id == self.start.len() {
                    self.start.push(Vec::new());
                }
                self.resources.insert((self.sg, output(0)?), id);
                return Ok(None);
            }
            (code::READ_VARIABLE, _) => {
                let (var, to) = (self.var(input(0)?)?, output(0)?);
                self.check_var(var, to)?;
                Step::Read { var, to: idx(to) }
            }
            (code::ASSIGN_VARIABLE, _) => {
                let (var, from) = (self.var(input(0)?)?, input(1)?);
                self.check_var(var, from)?;
                Step::Assign {
                    var,
                    from: idx(from),
                }
            }
            (code::RESHAPE, _) => {
                let (from, to) = (input(0)?, output(0)?);
                self.same_quant(from, to)?;
                if self.tensor(from)?.len() != self.tensor(to)?.len() {
                    return Err("a reshape that changes the number of values".into());
                }
                Step::Copy {
                    from: idx(from),
                    to: idx(to),
                }
            }
            (code::CONCATENATION, Options::Concat { axis, act }) => {
                if *act != 0 {
                    return Err("a fused activation on a concatenation is not supported".into());
                }
                let whole = output(0)?;
                let (outer, parts) = self.blocks(whole, *axis, &op.inputs)?;
                Step::Concat {
                    parts,
                    outer,
                    whole: idx(whole),
                }
            }
            (code::SPLIT_V, _) => {
                let whole = input(0)?;
                let axis = *self.ints(input(2)?)?.first().ok_or("SPLIT_V has no axis")?;
                let (outer, parts) = self.blocks(whole, axis, &op.outputs)?;
                Step::Split {
                    parts,
                    outer,
                    whole: idx(whole),
                }
            }
            (
                code::STRIDED_SLICE,
                Options::StridedSlice {
                    begin_mask,
                    end_mask,
                    other_masks,
                    offset,
                },
            ) => {
                if self.tensor(input(0)?)?.shape.len() > MAX_RANK {
                    return Err(format!(
                        "slices of more than {MAX_RANK} dimensions are not supported"
                    ));
                }
                if *other_masks != 0 {
                    return Err("ellipsis, new-axis and shrink masks are not supported".into());
                }
                let (from, to) = (input(0)?, output(0)?);
                self.same_quant(from, to)?;
                let shape = &self.tensor(from)?.shape;
                let (begin, end, strides) = (
                    self.ints(input(1)?)?,
                    self.ints(input(2)?)?,
                    self.ints(input(3)?)?,
                );
                let mut dims = Vec::new();
                for (k, &dim) in shape.iter().enumerate() {
                    let dim = dim as i64;
                    let s = *strides
                        .get(k)
                        .ok_or("slice parameters shorter than the input's rank")?
                        as i64;
                    if s == 0 {
                        return Err("a slice stride of 0".into());
                    }
                    let (lo, hi) = if s > 0 { (0, dim) } else { (-1, dim - 1) };
                    let norm = |v: i64| (if v < 0 { v + dim } else { v }).clamp(lo, hi);
                    let b = if begin_mask >> k & 1 == 1 {
                        if s > 0 { 0 } else { dim - 1 }
                    } else {
                        norm(begin[k] as i64)
                    };
                    let e = if end_mask >> k & 1 == 1 {
                        if s > 0 { dim } else { -1 }
                    } else if *offset {
                        norm(begin[k] as i64 + end[k] as i64)
                    } else {
                        norm(end[k] as i64)
                    };
                    let count = if s > 0 {
                        (e - b + s - 1) / s
                    } else {
                        (b - e - s - 1) / -s
                    };
                    dims.push((b, s, count.max(0) as usize));
                }
                let out_len: usize = dims.iter().map(|d| d.2).product();
                if out_len != self.tensor(to)?.len() {
                    return Err("the slice does not give the output's shape".into());
                }
                let mut strides = vec![1usize; shape.len()];
                for k in (0..shape.len().saturating_sub(1)).rev() {
                    strides[k] = strides[k + 1] * shape[k + 1] as usize;
                }
                Step::Slice {
                    from: idx(from),
                    to: idx(to),
                    dims,
                    strides,
                }
            }
            (code::CONV_2D | code::DEPTHWISE_CONV_2D, _) => {
                let (i, f, o) = (input(0)?, input(1)?, output(0)?);
                let conv = self.conv(op, i, f, op.inputs.get(2).copied().filter(|&b| b >= 0), o)?;
                Step::Conv {
                    input: idx(i),
                    filter: idx(f),
                    to: idx(o),
                    op: conv,
                }
            }
            (
                code::FULLY_CONNECTED,
                Options::FullyConnected {
                    act,
                    weights_format,
                },
            ) => {
                if *weights_format != 0 {
                    return Err("shuffled weights are not supported".into());
                }
                let (i, f, o) = (input(0)?, input(1)?, output(0)?);
                let fc = self.fully_connected(
                    i,
                    f,
                    op.inputs.get(2).copied().filter(|&b| b >= 0),
                    o,
                    *act,
                )?;
                Step::FullyConnected {
                    input: idx(i),
                    filter: idx(f),
                    to: idx(o),
                    op: fc,
                }
            }
            (code::LOGISTIC, _) => {
                let (from, to) = (input(0)?, output(0)?);
                let (it, ot) = (self.quant8(from)?, self.quant8(to)?);
                Step::Table {
                    from: idx(from),
                    to: idx(to),
                    table: ops::logistic_table(it, ot),
                }
            }
            (code::QUANTIZE, _) => {
                let (from, to) = (input(0)?, output(0)?);
                let (it, ot) = (self.quant8(from)?, self.quant8(to)?);
                let multiplier = Multiplier::new(it.0 as f64 / ot.0 as f64);
                Step::Requantize {
                    from: idx(from),
                    to: idx(to),
                    op: Requantize {
                        input: (it.1, it.2),
                        output: (ot.1, ot.2),
                        multiplier,
                    },
                }
            }
            (c, _) => {
                return Err(format!(
                    "builtin operator {c} is not supported by this engine"
                ));
            }
        }))
    }

    /// Runs the initialisation subgraph: it may only bind and assign
    /// constant start values to variables.
    fn init(&mut self, sg: usize) -> Result<()> {
        let graph = self.model.subgraphs.get(sg).ok_or(format!(
            "CALL_ONCE names subgraph {sg}, which does not exist"
        ))?;
        let outer = std::mem::replace(&mut self.sg, sg);
        for op in &graph.operators {
            match op.code {
                code::VAR_HANDLE => {
                    self.step(op)?;
                }
                code::ASSIGN_VARIABLE => {
                    let var = self.var(arg(&op.inputs, 0)?)?;
                    let value = arg(&op.inputs, 1)?;
                    self.quant8(value)?;
                    self.start[var] = self.constant(value)?.iter().map(|&b| b as i8).collect();
                }
                c => {
                    return Err(format!(
                        "the initialisation subgraph has operator {c}; only variable assignments are supported"
                    ));
                }
            }
        }
        self.sg = outer;
        Ok(())
    }

    fn check_var(&self, var: usize, t: i32) -> Result<()> {
        let len = self.tensor(t)?.len();
        match self.start[var].len() {
            0 => Err(format!(
                "variable {var} is used but never given a start value"
            )),
            n if n == len => Ok(()),
            n => Err(format!(
                "variable {var} holds {n} values but tensor {} has {len}",
                self.tensor(t)?.name
            )),
        }
    }

    /// Scale, zero point and signedness of an 8-bit tensor.
    fn quant8(&self, t: i32) -> Result<(f32, i32, bool)> {
        let tensor = self.tensor(t)?;
        if !matches!(tensor.ty, ty::INT8 | ty::UINT8) || tensor.scales.is_empty() {
            return Err(format!("tensor {} must be 8-bit quantized", tensor.name));
        }
        let (scale, zp) = tensor.quant();
        Ok((scale, zp, tensor.ty == ty::UINT8))
    }

    fn same_quant(&self, a: i32, b: i32) -> Result<()> {
        if self.quant8(a)? != self.quant8(b)? {
            return Err("input and output quantization differ".into());
        }
        Ok(())
    }

    /// Blocks for a concatenation or split along `axis` of `whole` into `parts`.
    fn blocks(&self, whole: i32, axis: i32, parts: &[i32]) -> Result<(usize, Vec<(usize, usize)>)> {
        let shape = &self.tensor(whole)?.shape;
        let rank = shape.len() as i32;
        let axis = if axis < 0 { axis + rank } else { axis };
        if !(0..rank).contains(&axis) {
            return Err(format!("axis {axis} is outside rank {rank}"));
        }
        let outer: usize = shape[..axis as usize].iter().map(|&d| d as usize).product();
        let mut list = Vec::new();
        let mut total = 0;
        for &p in parts {
            self.same_quant(p, whole)?;
            let t = self.tensor(p)?;
            let chunk = t.len() / outer.max(1);
            total += chunk;
            list.push((p as usize, chunk));
        }
        if total * outer != self.tensor(whole)?.len() {
            return Err("the parts do not add up to the whole".into());
        }
        Ok((outer, list))
    }

    fn bias(&self, bias: Option<i32>, n: usize) -> Result<Vec<i32>> {
        let Some(b) = bias else { return Ok(vec![0; n]) };
        let v = self.ints(b)?;
        if v.len() != n {
            return Err(format!("bias has {} values for {n} channels", v.len()));
        }
        Ok(v)
    }

    /// The requantization scales in single precision, as XNNPACK works them
    /// out.
    fn scales(&self, input: f32, filter: &Tensor, output: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|c| {
                let fs = filter
                    .scales
                    .get(c)
                    .or(filter.scales.first())
                    .copied()
                    .unwrap_or(0.0);
                input * fs / output
            })
            .collect()
    }

    /// The requantization multipliers, in double precision as TFLite
    /// works them out.
    fn multipliers(&self, input: f32, filter: &Tensor, output: f32, n: usize) -> Vec<Multiplier> {
        (0..n)
            .map(|c| {
                let fs = filter
                    .scales
                    .get(c)
                    .or(filter.scales.first())
                    .copied()
                    .unwrap_or(0.0);
                Multiplier::new(input as f64 * fs as f64 / output as f64)
            })
            .collect()
    }

    fn conv(
        &self,
        op: &tflite::Operator,
        i: i32,
        f: i32,
        bias: Option<i32>,
        o: i32,
    ) -> Result<Conv> {
        let dims = |t: i32| -> Result<[usize; 4]> {
            let s = &self.tensor(t)?.shape;
            match s[..] {
                [a, b, c, d] => Ok([a as usize, b as usize, c as usize, d as usize]),
                _ => Err(format!("tensor {} must be 4-D", self.tensor(t)?.name)),
            }
        };
        let (input, filter, output) = (dims(i)?, dims(f)?, dims(o)?);
        let (padding, stride, dilation, act, depthwise) = match &op.options {
            Options::Conv {
                padding,
                stride,
                act,
                dilation,
            } => (*padding, *stride, *dilation, *act, None),
            Options::Depthwise {
                padding,
                stride,
                multiplier,
                act,
                dilation,
            } => (
                *padding,
                *stride,
                *dilation,
                *act,
                Some((*multiplier).max(1) as usize),
            ),
            _ => return Err("convolution options missing".into()),
        };
        if stride.iter().chain(&dilation).any(|&v| v < 1) {
            return Err("strides and dilations must be at least 1".into());
        }
        let (stride, dilation) = (
            [stride[0] as usize, stride[1] as usize],
            [dilation[0] as usize, dilation[1] as usize],
        );
        let kernel = [filter[1], filter[2]];
        let mut pad = [0; 2];
        for k in 0..2 {
            let eff = (kernel[k] - 1) * dilation[k] + 1;
            let size = input[k + 1];
            let out = if padding == 0 {
                size.div_ceil(stride[k])
            } else {
                (size + stride[k]).saturating_sub(eff) / stride[k]
            };
            if out != output[k + 1] {
                return Err(format!(
                    "output size {} where the convolution gives {out}",
                    output[k + 1]
                ));
            }
            pad[k] = ((out.saturating_sub(1)) * stride[k] + eff).saturating_sub(size) / 2;
        }
        let channels_ok = match depthwise {
            Some(m) => filter[0] == 1 && filter[3] == output[3] && input[3] * m == output[3],
            None => filter[0] == output[3] && filter[3] == input[3],
        };
        if !channels_ok || input[0] != output[0] {
            return Err("filter, input and output channels do not fit together".into());
        }
        let (is, izp, _) = self.quant8(i)?;
        let (os, ozp, ounsigned) = self.quant8(o)?;
        let ft = self.tensor(f)?;
        if ft.ty != ty::INT8
            || self.tensor(i)?.ty != ty::INT8
            || ounsigned
            || ft.zero_points.iter().any(|&z| z != 0)
        {
            return Err("convolutions must be int8 with symmetric filters".into());
        }
        self.constant(f)?;
        let (lo, hi) = ops::type_range(false);
        Ok(Conv {
            input,
            output,
            kernel,
            stride,
            dilation,
            padding: pad,
            depthwise,
            input_offset: -izp,
            output_offset: ozp,
            requant: if depthwise.is_some() {
                Requant::Float(self.scales(is, ft, os, output[3]))
            } else {
                Requant::Fixed(self.multipliers(is, ft, os, output[3]))
            },
            bias: self.bias(bias, output[3])?,
            range: ops::activation_range(act, os, ozp, lo, hi)
                .ok_or(format!("fused activation {act} is not supported"))?,
        })
    }

    fn fully_connected(
        &self,
        i: i32,
        f: i32,
        bias: Option<i32>,
        o: i32,
        act: u8,
    ) -> Result<FullyConnected> {
        let ft = self.tensor(f)?;
        let [units, depth] = ft.shape[..] else {
            return Err("the weights must be 2-D".into());
        };
        let (units, depth) = (units as usize, depth as usize);
        let input_len = self.tensor(i)?.len();
        if depth == 0
            || input_len % depth != 0
            || self.tensor(o)?.len() != input_len / depth * units
        {
            return Err("input, weights and output sizes do not fit together".into());
        }
        let (is, izp, iu) = self.quant8(i)?;
        let (os, ozp, ou) = self.quant8(o)?;
        if iu || ou || ft.ty != ty::INT8 {
            return Err("fully connected layers must be int8".into());
        }
        self.constant(f)?;
        let (lo, hi) = ops::type_range(false);
        Ok(FullyConnected {
            batches: input_len / depth,
            depth,
            units,
            input_offset: -izp,
            filter_offset: -(ft.quant().1),
            output_offset: ozp,
            requant: Requant::Fixed(self.multipliers(
                is,
                ft,
                os,
                if ft.scales.len() == units { units } else { 1 },
            )),
            bias: self.bias(bias, units)?,
            range: ops::activation_range(act, os, ozp, lo, hi)
                .ok_or(format!("fused activation {act} is not supported"))?,
        })
    }
}
