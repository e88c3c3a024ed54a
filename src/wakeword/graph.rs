//! A streaming int8 interpreter for the operators microWakeWord models use.
//! Loading checks every operator and turns it into a step with its
//! multipliers and shapes worked out, so an inference only runs the steps
//! over buffers made once: no allocation. The streaming state lives in
//! resource variables (the models' `VAR_HANDLE`/`READ_VARIABLE`/
//! `ASSIGN_VARIABLE`), set to their start values by the `CALL_ONCE`
//! initialisation subgraph.

use std::collections::HashMap;

use crate::ops::{self, Conv, FullyConnected, Multiplier, Requant, Requantize};
use crate::tflite::{self, Options, Tensor, code, ty};

/// The most values all tensors together may hold: the microWakeWord models
/// have a few tens of thousands; a damaged shape must not allocate gigabytes.
const MAX_ELEMENTS: usize = 1 << 22;

/// The most dimensions a sliced tensor may have.
const MAX_RANK: usize = 6;

enum Step {
    Copy {
        from: usize,
        to: usize,
    },
    Read {
        var: usize,
        to: usize,
    },
    Assign {
        var: usize,
        from: usize,
    },
    /// Concatenation (or split): for each of `outer` blocks, consecutive
    /// chunks move between the one side and the many.
    Concat {
        parts: Vec<(usize, usize)>,
        outer: usize,
        whole: usize,
    },
    Split {
        parts: Vec<(usize, usize)>,
        outer: usize,
        whole: usize,
    },
    Slice {
        from: usize,
        to: usize,
        dims: Vec<(i64, i64, usize)>,
        strides: Vec<usize>,
    },
    Conv {
        input: usize,
        filter: usize,
        to: usize,
        op: Conv,
    },
    FullyConnected {
        input: usize,
        filter: usize,
        to: usize,
        op: FullyConnected,
    },
    Table {
        from: usize,
        to: usize,
        table: Box<[u8; 256]>,
    },
    Requantize {
        from: usize,
        to: usize,
        op: Requantize,
    },
}

/// A loaded model, ready to run one inference at a time.
pub struct Graph {
    data: Vec<Vec<i8>>,
    vars: Vec<Vec<i8>>,
    start: Vec<Vec<i8>>,
    steps: Vec<Step>,
    input: usize,
    output: usize,
    input_shape: Vec<usize>,
    input_quant: (f32, i32),
    output_quant: (f32, i32, bool),
}

type Result<T> = std::result::Result<T, String>;

impl Graph {
    /// Builds the interpreter for a `.tflite` file's bytes; errors say what
    /// in the file is wrong or not supported.
    pub fn load(bytes: &[u8]) -> Result<Graph> {
        let model = tflite::parse(bytes)?;
        let main = model.subgraphs.first().ok_or("it has no subgraphs")?;
        let [input] = main.inputs[..] else {
            return Err("the model must have exactly one input".into());
        };
        let [output] = main.outputs[..] else {
            return Err("the model must have exactly one output".into());
        };
        let mut b = Builder {
            model: &model,
            sg: 0,
            names: HashMap::new(),
            resources: HashMap::new(),
            start: Vec::new(),
        };
        let mut data = Vec::new();
        let mut total = 0usize;
        for t in &main.tensors {
            let c = model.buffers.get(t.buffer).filter(|d| !d.is_empty());
            let n = t.len();
            total = total.saturating_add(n);
            if total > MAX_ELEMENTS {
                return Err(format!(
                    "tensor {} makes the model larger than {MAX_ELEMENTS} values",
                    t.name
                ));
            }
            if let Some(d) = c {
                let width = if t.ty == ty::INT32 { 4 } else { 1 };
                if d.len() != n.saturating_mul(width) {
                    return Err(format!(
                        "tensor {} has {} bytes of data for {n} values",
                        t.name,
                        d.len()
                    ));
                }
            }
            data.push(match (c, t.ty) {
                (Some(d), ty::INT8 | ty::UINT8) => d.iter().map(|&x| x as i8).collect(),
                (None, ty::INT8 | ty::UINT8) => vec![0; n],
                _ => Vec::new(),
            });
        }
        let mut steps = Vec::new();
        for (i, op) in main.operators.iter().enumerate() {
            let name = |t: &[i32]| {
                t.first()
                    .and_then(|&t| main.tensors.get(t as usize))
                    .map_or("", |t| &t.name)
            };
            let step = b
                .step(op)
                .map_err(|e| format!("operator {i} ({}): {e}", name(&op.outputs)))?;
            steps.extend(step);
        }
        let input = input as usize;
        let output = output as usize;
        let it = b.tensor(input as i32)?;
        let ot = b.tensor(output as i32)?;
        if it.ty != ty::INT8 || !matches!(ot.ty, ty::INT8 | ty::UINT8) || ot.len() == 0 {
            return Err("the model's input must be int8 and its output int8 or uint8".into());
        }
        let vars = b.start.clone();
        Ok(Graph {
            data,
            start: b.start,
            vars,
            steps,
            input,
            output,
            input_shape: it.shape.iter().map(|&d| d.max(0) as usize).collect(),
            input_quant: it.quant(),
            output_quant: (ot.quant().0, ot.quant().1, ot.ty == ty::UINT8),
        })
    }

    /// The input's shape (for microWakeWord: 1, frames per call, features).
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The input's scale and zero point.
    pub fn input_quant(&self) -> (f32, i32) {
        self.input_quant
    }

    /// The current values of tensor `index` of the main subgraph (empty for
    /// constants other than 8-bit ones): for comparing with another runtime.
    pub fn tensor(&self, index: usize) -> &[i8] {
        self.data.get(index).map_or(&[], |d| &d[..])
    }

    /// The input buffer to fill before [`Graph::invoke`].
    pub fn input_mut(&mut self) -> &mut [i8] {
        &mut self.data[self.input]
    }

    /// Puts the streaming state back to its start values.
    pub fn reset(&mut self) {
        for (v, s) in self.vars.iter_mut().zip(&self.start) {
            v.copy_from_slice(s);
        }
    }

    /// Runs the model once and returns its (first) output, dequantized.
    pub fn invoke(&mut self) -> f32 {
        for step in &self.steps {
            run(step, &mut self.data, &mut self.vars);
        }
        let (scale, zp, unsigned) = self.output_quant;
        let raw = self.data[self.output][0];
        let q = if unsigned {
            raw as u8 as i32
        } else {
            raw as i32
        };
        (q - zp) as f32 * scale
    }
}

/// A step's work: read the other tensors, write its output.
type Kernel<'a> = dyn Fn(&[Vec<i8>], &mut [i8]) + 'a;

fn run(step: &Step, data: &mut [Vec<i8>], vars: &mut [Vec<i8>]) {
    // Each step writes one tensor that none of its inputs is: take it out
    // while reading the others, then put it back (no copy, no allocation).
    let with_out = |data: &mut [Vec<i8>], to: usize, f: &Kernel<'_>| {
        let mut out = std::mem::take(&mut data[to]);
        f(data, &mut out);
        data[to] = out;
    };
    match step {
        Step::Copy { from, to } => with_out(data, *to, &|d, o| o.copy_from_slice(&d[*from])),
        Step::Read { var, to } => data[*to].copy_from_slice(&vars[*var]),
        Step::Assign { var, from } => vars[*var].copy_from_slice(&data[*from]),
        Step::Concat {
            parts,
            outer,
            whole,
        } => with_out(data, *whole, &|d, o| {
            let mut at = 0;
            for block in 0..*outer {
                for &(t, chunk) in parts {
                    o[at..at + chunk].copy_from_slice(&d[t][block * chunk..][..chunk]);
                    at += chunk;
                }
            }
        }),
        Step::Split {
            parts,
            outer,
            whole,
        } => {
            let mut at = 0;
            for block in 0..*outer {
                for &(t, chunk) in parts {
                    let (src, dst) = two(data, *whole, t);
                    dst[block * chunk..][..chunk].copy_from_slice(&src[at..at + chunk]);
                    at += chunk;
                }
            }
        }
        Step::Slice {
            from,
            to,
            dims,
            strides,
        } => with_out(data, *to, &|d, o| {
            let src = &d[*from];
            let mut idx = [0usize; MAX_RANK];
            for out in o.iter_mut() {
                let mut at = 0i64;
                for (k, &(start, stride, _)) in dims.iter().enumerate() {
                    at += (start + stride * idx[k] as i64) * strides[k] as i64;
                }
                *out = src[at as usize];
                for k in (0..dims.len()).rev() {
                    idx[k] += 1;
                    if idx[k] < dims[k].2 {
                        break;
                    }
                    idx[k] = 0;
                }
            }
        }),
        Step::Conv {
            input,
            filter,
            to,
            op,
        } => with_out(data, *to, &|d, o| op.run(&d[*input], &d[*filter], o)),
        Step::FullyConnected {
            input,
            filter,
            to,
            op,
        } => with_out(data, *to, &|d, o| op.run(&d[*input], &d[*filter], o)),
        Step::Table { from, to, table } => with_out(data, *to, &|d, o| {
            for (o, &x) in o.iter_mut().zip(&d[*from]) {
                *o = table[x as u8 as usize] as i8;
            }
        }),
        Step::Requantize { from, to, op } => with_out(data, *to, &|d, o| op.run(&d[*from], o)),
    }
}

/// Two distinct tensors, one to read and one to write.
fn two(data: &mut [Vec<i8>], read: usize, write: usize) -> (&[i8], &mut [i8]) {
    if read < write {
        let (a, b) = data.split_at_mut(write);
        (&a[read], &mut b[0])
    } else {
        let (a, b) = data.split_at_mut(read);
        (&b[0], &mut a[write])
    }
}

fn arg(list: &[i32], i: usize) -> Result<i32> {
    list.get(i)
        .copied()
        .filter(|&t| t >= 0)
        .ok_or(format!("operand {i} is missing"))
}

struct Builder<'m> {
    model: &'m tflite::Model,
    sg: usize,
    /// Variable ids by shared name.
    names: HashMap<String, usize>,
    /// Variable ids by (subgraph, resource tensor).
    resources: HashMap<(usize, i32), usize>,
    start: Vec<Vec<i8>>,
}

impl<'m> Builder<'m> {
    fn tensor(&self, t: i32) -> Result<&'m Tensor> {
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

    fn step(&mut self, op: &tflite::Operator) -> Result<Option<Step>> {
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
